"""Interop client for sluice, with Eclipse Paho for Python (Debian's
python3-paho-mqtt, 1.6). Run by internal/interop's tests:

    paho_client.py HOST PORT VERSION USER PASSWORD CAFILE RUN

VERSION is 3 (MQTT 3.1.1) or 5; CAFILE is empty for plain TCP. It connects,
subscribes to alerts/RUN/#, publishes a hot reading at QoS 0, 1 and 2 to
plant/RUN/q<QoS>/telemetry, and prints each alert as "ALERT <topic> <payload>"
until it has three. It exits non-zero on any failure.
"""
import sys
import threading

import paho.mqtt.client as mqtt

host, port, version, user, password, cafile, run = sys.argv[1:8]
TIMEOUT = 60

proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
client = mqtt.Client(client_id="paho-py-" + run, protocol=proto)
client.username_pw_set(user, password)
if cafile:
    client.tls_set(ca_certs=cafile)

connected = threading.Event()
subscribed = threading.Event()
done = threading.Event()
state = {"rc": None, "granted": None, "alerts": []}
lock = threading.Lock()


def code(rc):
    return getattr(rc, "value", rc)


def on_connect(c, userdata, flags, rc, properties=None):
    state["rc"] = code(rc)
    connected.set()


def on_subscribe(c, userdata, mid, granted, properties=None):
    state["granted"] = [code(g) for g in granted]
    subscribed.set()


def on_message(c, userdata, msg):
    with lock:
        state["alerts"].append(msg)
        print("ALERT %s %s" % (msg.topic, msg.payload.decode()), flush=True)
        if len(state["alerts"]) >= 3:
            done.set()


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(host, int(port), keepalive=30)
client.loop_start()
try:
    if not connected.wait(TIMEOUT) or state["rc"] != 0:
        sys.exit("connect: %r" % (state["rc"],))
    client.subscribe("alerts/%s/#" % run, qos=1)
    if not subscribed.wait(TIMEOUT) or state["granted"][0] >= 0x80:
        sys.exit("subscribe: %r" % (state["granted"],))
    for qos in (0, 1, 2):
        info = client.publish("plant/%s/q%d/telemetry" % (run, qos), '{"temperature": 95}', qos=qos)
        info.wait_for_publish(TIMEOUT)
        if not info.is_published():
            sys.exit("publish at QoS %d: not acknowledged" % qos)
    if not done.wait(TIMEOUT):
        sys.exit("alerts: %d of 3 within %ds" % (len(state["alerts"]), TIMEOUT))
finally:
    client.disconnect()
    client.loop_stop()

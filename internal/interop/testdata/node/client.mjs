// Interop client for sluice, with MQTT.js (the npm "mqtt" package). Run by
// internal/interop's tests:
//
//   node client.mjs HOST PORT VERSION USER PASSWORD CAFILE RUN
//
// VERSION is 3 (MQTT 3.1.1) or 5; CAFILE is empty for plain TCP. It connects,
// subscribes to alerts/RUN/#, publishes a hot reading at QoS 0, 1 and 2 to
// plant/RUN/q<QoS>/telemetry, and prints each alert as "ALERT <topic>
// <payload>" until it has three. It exits non-zero on any failure.
import fs from 'node:fs';
import mqtt from 'mqtt';

const [host, port, version, username, password, cafile, run] = process.argv.slice(2);
const timeout = setTimeout(() => fail(`alerts: ${alerts} of 3 within 60s`), 60000);
let alerts = 0;

function fail(why) {
  console.error(why);
  process.exit(1);
}

const opts = {
  protocolVersion: version === '5' ? 5 : 4,
  clientId: `mqttjs-${run}`,
  username,
  password,
  reconnectPeriod: 0,
  connectTimeout: 30000,
  keepalive: 30,
};
if (cafile) opts.ca = fs.readFileSync(cafile);
const client = mqtt.connect(`${cafile ? 'mqtts' : 'mqtt'}://${host}:${port}`, opts);
client.on('error', (err) => fail(`error: ${err.message}`));
client.on('message', (topic, payload) => {
  console.log(`ALERT ${topic} ${payload.toString()}`);
  if (++alerts >= 3) {
    clearTimeout(timeout);
    client.end(false, {}, () => process.exit(0));
  }
});
client.once('connect', async () => {
  try {
    const granted = await client.subscribeAsync(`alerts/${run}/#`, { qos: 1 });
    if (granted.length !== 1 || granted[0].qos >= 128) fail(`subscribe: ${JSON.stringify(granted)}`);
    for (const qos of [0, 1, 2]) {
      await client.publishAsync(`plant/${run}/q${qos}/telemetry`, '{"temperature": 95}', { qos });
    }
  } catch (err) {
    fail(`${err.message}`);
  }
});

/*
 * Interop client for sluice, with Eclipse Paho C (Debian's libpaho-mqtt-dev,
 * the synchronous MQTTClient API, built with OpenSSL). Compiled and run by
 * internal/interop's tests:
 *
 *   cc -o paho_client paho_client.c -lpaho-mqtt3cs
 *   paho_client HOST PORT VERSION USER PASSWORD CAFILE RUN
 *
 * VERSION is 3 (MQTT 3.1.1) or 5; CAFILE is empty for plain TCP. It connects,
 * subscribes to alerts/RUN/#, publishes a hot reading at QoS 0, 1 and 2 to
 * plant/RUN/q<QoS>/telemetry, and prints each alert as "ALERT <topic>
 * <payload>" until it has three. It exits non-zero on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "MQTTClient.h"

static volatile int alerts;

static int arrived(void *ctx, char *topic, int topicLen, MQTTClient_message *m) {
	(void)ctx;
	(void)topicLen;
	printf("ALERT %s %.*s\n", topic, m->payloadlen, (char *)m->payload);
	fflush(stdout);
	alerts++;
	MQTTClient_freeMessage(&m);
	MQTTClient_free(topic);
	return 1;
}

static void lost(void *ctx, char *cause) {
	(void)ctx;
	fprintf(stderr, "connection lost: %s\n", cause ? cause : "?");
	exit(1);
}

int main(int argc, char **argv) {
	if (argc != 8) {
		fprintf(stderr, "usage: %s HOST PORT VERSION USER PASSWORD CAFILE RUN\n", argv[0]);
		return 2;
	}
	const char *host = argv[1], *port = argv[2], *user = argv[4], *password = argv[5], *cafile = argv[6], *run = argv[7];
	int v5 = strcmp(argv[3], "5") == 0;
	char uri[256], id[128], filter[256], topic[256];
	snprintf(uri, sizeof uri, "%s://%s:%s", cafile[0] ? "ssl" : "tcp", host, port);
	snprintf(id, sizeof id, "paho-c-%s", run);
	snprintf(filter, sizeof filter, "alerts/%s/#", run);

	MQTTClient client;
	MQTTClient_createOptions create = MQTTClient_createOptions_initializer;
	create.MQTTVersion = v5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
	int rc = MQTTClient_createWithOptions(&client, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &create);
	if (rc != MQTTCLIENT_SUCCESS) {
		fprintf(stderr, "create: %d\n", rc);
		return 1;
	}
	MQTTClient_setCallbacks(client, NULL, lost, arrived, NULL);

	MQTTClient_connectOptions conn = MQTTClient_connectOptions_initializer;
	MQTTClient_connectOptions conn5 = MQTTClient_connectOptions_initializer5;
	MQTTClient_connectOptions *opts = v5 ? &conn5 : &conn;
	opts->keepAliveInterval = 30;
	opts->username = user;
	opts->password = password;
	MQTTClient_SSLOptions ssl = MQTTClient_SSLOptions_initializer;
	if (cafile[0]) {
		ssl.trustStore = cafile;
		ssl.enableServerCertAuth = 1;
		ssl.verify = 1;
		opts->ssl = &ssl;
	}
	if (v5) {
		opts->cleanstart = 1;
		MQTTResponse r = MQTTClient_connect5(client, opts, NULL, NULL);
		rc = r.reasonCode;
		MQTTResponse_free(r);
	} else {
		opts->cleansession = 1;
		rc = MQTTClient_connect(client, opts);
	}
	if (rc != MQTTCLIENT_SUCCESS) {
		fprintf(stderr, "connect: %d\n", rc);
		return 1;
	}

	if (v5) {
		MQTTResponse r = MQTTClient_subscribe5(client, filter, 1, NULL, NULL);
		rc = r.reasonCode >= 0x80 ? r.reasonCode : MQTTCLIENT_SUCCESS;
		MQTTResponse_free(r);
	} else {
		rc = MQTTClient_subscribe(client, filter, 1);
	}
	if (rc != MQTTCLIENT_SUCCESS) {
		fprintf(stderr, "subscribe: %d\n", rc);
		return 1;
	}

	for (int qos = 0; qos <= 2; qos++) {
		char payload[] = "{\"temperature\": 95}";
		MQTTClient_message m = MQTTClient_message_initializer;
		MQTTClient_deliveryToken token;
		m.payload = payload;
		m.payloadlen = (int)strlen(payload);
		m.qos = qos;
		snprintf(topic, sizeof topic, "plant/%s/q%d/telemetry", run, qos);
		if (v5) {
			MQTTResponse r = MQTTClient_publishMessage5(client, topic, &m, &token);
			rc = r.reasonCode >= 0x80 ? r.reasonCode : MQTTCLIENT_SUCCESS;
			MQTTResponse_free(r);
		} else {
			rc = MQTTClient_publishMessage(client, topic, &m, &token);
		}
		if (rc == MQTTCLIENT_SUCCESS)
			rc = MQTTClient_waitForCompletion(client, token, 30000);
		if (rc != MQTTCLIENT_SUCCESS) {
			fprintf(stderr, "publish at QoS %d: %d\n", qos, rc);
			return 1;
		}
	}

	for (int i = 0; i < 600 && alerts < 3; i++)
		usleep(100 * 1000);
	if (alerts < 3) {
		fprintf(stderr, "alerts: %d of 3 within 60s\n", alerts);
		return 1;
	}
	if (v5)
		MQTTClient_disconnect5(client, 1000, MQTTREASONCODE_SUCCESS, NULL);
	else
		MQTTClient_disconnect(client, 1000);
	MQTTClient_destroy(&client);
	return 0;
}

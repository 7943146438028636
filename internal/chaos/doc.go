// Package chaos is sluice's fault-injection suite: each case publishes a
// counted, numbered stream of QoS 1 messages while something fails (a sink
// goes down, sluice is killed, the journal fills up or is torn), then checks
// that every acknowledged message reached every sink. It prints what was
// published, acknowledged and found, and ends with "N passed, M failed".
//
//	go test ./internal/chaos -v              the short form (part of make test)
//	SLUICE_CHAOS=long go test ./internal/chaos -v -timeout 30m   make chaos
package chaos

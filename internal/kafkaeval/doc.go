// Package kafkaeval measures the Kafka clients a sluice cluster could use on
// its consumer side (the rule workers that share the ingest topic in a
// consumer group), so the choice in docs/scaling.md rests on figures:
//
//   - kafka-go's Reader with a GroupID, committing after processing;
//   - franz-go's kgo in a group, eager (range) and cooperative-sticky,
//     committing after processing and in OnPartitionsRevoked;
//   - kgo's GroupTransactSession: consume, produce one output per input and
//     commit the input offsets in one Kafka transaction.
//
// Everything is in the tests. By default a smoke test runs each client
// through a graceful hand-over on a three-broker kfake and checks the output
// (nothing lost; nothing duplicated with transactions); it asserts no
// timing. The measurement (rebalance pauses, throughput, CPU per record,
// losses and duplicates after a kill) runs only when asked:
//
//	SLUICE_KAFKAEVAL=1 go test -run TestEval -v -timeout 90m ./internal/kafkaeval
package kafkaeval

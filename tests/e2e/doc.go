// Package e2e holds the end-to-end tests: they drive the real binaries' Run
// functions (the same code main calls) against a real Apache Kafka broker,
// started by `make test` (scripts/kafka.sh). KAFKA_TEST_BROKERS names another
// broker. With -short they are skipped.
package e2e

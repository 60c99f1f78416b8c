// Package kafka provides the Kafka plumbing both binaries share: sarama
// configuration from the settings, connecting with retries, topic
// provisioning, a readiness probe, and the Producer that tells each caller
// when its own record was acknowledged.
package kafka

// Package kafka provides the Kafka plumbing both binaries share: sarama
// configuration from the settings, connecting with retries, topic
// provisioning and a readiness probe.
package kafka

// Package gateway provides webhook-gateway: an HTTP server that
// authenticates AcmeCRM webhooks, validates them and enqueues them durably
// into Kafka. It keeps no state, so any number of replicas can run.
package gateway

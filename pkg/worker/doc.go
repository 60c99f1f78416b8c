// Package worker provides contact-worker: a member of a Kafka consumer group
// that applies AcmeCRM contact events to the Contacts API, retries transient
// failures with backoff and dead-letters what cannot be applied.
package worker

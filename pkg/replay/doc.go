// Package replay provides the DLQ replay of contact-worker (--replay-dlq):
// it reads the dead-letter topic up to its end as of the start, republishes
// the records an SRE chose to the events topic, remembers its position in its
// own consumer group, and refuses to replay a record forever (loop guard).
package replay

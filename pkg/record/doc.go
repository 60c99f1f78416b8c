// Package record provides the Kafka record format of contact events: the
// CloudEvents 1.0 Kafka protocol binding in binary mode (the webhook body is
// the value, the attributes are ce_* headers), and the headers a
// dead-lettered record carries.
//
// It offers NewEventMessage (the record of an accepted webhook),
// DeadLetterMessage, ReplayMessage and DiscardMessage (the records the DLQ
// and its replay write), Identity, ReplayCount and IsDiscard (what a
// consumed record says), and the header names and kinds of both formats.
package record

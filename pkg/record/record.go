// Package record provides the Kafka record format of contact events: the
// CloudEvents 1.0 Kafka protocol binding in binary mode (the webhook body is
// the value, the attributes are ce_* headers), and the headers a
// dead-lettered record carries.
package record

import (
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
)

// Header names of an event record.
const (
	HeaderSpecVersion = "ce_specversion"
	HeaderID          = "ce_id"
	HeaderSource      = "ce_source"
	HeaderType        = "ce_type"
	HeaderTime        = "ce_time"
	HeaderContentType = "content-type"
	HeaderWebhookID   = "webhook_id"
	HeaderReceivedAt  = "received_at"
)

// Fixed attribute values.
const (
	SpecVersion = "1.0"
	Source      = "acmecrm"
	ContentType = "application/json"
)

// NewEventMessage returns the record of an accepted webhook: keyed by
// contact id, so one contact's events share a partition and keep their
// order; the value is body byte for byte, unknown fields and all.
func NewEventMessage(topic string, ev acmecrm.Event, body []byte, webhookID string, receivedAt time.Time) *sarama.ProducerMessage {
	return &sarama.ProducerMessage{
		Topic: topic,
		Key:   sarama.StringEncoder(ev.Data.ContactID),
		Value: sarama.ByteEncoder(body),
		Headers: []sarama.RecordHeader{
			header(HeaderSpecVersion, SpecVersion),
			header(HeaderID, ev.EventID),
			header(HeaderSource, Source),
			header(HeaderType, ev.EventType),
			header(HeaderTime, ev.Timestamp.Format(time.RFC3339Nano)),
			header(HeaderContentType, ContentType),
			header(HeaderWebhookID, webhookID),
			header(HeaderReceivedAt, receivedAt.UTC().Format(time.RFC3339Nano)),
		},
	}
}

func header(k, v string) sarama.RecordHeader {
	return sarama.RecordHeader{Key: []byte(k), Value: []byte(v)}
}

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

// The bytes of the header names and fixed values, shared by every record
// (sarama only reads them).
var (
	keySpecVersion, keyID, keySource, keyType = []byte(HeaderSpecVersion), []byte(HeaderID), []byte(HeaderSource), []byte(HeaderType)
	keyTime, keyContentType, keyWebhookID     = []byte(HeaderTime), []byte(HeaderContentType), []byte(HeaderWebhookID)
	keyReceivedAt                             = []byte(HeaderReceivedAt)
	valSpecVersion, valSource, valContentType = []byte(SpecVersion), []byte(Source), []byte(ContentType)
)

// NewEventMessage returns the record of an accepted webhook: keyed by
// contact id, so one contact's events share a partition and keep their
// order; the value is body byte for byte, unknown fields and all.
func NewEventMessage(topic string, ev acmecrm.Event, body []byte, webhookID string, receivedAt time.Time) *sarama.ProducerMessage {
	const timeLen = len("2006-01-02T15:04:05.999999999-07:00")
	v := make(headerValues, 0, len(ev.EventID)+len(ev.EventType)+len(webhookID)+2*timeLen)
	return &sarama.ProducerMessage{
		Topic: topic,
		Key:   sarama.StringEncoder(ev.Data.ContactID),
		Value: sarama.ByteEncoder(body),
		Headers: []sarama.RecordHeader{
			{Key: keySpecVersion, Value: valSpecVersion},
			{Key: keyID, Value: v.str(ev.EventID)},
			{Key: keySource, Value: valSource},
			{Key: keyType, Value: v.str(ev.EventType)},
			{Key: keyTime, Value: v.time(ev.Timestamp)},
			{Key: keyContentType, Value: valContentType},
			{Key: keyWebhookID, Value: v.str(webhookID)},
			{Key: keyReceivedAt, Value: v.time(receivedAt.UTC())},
		},
	}
}

// headerValues is one buffer the values of a record's headers are appended
// to, each returned as a capped slice of it: one allocation for them all
// when its capacity suffices (and correct values when it does not).
type headerValues []byte

func (b *headerValues) str(s string) []byte {
	start := len(*b)
	*b = append(*b, s...)
	return (*b)[start:len(*b):len(*b)]
}

func (b *headerValues) time(t time.Time) []byte {
	start := len(*b)
	*b = t.AppendFormat(*b, time.RFC3339Nano)
	return (*b)[start:len(*b):len(*b)]
}

func header(k, v string) sarama.RecordHeader {
	return sarama.RecordHeader{Key: []byte(k), Value: []byte(v)}
}

// Arrival returns when the event of m reached the service: its received_at
// header (the gateway's clock), else the record's own timestamp; ok is
// false when it has neither.
func Arrival(m *sarama.ConsumerMessage) (at time.Time, ok bool) {
	if v, found := Header(m.Headers, HeaderReceivedAt); found {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return t, true
		}
	}
	if !m.Timestamp.IsZero() && m.Timestamp.Unix() > 0 {
		return m.Timestamp, true
	}
	return time.Time{}, false
}

// Forward returns the record that moves m, unchanged (key, value and every
// header, in order), to partition p of its topic: where its key belongs.
func Forward(m *sarama.ConsumerMessage, p int32) *sarama.ProducerMessage {
	out := &sarama.ProducerMessage{Topic: m.Topic, Partition: p, Value: sarama.ByteEncoder(m.Value)}
	if m.Key != nil {
		out.Key = sarama.ByteEncoder(m.Key)
	}
	for _, h := range m.Headers {
		if h != nil {
			out.Headers = append(out.Headers, sarama.RecordHeader{Key: h.Key, Value: h.Value})
		}
	}
	return out
}

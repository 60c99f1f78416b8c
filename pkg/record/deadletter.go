package record

import (
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// Headers a dead-lettered record carries beside the original ones.
const (
	HeaderDLQOriginalTopic     = "dlq_original_topic"
	HeaderDLQOriginalPartition = "dlq_original_partition"
	HeaderDLQOriginalOffset    = "dlq_original_offset"
	HeaderDLQError             = "dlq_error"
	HeaderDLQErrorKind         = "dlq_error_kind"
	HeaderDLQAttempts          = "dlq_attempts"
	HeaderDLQFailedAt          = "dlq_failed_at"
	HeaderDLQConsumerGroup     = "dlq_consumer_group"
	// HeaderDLQReplayCount is the only dlq_ header a replayed record keeps:
	// how many times it has been put back, for the replay loop guard.
	HeaderDLQReplayCount = "dlq_replay_count"
)

// DLQHeaderPrefix starts every dead-letter header.
const DLQHeaderPrefix = "dlq_"

// Kind says why an event was dead-lettered.
type Kind string

// The kinds of dead-lettered events.
const (
	// KindTransient: retries were exhausted on failures that might pass.
	KindTransient Kind = "transient"
	// KindPermanent: the Contacts API refused the event (a 4xx).
	KindPermanent Kind = "permanent"
	// KindInvalid: the record cannot be parsed or has an unknown event type.
	KindInvalid Kind = "invalid"
)

// MaxErrorBytes bounds dlq_error, so a long error body cannot make the
// dead-letter record larger than the original allows.
const MaxErrorBytes = 1024

// Failure is why and when an event failed.
type Failure struct {
	Err      error
	Kind     Kind
	Attempts int
	FailedAt time.Time
	Group    string
}

// DeadLetterMessage returns the dead-letter record of m: same key, same
// value, the original headers (less any dlq_ ones but the replay count),
// plus the dlq_ headers that say where it came from and why it failed.
func DeadLetterMessage(dlqTopic string, m *sarama.ConsumerMessage, f Failure) *sarama.ProducerMessage {
	headers := make([]sarama.RecordHeader, 0, len(m.Headers)+8)
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		k := string(h.Key)
		if strings.HasPrefix(k, DLQHeaderPrefix) && k != HeaderDLQReplayCount {
			continue
		}
		headers = append(headers, sarama.RecordHeader{Key: h.Key, Value: h.Value})
	}
	msg := f.Err.Error()
	if len(msg) > MaxErrorBytes {
		msg = msg[:MaxErrorBytes]
	}
	headers = append(headers,
		header(HeaderDLQOriginalTopic, m.Topic),
		header(HeaderDLQOriginalPartition, strconv.Itoa(int(m.Partition))),
		header(HeaderDLQOriginalOffset, strconv.FormatInt(m.Offset, 10)),
		header(HeaderDLQError, msg),
		header(HeaderDLQErrorKind, string(f.Kind)),
		header(HeaderDLQAttempts, strconv.Itoa(f.Attempts)),
		header(HeaderDLQFailedAt, f.FailedAt.UTC().Format(time.RFC3339Nano)),
		header(HeaderDLQConsumerGroup, f.Group),
	)
	out := &sarama.ProducerMessage{Topic: dlqTopic, Value: sarama.ByteEncoder(m.Value), Headers: headers}
	if m.Key != nil {
		out.Key = sarama.ByteEncoder(m.Key)
	}
	return out
}

// Header returns the value of the first header named key, and whether there was one.
func Header(headers []*sarama.RecordHeader, key string) (string, bool) {
	for _, h := range headers {
		if h != nil && string(h.Key) == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// ReplayCount returns the dlq_replay_count of headers, 0 when absent or unreadable.
func ReplayCount(headers []*sarama.RecordHeader) int {
	v, _ := Header(headers, HeaderDLQReplayCount)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// ReplayMessage returns the record that puts the dead-lettered m back on
// topic: its key, value and original headers, every dlq_ header dropped but
// dlq_replay_count, which is one more than before.
func ReplayMessage(topic string, m *sarama.ConsumerMessage) *sarama.ProducerMessage {
	headers := make([]sarama.RecordHeader, 0, len(m.Headers))
	for _, h := range m.Headers {
		if h == nil || strings.HasPrefix(string(h.Key), DLQHeaderPrefix) {
			continue
		}
		headers = append(headers, sarama.RecordHeader{Key: h.Key, Value: h.Value})
	}
	headers = append(headers, header(HeaderDLQReplayCount, strconv.Itoa(ReplayCount(m.Headers)+1)))
	out := &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(m.Value), Headers: headers}
	if m.Key != nil {
		out.Key = sarama.ByteEncoder(m.Key)
	}
	return out
}

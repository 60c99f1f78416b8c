package record

import (
	"cmp"
	"encoding/json"
	"slices"
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
	// HeaderDLQParkedBehind, on a parked event, is the event id of the
	// contact's dead-lettered head it waits behind.
	HeaderDLQParkedBehind = "dlq_parked_behind"
	// HeaderDLQDiscard, on a record a replay puts back, says: never apply
	// this event (an SRE dropped it); it releases what was parked behind it.
	HeaderDLQDiscard = "dlq_discard"
	// HeaderDLQReleaseThrough, on a record a release of a parked contact
	// puts back, is how far the release read the DLQ: "partition:end" for
	// each of its partitions (end exclusive), comma-separated. Records
	// parked after that wait for the next release.
	HeaderDLQReleaseThrough = "dlq_release_through"
	// HeaderDLQValueOmitted, on a dead letter without a value, is the size
	// in bytes of the record it stands for: Kafka would not take a copy
	// that large; the record itself is at dlq_original_topic/partition/
	// offset until that topic's retention.
	HeaderDLQValueOmitted = "dlq_value_omitted"
	// HeaderDLQReplayCount is the only dlq_ header a replayed record keeps:
	// how many times it has been put back, for the replay loop guard.
	HeaderDLQReplayCount = "dlq_replay_count"
)

// DeadLetterStub returns the dead letter of m when Kafka will not take a
// copy of it (size bytes): DeadLetterMessage's headers, m's key, event id,
// type and replay count, no value, and dlq_value_omitted. Its contact parks behind it
// as behind any dead letter; the value is found at the original position.
func DeadLetterStub(dlqTopic string, m *sarama.ConsumerMessage, f Failure, size int) *sarama.ProducerMessage {
	id, eventType := Identity(m)
	stub := &sarama.ConsumerMessage{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key}
	for _, h := range [][2]string{{HeaderID, id}, {HeaderType, eventType}} {
		if h[1] != "" {
			stub.Headers = append(stub.Headers, &sarama.RecordHeader{Key: []byte(h[0]), Value: []byte(h[1])})
		}
	}
	if n, ok := Header(m.Headers, HeaderDLQReplayCount); ok {
		stub.Headers = append(stub.Headers, &sarama.RecordHeader{Key: []byte(HeaderDLQReplayCount), Value: []byte(n)})
	}
	out := DeadLetterMessage(dlqTopic, stub, f)
	out.Headers = append(out.Headers, header(HeaderDLQValueOmitted, strconv.Itoa(size)))
	return out
}

// ValueOmitted reports whether m is a stub (DeadLetterStub): a dead letter
// whose value stayed at its original position.
func ValueOmitted(m *sarama.ConsumerMessage) bool {
	_, ok := Header(m.Headers, HeaderDLQValueOmitted)
	return ok
}

// Original returns the position a dead letter's record came from
// (dlq_original_*); ok is false when m does not say.
func Original(m *sarama.ConsumerMessage) (topic string, partition int32, offset int64, ok bool) {
	topic, _ = Header(m.Headers, HeaderDLQOriginalTopic)
	ps, _ := Header(m.Headers, HeaderDLQOriginalPartition)
	os, _ := Header(m.Headers, HeaderDLQOriginalOffset)
	p, perr := strconv.ParseInt(ps, 10, 32)
	o, oerr := strconv.ParseInt(os, 10, 64)
	if topic == "" || perr != nil || oerr != nil {
		return "", 0, 0, false
	}
	return topic, int32(p), o, true
}

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
	// KindUnsupported: a well-formed event of a type this worker does not
	// know (one AcmeCRM added): never applied, its contact never parked;
	// replay it (--replay-event-type) once a release supports the type.
	KindUnsupported Kind = "unsupported"
	// KindParked: not tried; an earlier event of the same contact is in
	// the DLQ unresolved, and this one waits behind it, in order.
	KindParked Kind = "parked"
)

// MaxErrorBytes bounds dlq_error, so a long error body cannot make the
// dead-letter record larger than the original allows.
const MaxErrorBytes = 1024

// DeadLetterOverheadBytes bounds what a dead-letter copy adds to the
// record it copies (bytes): the dlq_ headers, dlq_error at most
// MaxErrorBytes, the ids and topic names at most 255 bytes each, with
// room to spare. The DLQ topic's max.message.bytes must be the events
// topic's plus this, or the copy of a record near the events topic's
// limit could never be written.
const DeadLetterOverheadBytes = 4096

// Failure is why and when an event failed.
type Failure struct {
	Err      error
	Kind     Kind
	Attempts int
	FailedAt time.Time
	Group    string
	// ParkedBehind, for KindParked, is the head's event id.
	ParkedBehind string
}

// DeadLetterMessage returns the dead-letter record of m: same key, same
// value, the original headers (less any dlq_ ones but the replay count),
// plus the dlq_ headers that say where it came from and why it failed.
func DeadLetterMessage(dlqTopic string, m *sarama.ConsumerMessage, f Failure) *sarama.ProducerMessage {
	msg := f.Err.Error()
	if len(msg) > MaxErrorBytes {
		msg = msg[:MaxErrorBytes]
	}
	extra := []sarama.RecordHeader{
		header(HeaderDLQOriginalTopic, m.Topic),
		header(HeaderDLQOriginalPartition, strconv.Itoa(int(m.Partition))),
		header(HeaderDLQOriginalOffset, strconv.FormatInt(m.Offset, 10)),
		header(HeaderDLQError, msg),
		header(HeaderDLQErrorKind, string(f.Kind)),
		header(HeaderDLQAttempts, strconv.Itoa(f.Attempts)),
		header(HeaderDLQFailedAt, f.FailedAt.UTC().Format(time.RFC3339Nano)),
		header(HeaderDLQConsumerGroup, f.Group),
	}
	if f.ParkedBehind != "" {
		extra = append(extra, header(HeaderDLQParkedBehind, f.ParkedBehind))
	}
	return carry(dlqTopic, m, HeaderDLQReplayCount, extra...)
}

// carry returns a record of m for topic: the same key and value, m's headers
// less the dlq_ ones (but keep, when not empty), then extra.
func carry(topic string, m *sarama.ConsumerMessage, keep string, extra ...sarama.RecordHeader) *sarama.ProducerMessage {
	headers := make([]sarama.RecordHeader, 0, len(m.Headers)+len(extra))
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		if k := string(h.Key); strings.HasPrefix(k, DLQHeaderPrefix) && k != keep {
			continue
		}
		headers = append(headers, sarama.RecordHeader{Key: h.Key, Value: h.Value})
	}
	out := &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(m.Value), Headers: append(headers, extra...)}
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
	return carry(topic, m, "", header(HeaderDLQReplayCount, strconv.Itoa(ReplayCount(m.Headers)+1)))
}

// DiscardMessage returns the record that tells the worker never to apply
// the dead-lettered m: ReplayMessage's, marked dlq_discard.
func DiscardMessage(topic string, m *sarama.ConsumerMessage) *sarama.ProducerMessage {
	out := ReplayMessage(topic, m)
	out.Headers = append(out.Headers, header(HeaderDLQDiscard, "true"))
	return out
}

// IsDiscard reports whether m is a discard record (DiscardMessage).
func IsDiscard(m *sarama.ConsumerMessage) bool {
	v, _ := Header(m.Headers, HeaderDLQDiscard)
	return v == "true"
}

// Identity returns the event id and type of an event record: its ce_id and
// ce_type headers, else the event_id and event_type of its body (a record
// that never passed the gateway), else empty.
func Identity(m *sarama.ConsumerMessage) (id, eventType string) {
	id, _ = Header(m.Headers, HeaderID)
	eventType, _ = Header(m.Headers, HeaderType)
	if id != "" && eventType != "" {
		return id, eventType
	}
	var body struct {
		EventID   string `json:"event_id"`
		EventType string `json:"event_type"`
	}
	if json.Unmarshal(m.Value, &body) == nil {
		id, eventType = cmp.Or(id, body.EventID), cmp.Or(eventType, body.EventType)
	}
	return id, eventType
}

// WithReleaseThrough marks msg, put back by a release, with how far the
// release read the DLQ (partition -> end offset, exclusive).
func WithReleaseThrough(msg *sarama.ProducerMessage, through map[int32]int64) *sarama.ProducerMessage {
	parts := make([]string, 0, len(through))
	for p, end := range through {
		parts = append(parts, strconv.Itoa(int(p))+":"+strconv.FormatInt(end, 10))
	}
	slices.Sort(parts)
	msg.Headers = append(msg.Headers, header(HeaderDLQReleaseThrough, strings.Join(parts, ",")))
	return msg
}

// ReleaseThrough returns m's dlq_release_through (partition -> end offset),
// nil when it has none or it cannot be read.
func ReleaseThrough(m *sarama.ConsumerMessage) map[int32]int64 {
	v, ok := Header(m.Headers, HeaderDLQReleaseThrough)
	if !ok {
		return nil
	}
	out := map[int32]int64{}
	for _, part := range strings.Split(v, ",") {
		p, end, found := strings.Cut(part, ":")
		pn, err1 := strconv.ParseInt(p, 10, 32)
		en, err2 := strconv.ParseInt(end, 10, 64)
		if !found || err1 != nil || err2 != nil {
			return nil
		}
		out[int32(pn)] = en
	}
	return out
}

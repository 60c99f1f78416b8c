package record

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func TestDeadLetterMessage(t *testing.T) {
	orig := &sarama.ConsumerMessage{
		Topic: "contact-events", Partition: 4, Offset: 1234, Key: []byte("c-1"), Value: []byte(`{"a":1}`),
		Headers: []*sarama.RecordHeader{
			{Key: []byte("ce_id"), Value: []byte("evt_1")},
			{Key: []byte("ce_type"), Value: []byte("contact.created")},
			{Key: []byte("dlq_error"), Value: []byte("an older failure")},
			{Key: []byte("dlq_replay_count"), Value: []byte("2")},
		},
	}
	at := time.Date(2026, 11, 26, 15, 0, 0, 0, time.FixedZone("", 3600))
	m := DeadLetterMessage("contact-events-dlq", orig, Failure{Err: errors.New(strings.Repeat("x", 5000)), Kind: KindTransient, Attempts: 7, FailedAt: at, Group: "contact-worker"})
	if m.Topic != "contact-events-dlq" {
		t.Errorf("topic %s", m.Topic)
	}
	if k, _ := m.Key.Encode(); string(k) != "c-1" {
		t.Errorf("key %q, want c-1", k)
	}
	if v, _ := m.Value.Encode(); string(v) != `{"a":1}` {
		t.Errorf("value %q", v)
	}
	got := map[string][]string{}
	for _, h := range m.Headers {
		got[string(h.Key)] = append(got[string(h.Key)], string(h.Value))
	}
	want := map[string]string{
		"ce_id": "evt_1", "ce_type": "contact.created", "dlq_replay_count": "2",
		"dlq_original_topic": "contact-events", "dlq_original_partition": "4", "dlq_original_offset": "1234",
		"dlq_error_kind": "transient", "dlq_attempts": "7", "dlq_failed_at": "2026-11-26T14:00:00Z", "dlq_consumer_group": "contact-worker",
	}
	for k, v := range want {
		if len(got[k]) != 1 || got[k][0] != v {
			t.Errorf("header %s = %v, want [%s]", k, got[k], v)
		}
	}
	if len(got["dlq_error"]) != 1 || len(got["dlq_error"][0]) != MaxErrorBytes {
		t.Errorf("dlq_error: %d values, want one of %d bytes (the old one dropped, the new one cut)", len(got["dlq_error"]), MaxErrorBytes)
	}
	if len(got) != len(want)+1 {
		t.Errorf("headers %v", got)
	}
}

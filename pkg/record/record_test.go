package record

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
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

func TestNewEventMessage(t *testing.T) {
	for _, year := range []int{2025, 12025} { // 12025: longer than the buffer is sized for
		ev := acmecrm.Event{EventType: "contact.updated", EventID: "evt_1", Timestamp: time.Date(year, 5, 17, 17, 6, 39, 5, time.FixedZone("", -7*3600)), Data: acmecrm.Contact{ContactID: "c-1"}}
		m := NewEventMessage("contact-events", ev, []byte(`{"x":1}`), "msg_1", time.Date(2026, 11, 27, 3, 0, 0, 0, time.FixedZone("", 3600)))
		var got []string
		for _, h := range m.Headers {
			got = append(got, string(h.Key)+"="+string(h.Value))
			h.Value = append(h.Value, '!') // capped: never writes into the next value
		}
		want := []string{"ce_specversion=1.0", "ce_id=evt_1", "ce_source=acmecrm", "ce_type=contact.updated",
			"ce_time=" + strconv.Itoa(year) + "-05-17T17:06:39.000000005-07:00", "content-type=application/json", "webhook_id=msg_1", "received_at=2026-11-27T02:00:00Z"}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("headers\n got %v\nwant %v", got, want)
		}
		for i, h := range m.Headers {
			if kv := string(h.Key) + "=" + string(h.Value); kv != want[i] {
				t.Errorf("after appending to each value, header %d reads %q, want %q", i, kv, want[i])
			}
		}
		if k, _ := m.Key.Encode(); string(k) != "c-1" {
			t.Errorf("key %q", k)
		}
	}
}

// consumed returns the headers of a consumed record, from key, value pairs.
func consumed(kv ...string) []*sarama.RecordHeader {
	var out []*sarama.RecordHeader
	for i := 0; i < len(kv); i += 2 {
		out = append(out, &sarama.RecordHeader{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return out
}

func TestReplayMessage(t *testing.T) {
	m := &sarama.ConsumerMessage{Key: []byte("c-1"), Value: []byte(`{"x":1}`), Headers: consumed(
		"ce_id", "evt_1", "ce_type", "contact.created", "webhook_id", "msg_1",
		"dlq_original_topic", "contact-events", "dlq_error", "boom", "dlq_error_kind", "transient", "dlq_replay_count", "1")}
	out := ReplayMessage("contact-events", m)
	if k, _ := out.Key.Encode(); string(k) != "c-1" {
		t.Errorf("key %q", k)
	}
	if v, _ := out.Value.Encode(); string(v) != `{"x":1}` {
		t.Errorf("value %q", v)
	}
	got := map[string]string{}
	for _, h := range out.Headers {
		got[string(h.Key)] = string(h.Value)
	}
	want := map[string]string{"ce_id": "evt_1", "ce_type": "contact.created", "webhook_id": "msg_1", "dlq_replay_count": "2"}
	if len(got) != len(want) {
		t.Errorf("headers %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q", k, got[k], v)
		}
	}
}

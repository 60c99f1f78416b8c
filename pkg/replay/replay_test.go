package replay

import (
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/config"
)

func hdr(kv ...string) []*sarama.RecordHeader {
	var out []*sarama.RecordHeader
	for i := 0; i < len(kv); i += 2 {
		out = append(out, &sarama.RecordHeader{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return out
}

func TestEntryOf(t *testing.T) {
	m := &sarama.ConsumerMessage{Partition: 1, Offset: 7, Key: []byte("c-1"), Value: []byte(`{}`),
		Headers: hdr("ce_id", "evt_1", "ce_type", "contact.created", "dlq_error_kind", "permanent", "dlq_error", "400",
			"dlq_failed_at", "2026-11-26T10:00:00Z", "dlq_replay_count", "2")}
	e := entryOf(m)
	want := entry{Partition: 1, Offset: 7, Key: "c-1", EventID: "evt_1", EventType: "contact.created", ErrorKind: "permanent",
		Error: "400", FailedAt: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC), ReplayCount: 2}
	if e != want {
		t.Errorf("got %+v, want %+v", e, want)
	}
	// A record that never passed the gateway has no ce_ headers: its body is asked.
	raw := entryOf(&sarama.ConsumerMessage{Value: []byte(`{"event_type":"contact.merged","event_id":"evt_m"}`), Headers: hdr("dlq_error_kind", "invalid")})
	if raw.EventID != "evt_m" || raw.EventType != "contact.merged" || raw.ReplayCount != 0 {
		t.Errorf("from the body: got %+v", raw)
	}
}

func TestFilter(t *testing.T) {
	at := func(h int) time.Time { return time.Date(2026, 11, 26, h, 0, 0, 0, time.UTC) }
	e := entry{EventID: "evt_1", EventType: "contact.updated", ErrorKind: "transient", FailedAt: at(10)}
	tests := []struct {
		name string
		r    config.Replay
		want bool
	}{
		{"no criteria", config.Replay{}, true},
		{"type matches", config.Replay{EventTypes: []string{"contact.created", "contact.updated"}}, true},
		{"type differs", config.Replay{EventTypes: []string{"contact.deleted"}}, false},
		{"id matches", config.Replay{EventIDs: []string{"evt_1"}}, true},
		{"id differs", config.Replay{EventIDs: []string{"evt_2"}}, false},
		{"kind matches", config.Replay{ErrorKinds: []string{"transient"}}, true},
		{"kind differs", config.Replay{ErrorKinds: []string{"permanent", "invalid"}}, false},
		{"since is inclusive", config.Replay{Since: "2026-11-26T10:00:00Z"}, true},
		{"before since", config.Replay{Since: "2026-11-26T10:00:01Z"}, false},
		{"until is exclusive", config.Replay{Until: "2026-11-26T10:00:00Z"}, false},
		{"inside the window", config.Replay{Since: "2026-11-26T09:00:00Z", Until: "2026-11-26T11:00:00+00:00"}, true},
		{"window in another zone", config.Replay{Since: "2026-11-26T11:30:00+02:00"}, true},
		{"all criteria", config.Replay{EventTypes: []string{"contact.updated"}, EventIDs: []string{"evt_1"}, ErrorKinds: []string{"transient"}, Until: "2026-11-27T00:00:00Z"}, true},
		{"one criterion of several fails", config.Replay{EventTypes: []string{"contact.updated"}, ErrorKinds: []string{"invalid"}}, false},
	}
	for _, tt := range tests {
		f, err := newFilter(tt.r)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := f.Match(e); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	f, _ := newFilter(config.Replay{Since: "2026-11-26T09:00:00Z"})
	if f.Match(entry{}) {
		t.Error("a record without dlq_failed_at passed a bounded window")
	}
}

package replay

import (
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/record"
)

// entry is what a replay knows of one dead-lettered record.
type entry struct {
	Partition   int32     `json:"partition"`
	Offset      int64     `json:"offset"`
	Key         string    `json:"key"`
	EventID     string    `json:"event_id"`
	EventType   string    `json:"event_type"`
	ErrorKind   string    `json:"error_kind"`
	Error       string    `json:"error"`
	FailedAt    time.Time `json:"failed_at"`
	ReplayCount int       `json:"replay_count"`
}

// entryOf reads a dead-lettered record's headers (and, for a record that
// never passed the gateway, its body).
func entryOf(m *sarama.ConsumerMessage) entry {
	h := func(k string) string { v, _ := record.Header(m.Headers, k); return v }
	e := entry{
		Partition: m.Partition, Offset: m.Offset, Key: string(m.Key),
		ErrorKind: h(record.HeaderDLQErrorKind), Error: h(record.HeaderDLQError),
		ReplayCount: record.ReplayCount(m.Headers),
	}
	e.EventID, e.EventType = record.Identity(m)
	e.FailedAt, _ = time.Parse(time.RFC3339Nano, h(record.HeaderDLQFailedAt))
	return e
}

// filter keeps the entries an SRE chose. Every empty criterion matches all.
type filter struct {
	types, ids, kinds map[string]bool
	since, until      time.Time
}

// newFilter builds the filter of the replay settings.
func newFilter(r config.Replay) (filter, error) {
	since, until, err := r.Window()
	if err != nil {
		return filter{}, err
	}
	return filter{types: set(r.EventTypes), ids: set(r.EventIDs), kinds: set(r.ErrorKinds), since: since, until: until}, nil
}

func set(vals []string) map[string]bool {
	if len(vals) == 0 {
		return nil
	}
	m := make(map[string]bool, len(vals))
	for _, v := range vals {
		m[v] = true
	}
	return m
}

// Match reports whether e passes every criterion. The window is
// [since, until) on dlq_failed_at; a record without a readable time passes
// only an open window.
func (f filter) Match(e entry) bool {
	if f.types != nil && !f.types[e.EventType] || f.ids != nil && !f.ids[e.EventID] || f.kinds != nil && !f.kinds[e.ErrorKind] {
		return false
	}
	if !f.since.IsZero() && (e.FailedAt.IsZero() || e.FailedAt.Before(f.since)) {
		return false
	}
	if !f.until.IsZero() && (e.FailedAt.IsZero() || !e.FailedAt.Before(f.until)) {
		return false
	}
	return true
}

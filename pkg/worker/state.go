package worker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/record"
)

// batchEnqueuer sends records and returns nil once Kafka acknowledged
// every one (kafka.Producer).
type batchEnqueuer interface {
	EnqueueAll(ctx context.Context, msgs []*sarama.ProducerMessage) error
}

// contactStates is what a partition's loop needs of the contacts' states
// (stateTopic).
type contactStates interface {
	// load rebuilds the states of events partition p's contacts (the
	// events topic has n partitions) before anything of it is applied.
	load(ctx context.Context, p, n int32) error
	// drop forgets them (revoked).
	drop(p int32)
	// write writes the records of contacts of events partition p from
	// their states as they are now, and returns once all are acknowledged.
	write(ctx context.Context, p int32, contacts []string) error
	// forward writes m, unchanged, to partition to of its topic.
	forward(ctx context.Context, m *sarama.ConsumerMessage, to int32) error
}

// stateTopic keeps the contacts' states of the partitions this member holds
// in the state topic: it rebuilds a partition's from it on assignment and
// writes the records of those that changed.
type stateTopic struct {
	Store *contactstate.Store
	// Client reads the state topic.
	Client sarama.Client
	// Producer writes state records and forwarded events, each to the
	// partition set on it (a manual partitioner).
	Producer batchEnqueuer
	// Topic is the state topic, of Partitions partitions.
	Topic      string
	Partitions int32
	Owner      contactstate.Owner
	// Legacy, when set, is the former parked topic, whose parked contacts
	// of this deployment are adopted as partitions are loaded.
	Legacy *legacyParked
	// Forwarder writes forwarded events, again until acknowledged.
	Forwarder *publisher
	Metrics   *Metrics
	Log       zerolog.Logger
}

// load rebuilds the states of the contacts of events partition p, when the
// events topic has n partitions: the state partitions that can hold them
// are read to their end, and the contacts whose key belongs to p kept.
func (t *stateTopic) load(ctx context.Context, p, n int32) error {
	start := time.Now()
	var legacy map[string]legacyEntry
	if t.Legacy != nil && n > 0 {
		var err error
		if legacy, err = t.Legacy.read(ctx, t.Client, p, n); err != nil {
			return err
		}
	}
	part := contactstate.NewPartitionState()
	written := map[string]time.Time{} // of the contacts the former topic has too
	sources := contactstate.Sources(p, max(n, p+1), t.Partitions)
	st, err := contactstate.Read(ctx, t.Client, t.Topic, sources, t.Owner, func(contact string, s contactstate.State, at time.Time) {
		if n == 0 || contactstate.Partition([]byte(contact), n) == p {
			part.Put(contact, s)
			if _, ok := legacy[contact]; ok {
				written[contact] = at
			}
		}
	})
	if err != nil {
		return err
	}
	adopted, err := t.adopt(ctx, p, part, legacy, written)
	if err != nil {
		return err
	}
	for _, u := range st.Unreadable {
		t.Log.Error().Err(u.Err).Str("topic", t.Topic).Int32("state_partition", u.Partition).Int64("offset", u.Offset).Str("contact_id", u.Key).
			Msg("unreadable state record skipped: the contact is known by its records before it, if any")
	}
	t.Metrics.stateSkipped.WithLabelValues("unreadable").Add(float64(st.Skipped))
	t.Metrics.stateSkipped.WithLabelValues("foreign").Add(float64(st.Foreign))
	t.Store.Install(p, part)
	t.Metrics.parked.Set(float64(t.Store.Parked()))
	t.Metrics.contacts.Set(float64(t.Store.Contacts()))
	took := time.Since(start)
	t.Metrics.stateLoad.Observe(took.Seconds())
	t.Log.Info().Int32("partition", p).Ints32("state_partitions", sources).Int("records", st.Records).Int("contacts", part.Len()).
		Int("parked", part.Parked()).Int("foreign", st.Foreign).Int("unreadable", st.Skipped).Int("adopted_from_former_parked_topic", adopted).
		Dur("took", took).Msg("contacts' states loaded")
	return nil
}

// adopt takes into part the parked contacts of the former topic (legacy)
// that belong to this deployment and that part does not know, or knows
// from a record older than theirs (written); it writes their states, then
// tombstones every former record of this deployment's it saw. It returns
// how many it adopted.
func (t *stateTopic) adopt(ctx context.Context, p int32, part *contactstate.PartitionState, legacy map[string]legacyEntry, written map[string]time.Time) (int, error) {
	heads := map[string]string{}
	for c, e := range legacy {
		if e.state.IsParked() {
			heads[c] = e.state.Parked.Head.EventID
		}
	}
	if len(heads) == 0 {
		return 0, nil
	}
	ours, err := t.Legacy.ours(ctx, t.Client, heads)
	if err != nil {
		return 0, err
	}
	var adopted []string
	var tombstones []*sarama.ProducerMessage
	for c := range heads {
		if !ours[c] {
			continue // another deployment's
		}
		e := legacy[c]
		if at, known := written[c]; !known || at.Before(e.written) {
			s := part.Get(c)
			s.Parked = e.state.Parked
			for _, d := range e.state.Discarded {
				s.Discard(d)
			}
			part.Put(c, s)
			adopted = append(adopted, c)
		}
		tombstones = append(tombstones, contactstate.Message(t.Legacy.Topic, e.partition, t.Owner, c, contactstate.State{}))
	}
	t.Store.Install(p, part) // write reads the states from the store
	if err := t.write(ctx, p, adopted); err != nil {
		return 0, err
	}
	if err := t.Producer.EnqueueAll(ctx, tombstones); err != nil {
		return 0, fmt.Errorf("tombstoning the adopted records of %s: %w", t.Legacy.Topic, err)
	}
	if len(adopted) > 0 {
		t.Log.Warn().Int32("partition", p).Str("from", t.Legacy.Topic).Int("adopted", len(adopted)).Int("tombstoned", len(tombstones)).
			Msg("parked contacts adopted from the former parked topic (another deployment's left alone)")
	}
	return len(adopted), nil
}

// drop forgets events partition p's states (revoked).
func (t *stateTopic) drop(p int32) {
	t.Store.Drop(p)
	t.Metrics.parked.Set(float64(t.Store.Parked()))
	t.Metrics.contacts.Set(float64(t.Store.Contacts()))
}

// write writes the records of contacts of events partition p, each from its
// state as it is now, and returns once Kafka acknowledged them all.
func (t *stateTopic) write(ctx context.Context, p int32, contacts []string) error {
	msgs := make([]*sarama.ProducerMessage, 0, len(contacts))
	for _, c := range contacts {
		msgs = append(msgs, contactstate.Message(t.Topic, contactstate.Partition([]byte(c), t.Partitions), t.Owner, c, t.Store.Get(p, c)))
	}
	return t.Producer.EnqueueAll(ctx, msgs)
}

// forward writes m, unchanged, to partition to of its topic, again until
// it is acknowledged or ctx ends; errTooLarge, at once, when Kafka refuses
// it as too large (a record another producer wrote compressed, larger
// uncompressed than this worker's producer sends): sent again it never
// would be.
func (t *stateTopic) forward(ctx context.Context, m *sarama.ConsumerMessage, to int32) error {
	_, err := t.Forwarder.publish(ctx, m, func() *sarama.ProducerMessage { return record.Forward(m, to) }, func(int, bool) bool { return true })
	return err
}

// flushInterval is how long changed states may wait to be written together;
// flushBatch events waiting start a write at once. An event whose
// contact's state changed is finished (its offset committable) once the
// write that carries the state is acknowledged.
const (
	flushInterval = time.Second
	flushBatch    = 4096
	// stateWaitingMax bounds the events of a partition finished but for
	// their state record: beyond it, no record is read until a write is
	// acknowledged. Well above what a second of full speed leaves waiting
	// (fewer writes, fewer produce requests: the guard's cost), it only
	// binds when the state topic refuses writes.
	stateWaitingMax = 4 * flushBatch
	// stateWriteTimeout bounds one write, which a stop does not cut short:
	// once it is acknowledged, the partition's next owner reads it. (A
	// write given up on may still land later, after the next owner's own:
	// docs/worker.md, "The state topic".)
	stateWriteTimeout = 30 * time.Second
)

// stateFlush writes one partition's changed states to the state topic, one
// write in flight at a time, each carrying the states as they are when it
// starts: the last record of a contact is always its latest state. It is
// used by the partition's loop alone; a nil *stateFlush keeps no state.
type stateFlush struct {
	states    contactStates
	partition int32
	batch     int // events waiting that start a write at once
	failed    prometheus.Counter
	log       zerolog.Logger
	dirty     map[string]struct{} // contacts changed since the last write started
	waiting   []int64             // events finished but for their contact's record
	inflight  []int64             // events the write in flight covers
	writing   []string            // contacts of the write in flight
	busy      bool
	urgent    bool // a waiting change concerns parking: written without waiting for the tick
	failures  int  // in a row
	retryAt   time.Time
	gaveUp    bool // a write failed while stopping: nothing more is tried
	results   chan flushResult
}

type flushResult struct{ err error }

// newStateFlush returns the partition's writer of states; a write starts
// once batch events wait (at most flushBatch), or at the interval.
func newStateFlush(states contactStates, partition int32, batch int, failed prometheus.Counter, log zerolog.Logger) *stateFlush {
	return &stateFlush{states: states, partition: partition, batch: max(1, min(batch, flushBatch)), failed: failed, log: log, dirty: map[string]struct{}{}, results: make(chan flushResult, 1)}
}

// add records that the event at offset changed contact's state; urgent
// (a change of parking) starts a write without waiting for the interval.
func (f *stateFlush) add(contact string, offset int64, urgent bool) {
	f.dirty[contact] = struct{}{}
	f.waiting = append(f.waiting, offset)
	f.urgent = f.urgent || urgent
}

// due reports whether a write should start now: events wait, none is in
// flight, and the interval passed (tick), the batch is full, a change of
// parking waits or the partition is stopping; after a failure, not before its backoff unless
// stopping (one last try).
func (f *stateFlush) due(stopping, tick bool) bool {
	if f == nil || f.busy || len(f.waiting) == 0 || f.gaveUp {
		return false
	}
	if stopping {
		return true
	}
	return !time.Now().Before(f.retryAt) && (tick || f.urgent || len(f.waiting) >= f.batch)
}

// count returns how many events wait for a write (or for the one in flight).
func (f *stateFlush) count() int {
	if f == nil {
		return 0
	}
	return len(f.waiting) + len(f.inflight)
}

// idle reports whether no write is in flight and none will be tried.
func (f *stateFlush) idle(stopping bool) bool {
	return f == nil || !f.busy && (len(f.waiting) == 0 || f.gaveUp)
}

// start writes the changed contacts' states. A stop does not cancel it:
// its context is ctx's values without its end, bounded by stateWriteTimeout.
func (f *stateFlush) start(ctx context.Context) {
	f.busy = true
	f.urgent = false
	f.inflight, f.waiting = f.waiting, nil
	f.writing = slices.Collect(maps.Keys(f.dirty))
	clear(f.dirty)
	go func(contacts []string) {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateWriteTimeout)
		defer cancel()
		f.results <- flushResult{err: f.states.write(wctx, f.partition, contacts)}
	}(f.writing)
}

// end takes the write's result and returns the events it finished; a
// failed write's events and contacts wait for the next, after a backoff
// (200 ms doubling to 5 s), or for none when stopping.
func (f *stateFlush) end(r flushResult, stopping bool) []int64 {
	f.busy = false
	if r.err == nil {
		f.failures = 0
		done := f.inflight
		f.inflight, f.writing = nil, nil
		return done
	}
	f.failures++
	f.failed.Inc()
	wait := min(200*time.Millisecond<<min(f.failures-1, 5), 5*time.Second)
	f.retryAt = time.Now().Add(wait)
	for _, c := range f.writing {
		f.dirty[c] = struct{}{}
	}
	f.urgent = true // after the backoff, at once: the write carried changes of parking, maybe
	f.waiting = append(f.waiting, f.inflight...)
	f.inflight, f.writing = nil, nil
	ev := f.log.Error().Err(r.err).Int32("partition", f.partition).Int("events", len(f.waiting))
	if stopping {
		f.gaveUp = true
		ev.Msg("writing the contacts' states failed while stopping: their events stay uncommitted, and are processed again by the partition's next owner")
		return nil
	}
	ev.Dur("retry_in", wait).Msg("writing the contacts' states failed, retrying")
	return nil
}

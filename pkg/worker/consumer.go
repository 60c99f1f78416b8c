package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/record"
)

// dispatcher is the sarama ConsumerGroupHandler: one ConsumeClaim per
// partition, run concurrently by sarama. Inside a partition, events of
// different keys (contacts) are applied concurrently and events of one key
// one after another in partition order; the offset marked for commit is the
// partition's watermark, so it never passes an event not yet applied or
// dead-lettered.
type dispatcher struct {
	proc *processor
	// active bounds the events active at once in the process, across its
	// partitions (activePerSlot × WORKER_MAX_IN_FLIGHT).
	active chan struct{}
	// buffer bounds one partition's records read and not finished, and
	// bufferBytes their size (keys, values and headers).
	buffer      int
	bufferBytes int
	// ordering is config.OrderingKey or config.OrderingPartition.
	ordering string
	// health, when set, stops the reading of new records during a fault of
	// the Contacts API as a whole.
	health *apiHealth
	// committed, when set, returns a partition's committed offset and its
	// metadata, so that records finished above it by the partition's last
	// owner are skipped.
	committed func(topic string, partition int32) (int64, string, error)
	// state, when set, keeps the contacts' states in the state topic: a
	// partition's are rebuilt before anything of it is applied, and an
	// event whose contact's state changed is finished only once its record
	// was written.
	state contactStates
	// partitions, when set, returns the events topic's partition count as
	// the brokers see it now (read at each session's start).
	partitions func(topic string) (int32, error)
	// eventPartitions is the events topic's partition count in the current
	// session: a record whose key belongs to another partition (placed by
	// a producer hashing otherwise, or before partitions were added) is
	// forwarded there, so each contact is handled in one partition.
	eventPartitions int32
	// topicID, when set, returns a topic's ID ("" from brokers without
	// topic IDs; an error for a topic unknown), and oldest a partition's
	// oldest offset: a commit made on a former topic of the same name is
	// not trusted (topicid.go).
	topicID func(topic string) (string, error)
	oldest  func(topic string, partition int32) (int64, error)
	// tid is the events topic's ID in the current session ("" unknown);
	// sessionCtx ends the session's partitions early, when the topic
	// changes under it (nil: the session's own context); commits are the
	// claimed partitions' committed offsets as Setup read them.
	tid        string
	sessionCtx context.Context
	endSession context.CancelFunc
	commits    map[int32]commit
}

// commit is a partition's committed offset and its metadata.
type commit struct {
	offset int64
	meta   string
}

// metadataInterval is how often a partition's commit metadata (its
// finished records above the watermark) is brought up to date.
const metadataInterval = 500 * time.Millisecond

func newDispatcher(proc *processor, w config.WorkerFleet, health *apiHealth) *dispatcher {
	return &dispatcher{proc: proc, buffer: w.PartitionBuffer, bufferBytes: w.PartitionBufferBytes, ordering: w.Ordering, health: health,
		active: make(chan struct{}, activePerSlot*w.MaxInFlight)}
}

// activePerSlot × WORKER_MAX_IN_FLIGHT events may be active at once in a
// process (started, and not waiting between retries): enough to keep every
// call slot busy, few enough that thousands of ready events (a partition
// buffer of distinct contacts on each partition) do not each hold a
// goroutine and its grown stack while they wait for a slot.
const activePerSlot = 2

// activeToken is an event's admission: held while it is active, given back
// while it waits between retries (so a waiting event holds nothing) and when
// it ends. Used by the event's goroutine only.
type activeToken struct {
	ch   chan struct{}
	held bool
}

type activeTokenKey struct{}

// release gives the token back, if held.
func (t *activeToken) release() {
	if t != nil && t.held {
		<-t.ch
		t.held = false
	}
}

// acquire takes the token again, or returns ctx's error.
func (t *activeToken) acquire(ctx context.Context) error {
	if t == nil || t.held {
		return nil
	}
	select {
	case t.ch <- struct{}{}:
		t.held = true
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tokenOf returns the token ctx carries, nil when none.
func tokenOf(ctx context.Context) *activeToken {
	t, _ := ctx.Value(activeTokenKey{}).(*activeToken)
	return t
}

// Setup reads the events topic's partition count and ID for the session:
// a partition whose committed offset was made on a former topic of the
// same name is read from its oldest offset, and the session ends if the
// topic changes under it.
func (h *dispatcher) Setup(s sarama.ConsumerGroupSession) error {
	h.proc.Log.Info().Interface("claims", s.Claims()).Int32("generation", s.GenerationID()).Str("member", s.MemberID()).Msg("partitions assigned")
	h.eventPartitions, h.tid, h.commits = 0, "", map[int32]commit{}
	h.sessionCtx, h.endSession = context.WithCancel(s.Context())
	if h.topicID != nil {
		for topic, claimed := range s.Claims() {
			if err := h.bindSession(s, topic, claimed); err != nil {
				return err
			}
		}
	}
	if h.partitions == nil {
		return nil
	}
	for topic, claimed := range s.Claims() {
		n, err := h.partitions(topic)
		if err != nil {
			return fmt.Errorf("partitions of %s: %w", topic, err)
		}
		for _, p := range claimed {
			if p >= n {
				return fmt.Errorf("partition %d of %s assigned, but the brokers' metadata says it has %d", p, topic, n)
			}
		}
		h.eventPartitions = n
	}
	return nil
}

// bindSession reads topic's ID and resets, to their oldest offsets, the
// claimed partitions whose committed offset names another topic ID.
func (h *dispatcher) bindSession(s sarama.ConsumerGroupSession, topic string, claimed []int32) error {
	// Not knowing the ID, or the committed offsets, a commit of a former
	// topic could not be told: read again until they are known (the
	// session's heartbeats go on meanwhile), rather than fail the session,
	// which would make the whole group rebalance again and again.
	var id string
	if err := h.untilRead(s.Context(), "the topic's ID", func() (err error) { id, err = h.topicID(topic); return err }); err != nil {
		return err
	}
	h.tid = id
	for _, p := range claimed {
		if h.committed == nil {
			break
		}
		var off int64
		var meta string
		if err := h.untilRead(s.Context(), "the committed offset", func() (err error) { off, meta, err = h.committed(topic, p); return err }); err != nil {
			return err
		}
		h.commits[p] = commit{off, meta}
		if was, _ := committedTopic(meta); formerTopic(was, id) {
			var oldest int64
			if err := h.untilRead(s.Context(), "the oldest offset", func() (err error) { oldest, err = h.oldest(topic, p); return err }); err != nil {
				return err
			}
			h.proc.Log.Error().Str("topic", topic).Int32("partition", p).Int64("committed", off).Str("committed_topic_id", was).Str("topic_id", id).Int64("from", oldest).
				Msg("committed offset belongs to a former topic of this name (deleted and created again): reading the partition from its oldest offset")
			s.ResetOffset(topic, p, oldest, bindTopic(id, ""))
		}
	}
	if id != "" {
		go h.watchTopic(h.sessionCtx, topic, id, h.endSession)
	}
	return nil
}

// committedOf returns the partition's committed offset and metadata: as
// Setup read them this session, else read now.
func (h *dispatcher) committedOf(topic string, partition int32) (int64, string, error) {
	if c, ok := h.commits[partition]; ok {
		return c.offset, c.meta, nil
	}
	return h.committed(topic, partition)
}

// untilRead calls read until it succeeds (200 ms growing to 5 s between
// tries, each failure logged) or ctx ends (then an error naming what).
func (h *dispatcher) untilRead(ctx context.Context, what string, read func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 200*time.Millisecond, 5*time.Second, 0
	tries := 0
	return backoff.RetryNotify(read, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		tries++
		ev := h.proc.Log.Warn()
		if tries >= 5 { // no longer a broker restarting: its partitions are not read meanwhile
			ev = h.proc.Log.Error()
		}
		ev.Err(err).Int("tries", tries).Dur("retry_in", wait).Msgf("reading %s at the session's start; its partitions wait", what)
	})
}

// Cleanup commits what was marked before the session ends (rebalance or stop).
func (h *dispatcher) Cleanup(s sarama.ConsumerGroupSession) error {
	if h.endSession != nil {
		h.endSession()
	}
	s.Commit()
	h.proc.Log.Info().Int32("generation", s.GenerationID()).Msg("session ended, offsets committed")
	return nil
}

// finished is what became of one event, reported back to its partition's loop.
type finished struct {
	msg     *sarama.ConsumerMessage
	outcome eventOutcome
	// change: whether the contact's state changed, so the event is
	// finished only once the state's record is written.
	change stateChange
}

// ConsumeClaim runs one partition until it is revoked or the session ends:
// it reads records while fewer than the buffer bound are unfinished (and the
// Contacts API is not out), queues each behind the unfinished events of its
// key, starts a key's next event when the one before it finished, and marks
// the watermark as events finish. On revocation or stop it starts nothing
// more, cancels the events in flight (abandoned: neither applied nor
// committed) and returns only once every one of them has returned, so a
// contact is never applied by this member and the partition's next owner
// at once.
func (h *dispatcher) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	ctx, cancel := context.WithCancel(cmp.Or(h.sessionCtx, s.Context()))
	defer cancel()
	topic, partition := claim.Topic(), claim.Partition()
	labels := []string{topic, strconv.Itoa(int(partition))}
	m := h.proc.Metrics
	lag, buffered, wmLag := m.lag.WithLabelValues(labels...), m.buffered.WithLabelValues(labels...), m.watermarkLag.WithLabelValues(labels...)
	oldest := m.oldestUnfinished.WithLabelValues(labels...)
	defer m.buffered.DeleteLabelValues(labels...)
	defer m.watermarkLag.DeleteLabelValues(labels...)
	defer m.oldestUnfinished.DeleteLabelValues(labels...)
	defer m.lag.DeleteLabelValues(labels...) // a partition this member no longer holds reports nothing (a fleet sum would count it twice)

	if h.state != nil {
		if !h.load(ctx, partition) {
			return nil // the session ended first
		}
		defer h.state.drop(partition)
	}
	var flush *stateFlush
	if h.state != nil {
		flush = newStateFlush(h.state, partition, flushBatch, m.stateWriteFailures, h.proc.Log)
	}
	wm := newWatermark()
	var finishedBefore func(int64) bool
	if h.committed != nil {
		off, meta, err := h.committedOf(topic, partition)
		switch {
		case err != nil:
			h.proc.Log.Warn().Err(err).Int32("partition", partition).Msg("reading the committed metadata; records finished above the committed offset will be applied again")
		case off == claim.InitialOffset():
			if id, rest := committedTopic(meta); id == "" || id == h.tid {
				finishedBefore = finishedAbove(rest, off)
			}
		}
	}
	queues := map[string][]*sarama.ConsumerMessage{} // per key: the event in flight first, then those waiting
	readAt := map[int64]time.Time{}                  // records read and not finished: their timestamps
	setOldest := func() {
		var first time.Time
		for _, at := range readAt {
			if first.IsZero() || at.Before(first) {
				first = at
			}
		}
		if first.IsZero() {
			oldest.Set(0)
		} else {
			oldest.Set(max(0, time.Since(first).Seconds()))
		}
	}
	done := make(chan finished)
	running := 0 // events started whose goroutine has not reported back
	stopping := false
	stop := func() {
		if !stopping {
			stopping = true
			cancel()
		}
	}
	// An event starts as soon as its key has nothing unfinished before it;
	// its calls to the Contacts API wait for a slot of the process's call
	// gate, its waits between retries hold none.
	bufferedBytes := 0 // of the records read and not finished
	// ready are the events whose key has nothing unfinished before them, in
	// the order they became ready; each starts once it gets an admission
	// token (the process's active bound): no goroutine before that.
	var ready []*sarama.ConsumerMessage
	var start func(*sarama.ConsumerMessage)
	// admitReady starts the ready events while admissions are free, without
	// a trip through the loop's select for each.
	admitReady := func() {
		for len(ready) > 0 && !stopping {
			select {
			case h.active <- struct{}{}:
				start(ready[0])
				ready[0] = nil
				ready = ready[1:]
			default:
				return
			}
		}
	}
	start = func(msg *sarama.ConsumerMessage) { // the caller took a token
		running++
		go func() {
			tok := &activeToken{ch: h.active, held: true}
			var f finished
			if h.misplaced(msg) {
				f = finished{msg, h.forward(context.WithValue(ctx, activeTokenKey{}, tok), msg), stateUnchanged}
			} else {
				out, change := h.proc.Process(context.WithValue(ctx, activeTokenKey{}, tok), msg)
				f = finished{msg, out, change}
			}
			tok.release()
			done <- f
		}()
	}
	marked, markedMeta := int64(-1), ""
	plainMeta := bindTopic(h.tid, "") // a mark's metadata: the topic's ID alone
	mark := func() {
		off, ok := wm.commit()
		if !ok {
			return
		}
		if off > marked {
			s.MarkOffset(topic, partition, off, plainMeta) // metadata of an older watermark would not fit this one
			marked, markedMeta = off, ""
		}
		wmLag.Set(float64(wm.next - off))
		lag.Set(float64(claim.HighWaterMarkOffset() - off))
		buffered.Set(float64(wm.pending() - flush.count()))
	}
	// markMetadata records the finished records above the watermark with
	// it; ResetOffset, as MarkOffset changes nothing at the same offset.
	markMetadata := func() {
		if off, ok := wm.commit(); ok && off == marked {
			if meta := wm.metadata(); meta != markedMeta {
				s.ResetOffset(topic, partition, off, bindTopic(h.tid, meta))
				markedMeta = meta
			}
		}
	}
	tick := time.NewTicker(metadataInterval)
	defer tick.Stop()
	var flushTick <-chan time.Time
	if flush != nil {
		t := time.NewTicker(flushInterval)
		defer t.Stop()
		flushTick = t.C
	}
	messages := claim.Messages()
	var faultReadAt time.Time // during a fault, when the next record may be read
	for {
		if stopping && running == 0 && flush.idle(true) {
			mark()
			markMetadata()
			return nil
		}
		var flushed <-chan flushResult
		if flush != nil {
			if flush.due(stopping, false) {
				flush.start(ctx)
			}
			flushed = flush.results
		}
		var in <-chan *sarama.ConsumerMessage
		var resumed <-chan struct{}
		var probeRead <-chan time.Time
		switch {
		// Events finished but for their contact's state record hold no
		// record (only their offset): they do not count against the buffer,
		// but against a bound of their own, stateWaitingMax (a state topic
		// that refuses writes must not let them grow without end).
		case stopping || wm.pending()-flush.count() >= h.buffer || flush.count() >= stateWaitingMax ||
			h.bufferBytes > 0 && bufferedBytes >= h.bufferBytes:
		case h.health != nil && h.health.Out() && running+len(ready) > 0:
			// During a fault of the API the events in progress probe it; with
			// none (a new session after a rebalance) one record is taken, so a
			// probe still happens and the fault can end. One more record is
			// taken per probe interval: if the events in progress are of
			// contacts failing on their own, a fault they made up would
			// otherwise hold the partition for good.
			resumed = h.health.Ended()
			if wait := time.Until(faultReadAt); wait <= 0 {
				in = messages
			} else {
				probeRead = time.After(wait)
			}
		default:
			in = messages
		}
		var ended <-chan struct{}
		if !stopping {
			ended = ctx.Done() // once stopping, only the events' returns are awaited
		}
		var admit chan<- struct{}
		if len(ready) > 0 && !stopping {
			admit = h.active
		}
		select {
		case admit <- struct{}{}:
			start(ready[0])
			ready[0] = nil
			ready = ready[1:]
		case msg, ok := <-in:
			if !ok { // revoked, or the session is ending
				stop()
				continue
			}
			wm.read(msg.Offset)
			if h.health != nil && h.health.Out() {
				faultReadAt = time.Now().Add(h.health.cfg.ProbeInterval)
			}
			if finishedBefore != nil && finishedBefore(msg.Offset) {
				wm.finish(msg.Offset) // finished by this partition's last owner
				m.skipped.Inc()
				mark()
				continue
			}
			k := h.key(msg)
			queues[k] = append(queues[k], msg)
			if !msg.Timestamp.IsZero() && msg.Timestamp.Unix() > 0 {
				readAt[msg.Offset] = msg.Timestamp
			}
			bufferedBytes += recordSize(msg)
			if len(queues[k]) == 1 {
				ready = append(ready, msg)
				admitReady()
			}
			mark()
		case f := <-done:
			running--
			bufferedBytes -= recordSize(f.msg)
			delete(readAt, f.msg.Offset)
			if f.outcome == outcomeAbandoned {
				stop() // the session is ending; the event stays unfinished, uncommitted
				continue
			}
			if f.change != stateUnchanged {
				flush.add(string(f.msg.Key), f.msg.Offset, f.change == stateChangedParking) // finished once written
			} else {
				wm.finish(f.msg.Offset)
				mark()
			}
			k := h.key(f.msg)
			if q := queues[k][1:]; len(q) > 0 {
				queues[k] = q
				ready = append(ready, q[0])
			} else {
				delete(queues, k)
			}
			admitReady() // this event's admission is free again
		case r := <-flushed:
			for _, o := range flush.end(r, stopping) {
				wm.finish(o)
			}
			mark()
		case <-flushTick:
			if flush.due(stopping, true) {
				flush.start(ctx)
			}
		case <-tick.C:
			markMetadata()
			setOldest()
		case <-resumed:
		case <-probeRead:
		case <-ended:
			stop()
		}
	}
}

// load rebuilds the partition's contact states, again until it works or
// ctx ends (false): nothing of the partition may be applied without them.
func (h *dispatcher) load(ctx context.Context, partition int32) bool {
	b := backoff.NewExponentialBackOff()
	b.MaxElapsedTime = 0
	err := backoff.RetryNotify(func() error { return h.state.load(ctx, partition, h.eventPartitions) }, backoff.WithContext(b, ctx),
		func(err error, wait time.Duration) {
			h.proc.Log.Error().Err(err).Int32("partition", partition).Dur("retry_in", wait).Msg("reading the contacts' states failed, retrying")
		})
	return err == nil
}

// recordSize is what a record read holds in memory, near enough: its key,
// value and headers, and the structures around them.
func recordSize(m *sarama.ConsumerMessage) int {
	n := 256 + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += 32 + len(h.Key) + len(h.Value)
	}
	return n
}

// misplaced reports whether msg's key belongs to another partition of the
// events topic than the one it was read from.
func (h *dispatcher) misplaced(msg *sarama.ConsumerMessage) bool {
	return h.state != nil && h.eventPartitions > 0 && len(msg.Key) > 0 &&
		contactstate.Partition(msg.Key, h.eventPartitions) != msg.Partition
}

// forward writes msg, unchanged, to the partition its key belongs to.
func (h *dispatcher) forward(ctx context.Context, msg *sarama.ConsumerMessage) eventOutcome {
	to := contactstate.Partition(msg.Key, h.eventPartitions)
	id, eventType := record.Identity(msg)
	if err := h.state.forward(ctx, msg, to); err != nil {
		if errors.Is(err, errTooLarge) {
			// Never to be moved: kept in the DLQ (replayable: the replay
			// puts it back by its key's hash), its contact parked nowhere.
			log := h.proc.Log.With().Str("event_id", id).Int32("partition", msg.Partition).Int64("offset", msg.Offset).Logger()
			return h.proc.deadLetter(ctx, log, msg, eventType, record.Failure{Kind: record.KindInvalid,
				Err: fmt.Errorf("record contract: read from partition %d, its key's is %d, and it cannot be forwarded there: %w", msg.Partition, to, err)}).out
		}
		h.proc.Log.Warn().Err(err).Str("event_id", id).Int32("partition", msg.Partition).Int64("offset", msg.Offset).Msg("abandoned before the forwarded record was acknowledged; not committed")
		return outcomeAbandoned
	}
	h.proc.Metrics.events.WithLabelValues(eventTypeLabel(eventType), string(outcomeForwarded)).Inc()
	h.proc.Log.Info().Str("event_id", id).Int32("partition", msg.Partition).Int64("offset", msg.Offset).Int32("to_partition", to).
		Msg("forwarded to the partition its key belongs to")
	return outcomeForwarded
}

// key is what orders events: the record key (contact id) by default, or
// nothing, so the whole partition is one sequence.
func (h *dispatcher) key(msg *sarama.ConsumerMessage) string {
	if h.ordering == config.OrderingPartition {
		return ""
	}
	return string(msg.Key)
}

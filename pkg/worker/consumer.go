package worker

import (
	"context"
	"strconv"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/config"
)

// groupHandler is the sarama consumer-group handler: one ConsumeClaim per
// partition, run concurrently by sarama. Inside a partition, events of
// different keys (contacts) are applied concurrently and events of one key
// one after another in partition order; the offset marked for commit is the
// partition's watermark, so it never passes an event not yet applied or
// dead-lettered.
type groupHandler struct {
	proc *Processor
	// slots bounds the events being applied at once by this process, across
	// every partition and session.
	slots chan struct{}
	// buffer bounds one partition's records read and not finished.
	buffer int
	// ordering is config.OrderingKey or config.OrderingPartition.
	ordering string
	// outage, when set, stops the reading of new records while the API is out.
	outage *OutageDetector
}

func newGroupHandler(proc *Processor, w config.WorkerFleet, outage *OutageDetector) *groupHandler {
	return &groupHandler{proc: proc, slots: make(chan struct{}, w.MaxInFlight), buffer: w.PartitionBuffer, ordering: w.Ordering, outage: outage}
}

func (h *groupHandler) Setup(s sarama.ConsumerGroupSession) error {
	h.proc.Log.Info().Interface("claims", s.Claims()).Int32("generation", s.GenerationID()).Str("member", s.MemberID()).Msg("partitions assigned")
	return nil
}

// Cleanup commits what was marked before the session ends (rebalance or stop).
func (h *groupHandler) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	h.proc.Log.Info().Int32("generation", s.GenerationID()).Msg("session ended, offsets committed")
	return nil
}

// finished is what became of one event, reported back to its partition's loop.
type finished struct {
	msg     *sarama.ConsumerMessage
	outcome Outcome
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
func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	ctx, cancel := context.WithCancel(s.Context())
	defer cancel()
	topic, partition := claim.Topic(), claim.Partition()
	labels := []string{topic, strconv.Itoa(int(partition))}
	m := h.proc.Metrics
	lag, buffered, wmLag := m.lag.WithLabelValues(labels...), m.buffered.WithLabelValues(labels...), m.watermarkLag.WithLabelValues(labels...)
	defer m.buffered.DeleteLabelValues(labels...)
	defer m.watermarkLag.DeleteLabelValues(labels...)

	wm := newWatermark()
	queues := map[string][]*sarama.ConsumerMessage{} // per key: the event in flight first, then those waiting
	done := make(chan finished)
	running := 0 // events started whose goroutine has not reported back
	stopping := false
	stop := func() {
		if !stopping {
			stopping = true
			cancel()
		}
	}
	start := func(msg *sarama.ConsumerMessage) {
		running++
		go func() { done <- finished{msg, h.apply(ctx, msg)} }()
	}
	mark := func() {
		if off, ok := wm.commit(); ok {
			s.MarkOffset(topic, partition, off, "")
			wmLag.Set(float64(wm.next - off))
			lag.Set(float64(claim.HighWaterMarkOffset() - off))
		}
		buffered.Set(float64(wm.pending()))
	}
	messages := claim.Messages()
	for {
		if stopping && running == 0 {
			mark()
			return nil
		}
		var in <-chan *sarama.ConsumerMessage
		var resumed <-chan struct{}
		switch {
		case stopping || wm.pending() >= h.buffer:
		case h.outage != nil && h.outage.Out():
			resumed = h.outage.Ended()
		default:
			in = messages
		}
		select {
		case msg, ok := <-in:
			if !ok { // revoked, or the session is ending
				stop()
				continue
			}
			wm.read(msg.Offset)
			k := h.key(msg)
			queues[k] = append(queues[k], msg)
			if len(queues[k]) == 1 {
				start(msg)
			}
			buffered.Set(float64(wm.pending()))
		case f := <-done:
			running--
			if f.outcome == Abandoned {
				stop() // the session is ending; the event stays unfinished, uncommitted
				continue
			}
			wm.finish(f.msg.Offset)
			mark()
			k := h.key(f.msg)
			if q := queues[k][1:]; len(q) > 0 {
				queues[k] = q
				if !stopping {
					start(q[0])
				}
			} else {
				delete(queues, k)
			}
		case <-resumed:
		case <-ctx.Done():
			stop()
		}
	}
}

// apply waits for a slot of the process-wide bound, then processes the event.
func (h *groupHandler) apply(ctx context.Context, msg *sarama.ConsumerMessage) Outcome {
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return Abandoned
	}
	h.proc.Metrics.inFlight.Inc()
	defer func() {
		h.proc.Metrics.inFlight.Dec()
		<-h.slots
	}()
	return h.proc.Process(ctx, msg)
}

// key is what orders events: the record key (contact id) by default, or
// nothing, so the whole partition is one sequence.
func (h *groupHandler) key(msg *sarama.ConsumerMessage) string {
	if h.ordering == config.OrderingPartition {
		return ""
	}
	return string(msg.Key)
}

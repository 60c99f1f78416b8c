package worker

import (
	"strconv"

	"github.com/IBM/sarama"
)

// groupHandler is the sarama consumer-group handler: one ConsumeClaim per
// partition, run concurrently by sarama; inside a partition, events are
// applied one after another, so each contact's events (one key, one
// partition) are applied in partition order, and an offset is marked only
// after its event was applied or dead-lettered, so the committed offset
// never passes an unapplied event.
type groupHandler struct {
	proc *Processor
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

func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	lag := h.proc.Metrics.lag.WithLabelValues(claim.Topic(), strconv.Itoa(int(claim.Partition())))
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if h.proc.Process(s.Context(), m) == Abandoned {
				return nil // the session is ending; the event stays uncommitted
			}
			s.MarkMessage(m, "")
			lag.Set(float64(claim.HighWaterMarkOffset() - m.Offset - 1))
		case <-s.Context().Done():
			return nil
		}
	}
}

package worker

import (
	"context"
	"slices"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/parking"
	"github.com/acmecrm/integration-service/pkg/record"
)

// parkingState keeps each contact's events in order through the DLQ. Once an
// event of a contact is dead-lettered (any kind), the contact is parked
// behind it: its later events are written to the DLQ in order (kind
// parked, dlq_parked_behind the head) and not applied, until a replay
// brings the head back and it is applied; the events parked behind it
// follow in their order, and the contact is released once none is left.
// Which contacts are parked is written to the parked topic before the
// event's offset can be committed, and is read back by whoever holds the
// partition next.
type parkingState struct {
	Store *parking.Store
	// Writer writes a contact's record to the parked topic, to the
	// partition of its events.
	Writer *publisher
}

// process is Process for a record that has a contact (its key).
func (pk *parkingState) process(ctx context.Context, p *processor, log zerolog.Logger, m *sarama.ConsumerMessage, id string) eventOutcome {
	e, _ := pk.Store.Get(m.Partition, string(m.Key))
	e.ContactID = string(m.Key)
	replayed := record.ReplayCount(m.Headers) > 0
	switch {
	case replayed && e.WasReleased(id):
		// Applied by a release already: a copy delivered again, or an
		// older DLQ copy replayed later, must not write older data.
		p.Metrics.events.WithLabelValues("unknown", string(outcomeAlreadyApplied)).Inc()
		log.Warn().Str("contact_id", e.ContactID).Msg("replayed copy of an event a release already applied: not applied again")
		return outcomeAlreadyApplied

	case record.IsDiscard(m) || e.IsDiscarded(id):
		// Never applied. A discard of the head releases what follows it.
		if record.IsDiscard(m) && !e.IsDiscarded(id) {
			e.Discarded = append(e.Discarded, id)
			if e.Head() == id {
				e.Events = e.Events[1:]
			}
			if !pk.write(ctx, p, log, m, e) {
				return outcomeAbandoned
			}
		}
		return p.discarded(log, id)

	case !e.Parked():
		out, kind := p.apply(ctx, log, m, record.Failure{})
		if out != outcomeDeadLettered {
			return out
		}
		e.Events, e.HeadKind, e.Since = []string{id}, string(kind), p.Now().UTC()
		if !pk.write(ctx, p, log, m, e) {
			return outcomeAbandoned
		}
		log.Warn().Str("contact_id", e.ContactID).Msg("contact parked: its later events wait in the DLQ behind this one until a replay")
		return outcomeDeadLettered

	case e.Head() == id && replayed:
		// The head, brought back by a replay: apply it; the events parked
		// behind it come next in the partition, in their order.
		out, kind := p.apply(ctx, log, m, record.Failure{})
		switch out {
		case outcomeApplied:
			e.Release()
		case outcomeDeadLettered: // failed again: still parked, behind its new copy
			e.HeadKind, e.Since = string(kind), p.Now().UTC()
		default:
			return out
		}
		if !pk.write(ctx, p, log, m, e) {
			return outcomeAbandoned
		}
		if !e.Parked() {
			log.Info().Str("contact_id", e.ContactID).Msg("contact released: every parked event applied")
		}
		return out

	default:
		// Live, or replayed out of turn: wait behind the head, in order.
		f := record.Failure{Err: errParked(e.Head()), Kind: record.KindParked, ParkedBehind: e.Head(), FailedAt: p.Now(), Group: p.Group}
		if err := p.DeadLetterer.DeadLetter(ctx, m, f); err != nil {
			return outcomeAbandoned
		}
		if !slices.Contains(e.Events, id) {
			e.Events = append(e.Events, id)
			if !pk.write(ctx, p, log, m, e) {
				return outcomeAbandoned
			}
		}
		p.Metrics.parkedEvents.Inc()
		p.Metrics.deadLettered.WithLabelValues(string(record.KindParked)).Inc()
		_, eventType := record.Identity(m)
		p.Metrics.events.WithLabelValues(eventTypeLabel(eventType), string(outcomeParked)).Inc()
		log.Warn().Str("contact_id", e.ContactID).Str("parked_behind", e.Head()).Int("parked_events", len(e.Events)).Msg("parked behind the contact's dead-lettered event")
		return outcomeParked
	}
}

// write records e on the parked topic, then in the store; false when ctx
// ended first (the event is then abandoned: not committed).
func (pk *parkingState) write(ctx context.Context, p *processor, log zerolog.Logger, m *sarama.ConsumerMessage, e parking.Entry) bool {
	err := pk.Writer.Publish(ctx, m, func() *sarama.ProducerMessage { return parking.Message(pk.Writer.Topic, m.Partition, e) })
	if err != nil {
		log.Warn().Err(err).Msg("abandoned before the parked state was written; not committed")
		return false
	}
	pk.Store.Put(m.Partition, e)
	p.Metrics.parked.Set(float64(pk.Store.Parked()))
	return true
}

type errParked string

func (e errParked) Error() string {
	return "parked behind " + string(e) + ", its contact's unresolved dead-lettered event"
}

func eventTypeLabel(t string) string {
	if t == "" {
		return "unknown"
	}
	return t
}

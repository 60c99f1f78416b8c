package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/contacts"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/pkg/telemetry"
)

// contactsAPI is what the handlers need of the Contacts API.
type contactsAPI interface {
	Put(ctx context.Context, c contacts.Contact, idempotencyKey string) error
	Delete(ctx context.Context, contactID, idempotencyKey string) error
}

// call applies ev to the Contacts API, with the event id as the
// idempotency key so that a redelivered event changes nothing. Parse has
// refused every other event type.
func call(ctx context.Context, api contactsAPI, ev acmecrm.Event) error {
	if ev.EventType == acmecrm.ContactDeleted {
		return api.Delete(ctx, ev.Data.ContactID, ev.EventID)
	}
	return api.Put(ctx, contacts.FromEvent(ev), ev.EventID) // created, updated
}

// deadLetterer publishes the dead-letter record of a failed event; it
// returns nil once Kafka acknowledged it, or ctx's error.
type deadLetterer interface {
	DeadLetter(ctx context.Context, m *sarama.ConsumerMessage, f record.Failure) error
}

// eventOutcome is what became of an event.
type eventOutcome string

// The outcomes of Process.
const (
	outcomeApplied      eventOutcome = "applied"
	outcomeDeadLettered eventOutcome = "dead_lettered"
	outcomeAbandoned    eventOutcome = "abandoned"
	// outcomeParked: written to the DLQ behind its contact's unresolved head, not tried.
	outcomeParked eventOutcome = "parked"
	// outcomeDiscarded: an SRE dropped it; never applied.
	outcomeDiscarded eventOutcome = "discarded"
	// outcomeAlreadyApplied: a replayed copy of an event a release applied before.
	outcomeAlreadyApplied eventOutcome = "already_applied"
)

// processor applies one event: parse, call the Contacts API, retry
// transient failures, dead-letter what cannot be applied.
type processor struct {
	// API is the Contacts API the events are applied to.
	API     contactsAPI
	Retrier *retrier
	// Outage, when set, is told of every call's result.
	Outage       *outageDetector
	DeadLetterer deadLetterer
	// Parking, when set, keeps each contact's order through the DLQ.
	Parking *parkingState
	Group   string
	Metrics *Metrics
	// Tracer makes the span of each event (the child of the span that wrote
	// its record), of each attempt, and of its dead letter.
	Tracer trace.Tracer
	Log    zerolog.Logger
	Now    func() time.Time
}

// Process returns Applied, DeadLettered, Parked or Discarded when the
// event's offset may be committed, and Abandoned when ctx ended first
// (shutdown or the partition revoked): the event is then neither applied
// nor dead-lettered, and another member will get it again.
func (p *processor) Process(ctx context.Context, m *sarama.ConsumerMessage) (out eventOutcome) {
	id, _ := record.Identity(m)
	ctx, span := telemetry.StartProcess(ctx, p.Tracer, m, p.Group, trace.WithAttributes(telemetry.EventID(id), telemetry.ContactID(string(m.Key))))
	defer func() {
		span.SetAttributes(telemetry.Outcome(string(out)))
		if out == outcomeDeadLettered {
			span.SetStatus(codes.Error, "dead-lettered")
		}
		span.End()
	}()
	lc := p.Log.With().Str("event_id", id).Int32("partition", m.Partition).Int64("offset", m.Offset)
	if traceID, spanID := telemetry.IDs(ctx); traceID != "" {
		lc = lc.Str("trace_id", traceID).Str("span_id", spanID)
	}
	log := lc.Logger()
	if record.ReplayCount(m.Headers) > 0 {
		p.Metrics.replayed.Inc()
	}
	if p.Parking == nil || len(m.Key) == 0 {
		if record.IsDiscard(m) {
			return p.discarded(log, id)
		}
		out, _ := p.apply(ctx, log, m, record.Failure{})
		return out
	}
	return p.Parking.process(ctx, p, log, m, id)
}

// apply parses, applies, retries and dead-letters one event (f carries what
// a dead letter must say beyond the failure); it returns the outcome and,
// for a dead letter, its kind.
func (p *processor) apply(ctx context.Context, log zerolog.Logger, m *sarama.ConsumerMessage, f record.Failure) (eventOutcome, record.Kind) {
	ev, err := acmecrm.Parse(m.Value)
	if err != nil {
		f.Err, f.Kind = fmt.Errorf("unparseable event: %w", err), record.KindInvalid
		return p.deadLetter(ctx, log, m, "", f), f.Kind
	}
	start := p.Now()
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(telemetry.EventType(ev.EventType))
	attempt := 0
	attempts, err := p.Retrier.Do(ctx, func(ctx context.Context) error {
		attempt++
		ctx, span := telemetry.Or(p.Tracer).Start(ctx, "apply "+ev.EventType, trace.WithAttributes(telemetry.Attempts(attempt)))
		err := call(ctx, p.API, ev)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		if p.Outage != nil {
			p.Outage.Record(ctx, ev.Data.ContactID, err)
		}
		return err
	},
		func(attempt int, err error, wait time.Duration) {
			p.Metrics.retries.WithLabelValues(ev.EventType).Inc()
			log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("transient failure, retrying")
		})
	p.Metrics.applyDuration.WithLabelValues(ev.EventType).Observe(p.Now().Sub(start).Seconds())
	span.SetAttributes(telemetry.Attempts(attempts))
	f.Err, f.Attempts = err, attempts
	switch {
	case err == nil:
		p.Metrics.events.WithLabelValues(ev.EventType, string(outcomeApplied)).Inc()
		log.Info().Str("event_type", ev.EventType).Int("attempts", attempts).Msg("applied")
		return outcomeApplied, ""
	case ctx.Err() != nil:
		p.Metrics.events.WithLabelValues(ev.EventType, string(outcomeAbandoned)).Inc()
		log.Info().Int("attempts", attempts).Msg("abandoned: stopping or partition revoked; not committed")
		return outcomeAbandoned, ""
	case errors.Is(err, errRetriesExhausted):
		f.Kind = record.KindTransient
	default:
		f.Kind = record.KindPermanent
	}
	return p.deadLetter(ctx, log, m, ev.EventType, f), f.Kind
}

func (p *processor) discarded(log zerolog.Logger, id string) eventOutcome {
	p.Metrics.events.WithLabelValues("unknown", string(outcomeDiscarded)).Inc()
	log.Warn().Str("discarded", id).Msg("discarded by an SRE: not applied")
	return outcomeDiscarded
}

func (p *processor) deadLetter(ctx context.Context, log zerolog.Logger, m *sarama.ConsumerMessage, eventType string, f record.Failure) eventOutcome {
	f.FailedAt, f.Group = p.Now(), p.Group
	if eventType == "" {
		eventType = "unknown"
	}
	if err := p.DeadLetterer.DeadLetter(ctx, m, f); err != nil {
		p.Metrics.events.WithLabelValues(eventType, string(outcomeAbandoned)).Inc()
		log.Warn().Err(err).Msg("abandoned before the dead-letter record was acknowledged; not committed")
		return outcomeAbandoned
	}
	p.Metrics.events.WithLabelValues(eventType, string(outcomeDeadLettered)).Inc()
	p.Metrics.deadLettered.WithLabelValues(string(f.Kind)).Inc()
	log.Error().Err(f.Err).Str("kind", string(f.Kind)).Int("attempts", f.Attempts).Msg("dead-lettered")
	return outcomeDeadLettered
}

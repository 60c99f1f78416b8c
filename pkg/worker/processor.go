package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/contacts"
	"github.com/acmecrm/integration-service/pkg/contactstate"
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
// returns where it was written once Kafka acknowledged it, or ctx's error.
type deadLetterer interface {
	DeadLetter(ctx context.Context, m *sarama.ConsumerMessage, f record.Failure) (contactstate.Position, error)
}

// effect is what carrying a verdict out did: the outcome, and for a dead
// letter or a parked record, its kind and where in the DLQ it was written.
type effect struct {
	out  eventOutcome
	kind record.Kind
	at   *contactstate.Position
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
	// outcomeStale: older than the newest event applied to its contact; never applied.
	outcomeStale eventOutcome = "stale"
	// outcomeForwarded: read from a partition its key does not belong to,
	// and written, unchanged, to the one it does.
	outcomeForwarded eventOutcome = "forwarded"
)

// guard configures the stale-event guard.
type guard struct {
	// MaxClockSkew is how far an event's timestamp may be ahead of its
	// arrival (received_at); beyond, it is invalid: as the newest, it
	// would make every later event of its contact stale.
	MaxClockSkew time.Duration
}

// processor applies one event: decide from the contact's state, call the
// Contacts API, retry transient failures, dead-letter what cannot be
// applied, park what waits behind a dead letter, and keep the contact's
// state.
type processor struct {
	// API is the Contacts API the events are applied to.
	API     contactsAPI
	Retrier *retrier
	// Health, when set, is told of every call's result.
	Health       *apiHealth
	DeadLetterer deadLetterer
	// State, when set, keeps each contact's state (newest event applied,
	// parking); the caller writes a changed state to the state topic.
	State   *contactstate.Store
	Guard   guard
	Group   string
	Metrics *Metrics
	// Tracer makes the span of each event (the child of the span that wrote
	// its record), of each attempt, and of its dead letter.
	Tracer trace.Tracer
	Log    zerolog.Logger
	Now    func() time.Time
}

// stateChange says whether an event changed its contact's state, and
// whether the change concerns parking.
type stateChange uint8

const (
	stateUnchanged stateChange = iota
	// stateChanged: the record must be written before the event's offset
	// is committed; writes are batched (flushInterval).
	stateChanged
	// stateChangedParking: the contact was or is parked. Operators read
	// parking from the state topic (--replay-list-parked, a release right
	// after a dead letter), so the record is written at once.
	stateChangedParking
)

// Process returns what became of the event, and whether its contact's
// state changed (then its record must be written before the event's
// offset is committed). Applied, DeadLettered, Parked, Discarded and Stale
// let the offset be committed; Abandoned means ctx ended first (shutdown or
// the partition revoked): the event was neither applied nor dead-lettered,
// and another member will get it again.
func (p *processor) Process(ctx context.Context, m *sarama.ConsumerMessage) (out eventOutcome, change stateChange) {
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
	f := p.facts(m, id)
	contact := string(m.Key)
	keep := p.State != nil && contact != ""
	var s contactstate.State
	if keep {
		s = p.State.Get(m.Partition, contact)
	}
	// A parked contact's head put back by a release, or an SRE's discard,
	// is decided below whatever it holds: the contact waits on it (a head
	// parked before these checks existed).
	headBack := f.Discard || s.IsParked() && f.Replayed && s.Parked.Head.EventID == f.ID
	if breach := contractBreach(m, f); breach != nil && !headBack {
		// invalid (SPEC), but parking no contact behind it.
		r := p.deadLetter(ctx, log, m, f.Event.EventType, record.Failure{Kind: record.KindInvalid, Err: breach})
		p.observeAge(m, f, r.out)
		return r.out, stateUnchanged
	}
	if f.Invalid == nil && !f.Event.Known() && !headBack {
		// A type AcmeCRM added: kept in the DLQ for a release that applies
		// it, its contact neither parked nor changed.
		r := p.deadLetter(ctx, log, m, f.Event.EventType, record.Failure{Kind: record.KindUnsupported,
			Err: fmt.Errorf("event_type %q is not one this worker applies (%s, %s, %s): kept for a replay (--replay-event-type %s) by a release that does", f.Event.EventType, acmecrm.ContactCreated, acmecrm.ContactUpdated, acmecrm.ContactDeleted, f.Event.EventType)})
		p.observeAge(m, f, r.out)
		return r.out, stateUnchanged
	}
	v := decide(s, f)
	r := p.carryOut(ctx, log, span, m, f, s, v)
	p.observeAge(m, f, r.out)
	if !keep || r.out == outcomeAbandoned {
		return r.out, stateUnchanged
	}
	n := next(s, f, v, r, p.Now().UTC())
	if n.Equal(s) {
		return r.out, stateUnchanged
	}
	p.State.Put(m.Partition, contact, n)
	p.Metrics.parked.Set(float64(p.State.Parked()))
	p.Metrics.contacts.Set(float64(p.State.Contacts()))
	switch {
	case !s.IsParked() && n.IsParked():
		log.Warn().Str("contact_id", contact).Msg("contact parked: its later events wait in the DLQ behind this one until a replay")
	case s.IsParked() && !n.IsParked():
		log.Info().Str("contact_id", contact).Str("head", s.Parked.Head.EventID).Msg("contact released")
	case (v == verdictApplyHead || v == verdictDiscard) && r.out != outcomeDeadLettered && n.IsParked():
		log.Warn().Str("contact_id", contact).Str("head", s.Parked.Head.EventID).
			Msg("head put back without the records parked behind it since the release read the DLQ: the contact stays parked; release it again")
	}
	if s.IsParked() || n.IsParked() {
		return r.out, stateChangedParking
	}
	return r.out, stateChanged
}

// observeAge records how old the event was when it was finished (out), from
// its arrival at the gateway.
func (p *processor) observeAge(m *sarama.ConsumerMessage, f facts, out eventOutcome) {
	if out == outcomeAbandoned {
		return
	}
	if !f.Arrived.IsZero() {
		p.Metrics.eventAge.WithLabelValues(eventTypeLabel(f.Event.EventType), string(out)).Observe(p.Now().Sub(f.Arrived).Seconds())
	}
}

// contractBreach says how record m breaks the events topic's record
// contract (SPEC: keyed by data.contact_id, a JSON event as its value),
// nil when it does not. Such a record belongs to no contact's order.
func contractBreach(m *sarama.ConsumerMessage, f facts) error {
	switch {
	case m.Value == nil:
		return errors.New("record contract: a tombstone (no value) is not an event")
	case len(m.Key) == 0:
		return errors.New("record contract: no key (each event is keyed by its data.contact_id)")
	case f.ID == "":
		return fmt.Errorf("record contract: no event id can be read (no ce_id header, no event_id): %w", cmp.Or(f.Invalid, errors.New("empty event_id")))
	case f.Invalid == nil && f.Event.Data.ContactID != string(m.Key):
		return fmt.Errorf("record contract: key %q is not data.contact_id %q (it would be ordered as one contact and applied to another)", m.Key, f.Event.Data.ContactID)
	}
	return nil
}

// facts reads what record m says of itself.
func (p *processor) facts(m *sarama.ConsumerMessage, id string) facts {
	f := facts{ID: id, Replayed: record.ReplayCount(m.Headers) > 0, Discard: record.IsDiscard(m), ReleaseThrough: record.ReleaseThrough(m)}
	f.Arrived, _ = record.Arrival(m)
	ev, err := acmecrm.Parse(m.Value)
	if err != nil {
		f.Invalid = fmt.Errorf("unparseable event: %w", err)
		return f
	}
	f.Event = ev
	if arrived := f.Arrived; !arrived.IsZero() && p.Guard.MaxClockSkew > 0 {
		if ahead := ev.Timestamp.Sub(arrived); ahead > p.Guard.MaxClockSkew {
			f.Invalid = fmt.Errorf("timestamp %s is %v ahead of the event's arrival (%s), more than the clock skew allowed (WORKER_STALE_GUARD_MAX_CLOCK_SKEW %v): as its contact's newest it would make every later event stale",
				ev.Timestamp.Format(time.RFC3339Nano), ahead, arrived.UTC().Format(time.RFC3339Nano), p.Guard.MaxClockSkew)
		}
	}
	return f
}

// carryOut does what v says for the record m of facts f, its contact in
// state s.
func (p *processor) carryOut(ctx context.Context, log zerolog.Logger, span trace.Span, m *sarama.ConsumerMessage, f facts, s contactstate.State, v verdict) effect {
	switch v {
	case verdictApply, verdictApplyHead:
		if f.Invalid != nil { // a head that was invalid, put back as it was
			return p.deadLetter(ctx, log, m, "", record.Failure{Err: f.Invalid, Kind: record.KindInvalid})
		}
		if !f.Event.Known() { // a head of a type this worker does not apply: kept, and its contact released
			return p.deadLetter(ctx, log, m, f.Event.EventType, record.Failure{Kind: record.KindUnsupported,
				Err: fmt.Errorf("event_type %q is not one this worker applies: kept for a replay by a release that does", f.Event.EventType)})
		}
		return p.apply(ctx, log, m, f.Event)
	case verdictInvalid:
		return p.deadLetter(ctx, log, m, "", record.Failure{Err: f.Invalid, Kind: record.KindInvalid})
	case verdictStale:
		return effect{out: p.stale(log, span, f, s)}
	case verdictPark:
		return p.park(ctx, log, m, s)
	default: // verdictDiscard, verdictDiscarded
		return effect{out: p.discarded(log, f)}
	}
}

// apply applies ev, retries and dead-letters.
func (p *processor) apply(ctx context.Context, log zerolog.Logger, m *sarama.ConsumerMessage, ev acmecrm.Event) effect {
	start := p.Now()
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(telemetry.EventType(ev.EventType))
	attempt := 0
	attempts, err := p.Retrier.Do(ctx, ev.Data.ContactID, func(ctx context.Context) error {
		attempt++
		ctx, span := telemetry.Or(p.Tracer).Start(ctx, "apply "+ev.EventType, trace.WithAttributes(telemetry.Attempts(attempt)))
		answered := func(context.Context, error) {}
		if p.Health != nil {
			answered = p.Health.Begin(ev.Data.ContactID)
		}
		err := call(ctx, p.API, ev)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		if ctx.Err() == nil || err == nil {
			p.Metrics.calls.WithLabelValues(callResult(err)).Inc()
		}
		answered(ctx, err)
		return err
	},
		func(attempt int, err error, wait time.Duration) {
			p.Metrics.retries.WithLabelValues(ev.EventType).Inc()
			log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("transient failure, retrying")
		})
	p.Metrics.applyDuration.WithLabelValues(ev.EventType).Observe(p.Now().Sub(start).Seconds())
	span.SetAttributes(telemetry.Attempts(attempts))
	f := record.Failure{Err: err, Attempts: attempts}
	switch {
	case err == nil:
		p.Metrics.events.WithLabelValues(ev.EventType, string(outcomeApplied)).Inc()
		log.Info().Str("event_type", ev.EventType).Int("attempts", attempts).Msg("applied")
		return effect{out: outcomeApplied}
	case ctx.Err() != nil:
		p.Metrics.events.WithLabelValues(ev.EventType, string(outcomeAbandoned)).Inc()
		log.Info().Int("attempts", attempts).Msg("abandoned: stopping or partition revoked; not committed")
		return effect{out: outcomeAbandoned}
	case errors.Is(err, errRetriesExhausted):
		f.Kind = record.KindTransient
	default:
		f.Kind = record.KindPermanent
	}
	return p.deadLetter(ctx, log, m, ev.EventType, f)
}

// stale counts and reports an event older than its contact's newest.
func (p *processor) stale(log zerolog.Logger, span trace.Span, f facts, s contactstate.State) eventOutcome {
	p.Metrics.events.WithLabelValues(f.Event.EventType, string(outcomeStale)).Inc()
	span.SetAttributes(telemetry.EventType(f.Event.EventType), attribute.Bool("acmecrm.stale", true),
		attribute.String("acmecrm.newest.event_id", s.Newest.EventID), attribute.String("acmecrm.newest.timestamp", s.Newest.At.Format(time.RFC3339Nano)))
	log.Info().Str("event_type", f.Event.EventType).Str("timestamp", f.Event.Timestamp.Format(time.RFC3339Nano)).
		Str("newest_event_id", s.Newest.EventID).Str("newest_timestamp", s.Newest.At.Format(time.RFC3339Nano)).Bool("newest_deleted", s.Deleted).
		Msg("stale: older than the newest event applied to its contact; not applied")
	return outcomeStale
}

// park writes m to the DLQ behind its contact's head, not tried.
func (p *processor) park(ctx context.Context, log zerolog.Logger, m *sarama.ConsumerMessage, s contactstate.State) effect {
	head := s.Parked.Head.EventID
	f := record.Failure{Err: errParked(head), Kind: record.KindParked, ParkedBehind: head, FailedAt: p.Now(), Group: p.Group}
	at, err := p.DeadLetterer.DeadLetter(ctx, m, f)
	if err != nil {
		log.Warn().Err(err).Msg("abandoned before the parked record was acknowledged; not committed")
		return effect{out: outcomeAbandoned}
	}
	p.Metrics.parkedEvents.Inc()
	p.Metrics.deadLettered.WithLabelValues(string(record.KindParked)).Inc()
	_, eventType := record.Identity(m)
	p.Metrics.events.WithLabelValues(eventTypeLabel(eventType), string(outcomeParked)).Inc()
	log.Warn().Str("contact_id", string(m.Key)).Str("parked_behind", head).Int("parked_records", s.Parked.Records+1).Msg("parked behind the contact's dead-lettered event")
	return effect{out: outcomeParked, kind: record.KindParked, at: &at}
}

func (p *processor) discarded(log zerolog.Logger, f facts) eventOutcome {
	p.Metrics.events.WithLabelValues(eventTypeLabel(f.Event.EventType), string(outcomeDiscarded)).Inc()
	log.Warn().Str("discarded", f.ID).Msg("discarded by an SRE: not applied")
	return outcomeDiscarded
}

func (p *processor) deadLetter(ctx context.Context, log zerolog.Logger, m *sarama.ConsumerMessage, eventType string, f record.Failure) effect {
	f.FailedAt, f.Group = p.Now(), p.Group
	eventType = eventTypeLabel(eventType)
	at, err := p.DeadLetterer.DeadLetter(ctx, m, f)
	if err != nil {
		p.Metrics.events.WithLabelValues(eventType, string(outcomeAbandoned)).Inc()
		log.Warn().Err(err).Msg("abandoned before the dead-letter record was acknowledged; not committed")
		return effect{out: outcomeAbandoned}
	}
	p.Metrics.events.WithLabelValues(eventType, string(outcomeDeadLettered)).Inc()
	p.Metrics.deadLettered.WithLabelValues(string(f.Kind)).Inc()
	log.Error().Err(f.Err).Str("kind", string(f.Kind)).Int("attempts", f.Attempts).Msg("dead-lettered")
	return effect{out: outcomeDeadLettered, kind: f.Kind, at: &at}
}

type errParked string

func (e errParked) Error() string {
	return "parked behind " + string(e) + ", its contact's unresolved dead-lettered event"
}

// callResult is a call's result as worker_contacts_api_calls_total counts it.
func callResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, contacts.ErrGone):
		return "gone"
	case contacts.CauseOf(err) != "":
		return string(contacts.CauseOf(err))
	default:
		return string(contacts.CauseUnavailable)
	}
}

func eventTypeLabel(t string) string {
	if t == "" {
		return "unknown"
	}
	return t
}

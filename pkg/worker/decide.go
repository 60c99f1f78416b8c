package worker

import (
	"time"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/record"
)

// What becomes of each record is decided apart from being done: decide is a
// pure function of the contact's state and what the record says of itself,
// the processor carries the verdict out, and next is the contact's state
// afterwards (also pure). A new concern is a new row of decide's table.

// facts are what a record says of itself.
type facts struct {
	// ID is the event id: ce_id, else the body's event_id.
	ID string
	// Event is the parsed event; meaningful when Invalid is nil.
	Event acmecrm.Event
	// Invalid says why the record cannot be applied as it is (it breaks
	// the event rules, or its timestamp is ahead of its arrival beyond
	// the clock skew allowed).
	Invalid error
	// Replayed: a DLQ replay put it back (dlq_replay_count ≥ 1).
	Replayed bool
	// Discard: an SRE's discard record (dlq_discard): never to be applied.
	Discard bool
	// ReleaseThrough, on a record a release put back, is how far the
	// release read the DLQ (partition -> end offset): records parked
	// after it were not put back.
	ReleaseThrough map[int32]int64
	// Arrived is when the gateway received it (received_at, else the
	// record's timestamp); zero when unknown.
	Arrived time.Time
}

// mark names the record's event in a contact's state.
func (f facts) mark() contactstate.Mark {
	return contactstate.Mark{EventID: f.ID, At: f.Event.Timestamp}
}

// verdict is what is done with a record.
type verdict int

// The verdicts of decide.
const (
	// verdictApply: call the Contacts API (retrying transient failures);
	// dead-lettered, the event parks its contact.
	verdictApply verdict = iota
	// verdictApplyHead: the event a contact is parked behind, put back by a
	// replay: call the API; applied, it releases the contact; dead-lettered
	// again, the contact stays parked behind it.
	verdictApplyHead
	// verdictPark: the contact waits behind its head: write the event to
	// the DLQ behind it, in order; not tried.
	verdictPark
	// verdictStale: older than the newest event applied to the contact (an
	// older snapshot, or a delete or create older than what it holds):
	// never applied, never dead-lettered.
	verdictStale
	// verdictDiscard: an SRE's discard record: never applied; remembered,
	// and the contact's head releases the contact.
	verdictDiscard
	// verdictDiscarded: another copy of an event an SRE discarded.
	verdictDiscarded
	// verdictInvalid: cannot be applied as it is: dead-lettered (invalid).
	verdictInvalid
)

func (v verdict) String() string {
	return [...]string{"apply", "apply_head", "park", "stale", "discard", "discarded", "invalid"}[v]
}

// decide returns what to do with a record of facts f for a contact in state
// s. The stale-event guard: an event older than the contact's newest
// applied one, or a copy of an event already applied, is stale; timestamps
// are instants, and distinct events of one instant are applied in
// partition order.
func decide(s contactstate.State, f facts) verdict {
	parked := s.IsParked()
	head := parked && f.Replayed && s.Parked.Head.EventID == f.ID // the head, put back
	switch {
	case f.Discard, head && s.IsDiscarded(f.ID):
		return verdictDiscard
	case s.IsDiscarded(f.ID):
		return verdictDiscarded
	case head:
		return verdictApplyHead
	case f.Invalid != nil && parked:
		return verdictPark
	case f.Invalid != nil:
		return verdictInvalid
	case f.Event.Timestamp.Before(s.Newest.At), s.Applied(f.mark()):
		return verdictStale
	case parked:
		return verdictPark
	default:
		return verdictApply
	}
}

// next returns the contact's state after verdict v on the record of facts
// f came to r, at now: an applied event becomes the contact's newest; a
// head put back by a release releases its contact when the release put
// back every record parked behind it (contactstate.Parked.CoveredBy).
func next(s contactstate.State, f facts, v verdict, r effect, now time.Time) contactstate.State {
	switch {
	case r.out == outcomeApplied:
		s.Apply(f.mark(), f.Event.EventType == acmecrm.ContactDeleted)
		if v == verdictApplyHead && s.Parked.CoveredBy(f.ReleaseThrough) {
			s.Parked = contactstate.Parked{}
		}
	case r.out == outcomeDeadLettered && v == verdictApplyHead && r.kind == record.KindUnsupported:
		// A head of a type this worker does not apply: kept in the DLQ as
		// unsupported, not a reason to hold the contact.
		if s.Parked.CoveredBy(f.ReleaseThrough) {
			s.Parked = contactstate.Parked{}
		}
	case r.out == outcomeDeadLettered && v == verdictApplyHead:
		s.Parked.HeadKind, s.Parked.Since, s.Parked.Last = string(r.kind), now, r.at
	case r.out == outcomeDeadLettered && f.ID != "":
		s.Parked = contactstate.Parked{Head: f.mark(), HeadKind: string(r.kind), Since: now, Last: r.at}
	case r.out == outcomeParked:
		s.Parked.Records++
		s.Parked.Last = r.at
	case v == verdictDiscard:
		mark := f.mark()
		if mark.At.IsZero() && s.Parked.Head.EventID == f.ID {
			mark.At = s.Parked.Head.At // a discard without a value: the head's instant, so the mark is forgotten in time
		}
		s.Discard(mark)
		if s.Parked.Head.EventID == f.ID && s.Parked.CoveredBy(f.ReleaseThrough) {
			s.Parked = contactstate.Parked{}
		}
	}
	return s
}

package contactstate

import (
	"slices"
	"time"
)

// Mark names one event of a contact: its event id and its AcmeCRM
// timestamp, an instant (RFC 3339 offsets are compared as instants).
type Mark struct {
	EventID string    `json:"event_id"`
	At      time.Time `json:"at"`
}

// IsZero reports whether m names no event.
func (m Mark) IsZero() bool { return m.EventID == "" && m.At.IsZero() }

// Position is where a record is in a topic.
type Position struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

// Parked says that a contact's events wait in the dead-letter topic behind
// its head: the first of its events dead-lettered and not yet resolved.
type Parked struct {
	// Head is the dead-lettered event the contact waits behind.
	Head Mark `json:"head"`
	// HeadKind is the head's dlq_error_kind.
	HeadKind string `json:"head_kind"`
	// Since is when the head was (last) dead-lettered.
	Since time.Time `json:"since"`
	// Records counts the records parked behind the head since it was
	// dead-lettered (a parked event put back by a replay and parked
	// again counts again).
	Records int `json:"records"`
	// Last is where in the dead-letter topic the latest record written for
	// the contact since it was parked is (the head's dead letter, then
	// each parked record); nil when unknown. A release that put back the
	// records up to it releases the contact (CoveredBy).
	Last *Position `json:"last,omitzero"`
}

// CoveredBy reports whether a release that read the dead-letter topic up to
// through (partition -> end offset, exclusive) put back every record parked
// behind the head: those written later wait for the next release. Without
// a through (the head put back by a routine replay), only a head with
// nothing parked behind it is covered.
func (p Parked) CoveredBy(through map[int32]int64) bool {
	if through == nil {
		return p.Records == 0
	}
	if p.Last == nil {
		return true
	}
	end, ok := through[p.Last.Partition]
	return ok && end > p.Last.Offset
}

// State is what the worker knows of one contact. Its zero value is a
// contact the worker knows nothing of: its record is a tombstone.
type State struct {
	// Newest is the newest event applied (its timestamp is the guard's
	// high-water mark); zero when none was applied within the horizon.
	Newest Mark
	// SameInstant are the ids of the events applied before Newest at its
	// very instant (AcmeCRM's timestamps have whole seconds): a copy of one
	// of them coming back is stale. At most MaxSameInstant, the latest.
	SameInstant []string
	// Deleted is true when Newest was a contact.deleted.
	Deleted bool
	// Parked, when its Head is set, parks the contact.
	Parked Parked
	// Discarded are events an SRE discarded (never to be applied) that the
	// high-water mark does not cover yet: at most MaxDiscarded, the newest
	// kept. One without a timestamp (unknown) is never covered.
	Discarded []Mark
}

// MaxDiscarded bounds State.Discarded, MaxSameInstant State.SameInstant.
const (
	MaxDiscarded   = 16
	MaxSameInstant = 8
)

// IsZero reports whether s holds nothing.
func (s State) IsZero() bool {
	return s.Newest.IsZero() && len(s.SameInstant) == 0 && !s.Deleted && !s.IsParked() && len(s.Discarded) == 0
}

// Applied reports whether m is an event already applied to the contact:
// its newest, or one applied before it at the same instant. A copy of it
// (redelivered, replayed) is stale.
func (s State) Applied(m Mark) bool {
	return !s.Newest.IsZero() && m.At.Equal(s.Newest.At) && (m.EventID == s.Newest.EventID || slices.Contains(s.SameInstant, m.EventID))
}

// IsParked reports whether the contact's events wait behind a head.
func (s State) IsParked() bool { return s.Parked.Head.EventID != "" }

// IsDiscarded reports whether an SRE discarded event id.
func (s State) IsDiscarded(id string) bool {
	return slices.ContainsFunc(s.Discarded, func(m Mark) bool { return m.EventID == id })
}

// Discard remembers that m must never be applied.
func (s *State) Discard(m Mark) {
	if !s.IsDiscarded(m.EventID) {
		s.Discarded = append(slices.Clone(s.Discarded), m)
	}
	s.prune()
}

// Apply records that m was applied: it is the contact's newest event, and a
// delete when deleted. Discarded events older than m are forgotten: the
// high-water mark covers them.
func (s *State) Apply(m Mark, deleted bool) {
	switch {
	case !m.At.Equal(s.Newest.At):
		s.SameInstant = nil
	case s.Newest.EventID != "" && s.Newest.EventID != m.EventID && !slices.Contains(s.SameInstant, s.Newest.EventID):
		s.SameInstant = append(slices.Clone(s.SameInstant), s.Newest.EventID)
		if len(s.SameInstant) > MaxSameInstant {
			s.SameInstant = s.SameInstant[len(s.SameInstant)-MaxSameInstant:]
		}
	}
	s.Newest, s.Deleted = m, deleted
	s.prune()
}

// prune drops the discarded events older than Newest, then the oldest past
// MaxDiscarded. An event at Newest's instant is kept (the guard applies
// events of equal timestamps), as is one whose timestamp is unknown.
func (s *State) prune() {
	if !s.Newest.At.IsZero() {
		s.Discarded = slices.DeleteFunc(slices.Clone(s.Discarded), func(m Mark) bool { return !m.At.IsZero() && m.At.Before(s.Newest.At) })
	}
	if len(s.Discarded) > MaxDiscarded {
		s.Discarded = slices.Clone(s.Discarded[len(s.Discarded)-MaxDiscarded:])
	}
	if len(s.Discarded) == 0 {
		s.Discarded = nil
	}
}

// Equal reports whether s and o hold the same state (instants compared as
// instants).
func (s State) Equal(o State) bool {
	markEq := func(a, b Mark) bool { return a.EventID == b.EventID && a.At.Equal(b.At) }
	posEq := func(a, b *Position) bool { return a == b || a != nil && b != nil && *a == *b }
	return markEq(s.Newest, o.Newest) && slices.Equal(s.SameInstant, o.SameInstant) && s.Deleted == o.Deleted &&
		markEq(s.Parked.Head, o.Parked.Head) && s.Parked.HeadKind == o.Parked.HeadKind &&
		s.Parked.Since.Equal(o.Parked.Since) && s.Parked.Records == o.Parked.Records && posEq(s.Parked.Last, o.Parked.Last) &&
		slices.EqualFunc(s.Discarded, o.Discarded, markEq)
}

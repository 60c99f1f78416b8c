package contactstate

import (
	"math"
	"sync"
	"time"
)

// Store holds the states of the contacts of the events partitions a member
// holds, in memory, rebuilt from the state topic when a partition is
// assigned (Read into a PartitionState, then Install) and forgotten when it is
// revoked (Drop). It is safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	parts    map[int32]*PartitionState
	parked   int // over every partition
	contacts int
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{parts: map[int32]*PartitionState{}}
}

// PartitionState is the state of the contacts of one events partition. Most
// contacts only have a newest event applied: they are kept compact (its
// timestamp as Unix nanoseconds, its id, the delete flag; about 150 bytes
// a contact with the map's own overhead, docs/benchmarks.md); the few that
// are parked or have discarded events keep their whole State.
type PartitionState struct {
	newest map[string]guard
	rest   map[string]State
	parked int
}

type guard struct {
	at      int64 // Newest.At, Unix nanoseconds
	id      string
	deleted bool
}

// NewPartition returns an empty partition, to load with Put and Install.
func NewPartitionState() *PartitionState {
	return &PartitionState{newest: map[string]guard{}, rest: map[string]State{}}
}

// Len returns how many contacts the partition knows.
func (p *PartitionState) Len() int { return len(p.newest) + len(p.rest) }

// Parked returns how many of them are parked.
func (p *PartitionState) Parked() int { return p.parked }

// Get returns contact's state (the zero State when none).
func (p *PartitionState) Get(contact string) State {
	if s, ok := p.rest[contact]; ok {
		return s
	}
	g, ok := p.newest[contact]
	if !ok {
		return State{}
	}
	return State{Newest: Mark{EventID: g.id, At: time.Unix(0, g.at).UTC()}, Deleted: g.deleted}
}

// Put records contact's state s; the zero State forgets the contact.
func (p *PartitionState) Put(contact string, s State) {
	if old, ok := p.rest[contact]; ok {
		if old.IsParked() {
			p.parked--
		}
		delete(p.rest, contact)
	}
	delete(p.newest, contact)
	switch {
	case s.IsZero():
	case !s.IsParked() && len(s.Discarded) == 0 && len(s.SameInstant) == 0 && compact(s.Newest.At):
		p.newest[contact] = guard{at: s.Newest.At.UnixNano(), id: s.Newest.EventID, deleted: s.Deleted}
	default:
		if s.IsParked() {
			p.parked++
		}
		p.rest[contact] = s
	}
}

// compact reports whether t survives a round trip through Unix nanoseconds
// (years 1678 to 2262).
func compact(t time.Time) bool {
	return t.After(time.Unix(0, math.MinInt64)) && t.Before(time.Unix(0, math.MaxInt64))
}

// ParkedContacts calls fn with each parked contact and its state.
func (p *PartitionState) ParkedContacts(fn func(contact string, s State)) {
	for c, s := range p.rest {
		if s.IsParked() {
			fn(c, s)
		}
	}
}

// Install makes part the state of events partition p (assigned).
func (s *Store) Install(p int32, part *PartitionState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop(p)
	s.parts[p] = part
	s.parked += part.parked
	s.contacts += part.Len()
}

// Drop forgets events partition p (revoked).
func (s *Store) Drop(p int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop(p)
}

func (s *Store) drop(p int32) {
	if old := s.parts[p]; old != nil {
		s.parked -= old.parked
		s.contacts -= old.Len()
		delete(s.parts, p)
	}
}

// Get returns the state of contact in events partition p.
func (s *Store) Get(p int32, contact string) State {
	s.mu.Lock()
	defer s.mu.Unlock()
	part := s.parts[p]
	if part == nil {
		return State{}
	}
	return part.Get(contact)
}

// Put records the state of contact in events partition p (in memory only:
// the caller writes its record).
func (s *Store) Put(p int32, contact string, st State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	part := s.parts[p]
	if part == nil {
		part = NewPartitionState()
		s.parts[p] = part
	}
	s.parked -= part.parked
	s.contacts -= part.Len()
	part.Put(contact, st)
	s.parked += part.parked
	s.contacts += part.Len()
}

// Parked returns how many contacts are parked in the partitions held.
func (s *Store) Parked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parked
}

// OldestParked returns when the contact parked the longest, in the
// partitions held, was parked (its head dead-lettered); zero when none is.
func (s *Store) OldestParked() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest time.Time
	for _, part := range s.parts {
		part.ParkedContacts(func(_ string, st State) {
			if oldest.IsZero() || st.Parked.Since.Before(oldest) {
				oldest = st.Parked.Since
			}
		})
	}
	return oldest
}

// Contacts returns how many contacts the partitions held know.
func (s *Store) Contacts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.contacts
}

// ParkedContacts calls fn with each parked contact of events partition p
// (fn must not call the store).
func (s *Store) ParkedContacts(p int32, fn func(contact string, st State)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if part := s.parts[p]; part != nil {
		part.ParkedContacts(fn)
	}
}

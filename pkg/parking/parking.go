package parking

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// Entry is one contact's record on the parked topic.
type Entry struct {
	ContactID string `json:"contact_id"`
	// Events are the event ids parked for the contact, in their order. The
	// first is the head: the first dead-lettered event not yet resolved;
	// the others were parked behind it.
	Events []string `json:"events,omitempty"`
	// HeadKind is the head's dlq_error_kind.
	HeadKind string `json:"head_kind,omitempty"`
	// Since is when the head was dead-lettered.
	Since time.Time `json:"since,omitzero"`
	// Discarded are event ids an SRE dropped: never to be applied, should
	// a copy come back (a replay from the DLQ's beginning).
	Discarded []string `json:"discarded,omitempty"`
	// Released are the event ids applied by a release (the latest
	// MaxReleased): a replayed copy of one that comes back later — the
	// same record delivered again after a crash, an older DLQ copy
	// replayed by a routine run — is not applied again over newer data.
	Released []string `json:"released,omitempty"`
}

// MaxReleased bounds Released per contact.
const MaxReleased = 256

// Release records that the head was applied by a release: it leaves Events
// for Released.
func (e *Entry) Release() {
	e.Released = append(e.Released, e.Events[0])
	if len(e.Released) > MaxReleased {
		e.Released = e.Released[len(e.Released)-MaxReleased:]
	}
	e.Events = e.Events[1:]
}

// WasReleased reports whether id was applied by a release.
func (e Entry) WasReleased(id string) bool { return slices.Contains(e.Released, id) }

// Parked reports whether the contact's events wait behind a head.
func (e Entry) Parked() bool { return len(e.Events) > 0 }

// Head returns the event the contact is parked behind, or "".
func (e Entry) Head() string {
	if len(e.Events) == 0 {
		return ""
	}
	return e.Events[0]
}

// IsDiscarded reports whether id was discarded for this contact.
func (e Entry) IsDiscarded(id string) bool { return slices.Contains(e.Discarded, id) }

// empty reports whether the entry holds nothing: its record is a tombstone.
func (e Entry) empty() bool {
	return len(e.Events) == 0 && len(e.Discarded) == 0 && len(e.Released) == 0
}

// clone returns a copy sharing no slices with e.
func (e Entry) clone() Entry {
	e.Events = slices.Clone(e.Events)
	e.Discarded = slices.Clone(e.Discarded)
	e.Released = slices.Clone(e.Released)
	return e
}

// Message returns e's record for partition p of topic (the partition of the
// contact's events): its JSON, or a tombstone when it holds nothing.
func Message(topic string, p int32, e Entry) *sarama.ProducerMessage {
	m := &sarama.ProducerMessage{Topic: topic, Partition: p, Key: sarama.StringEncoder(e.ContactID)}
	if !e.empty() {
		b, _ := json.Marshal(e) // strings, a time and string slices: cannot fail
		m.Value = sarama.ByteEncoder(b)
	}
	return m
}

// Decode reads a record of the parked topic; a tombstone is an empty entry.
func Decode(key, value []byte) (Entry, error) {
	e := Entry{ContactID: string(key)}
	if value == nil {
		return e, nil
	}
	if err := json.Unmarshal(value, &e); err != nil {
		return e, fmt.Errorf("parked record of %q: %w", key, err)
	}
	e.ContactID = string(key)
	return e, nil
}

// Store holds the parked contacts of the partitions a worker holds. It is
// safe for concurrent use.
type Store struct {
	mu    sync.Mutex
	parts map[int32]map[string]Entry
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{parts: map[int32]map[string]Entry{}}
}

// Load replaces partition p's contacts with entries (Read's result).
func (s *Store) Load(p int32, entries map[string]Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts[p] = entries
}

// Drop forgets partition p (revoked).
func (s *Store) Drop(p int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.parts, p)
}

// Get returns contact's entry in partition p (a copy), and whether it has one.
func (s *Store) Get(p int32, contact string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.parts[p][contact]
	return e.clone(), ok
}

// Put records e for partition p (after its record was written); an empty
// entry removes the contact.
func (s *Store) Put(p int32, e Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	part := s.parts[p]
	if part == nil {
		part = map[string]Entry{}
		s.parts[p] = part
	}
	if e.empty() {
		delete(part, e.ContactID)
		return
	}
	part[e.ContactID] = e.clone()
}

// Parked returns how many contacts are parked in the partitions held.
func (s *Store) Parked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, part := range s.parts {
		for _, e := range part {
			if e.Parked() {
				n++
			}
		}
	}
	return n
}

// readIdle is how long a partition may give no record before the read is
// given up (and retried by the caller).
const readIdle = 10 * time.Second

// Read returns the latest entry of each contact in partition p of topic,
// read from its oldest record to its end as of the call.
func Read(ctx context.Context, client sarama.Client, topic string, p int32) (map[string]Entry, error) {
	oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return nil, fmt.Errorf("oldest offset of %s/%d: %w", topic, p, err)
	}
	end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		return nil, fmt.Errorf("end of %s/%d: %w", topic, p, err)
	}
	entries := map[string]Entry{}
	if oldest >= end {
		return entries, nil
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, err
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(topic, p, oldest)
	if err != nil {
		return nil, fmt.Errorf("reading %s/%d: %w", topic, p, err)
	}
	defer pc.AsyncClose()
	idle := time.NewTimer(readIdle)
	defer idle.Stop()
	next := oldest
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-pc.Errors():
			return nil, fmt.Errorf("reading %s/%d: %w", topic, p, err)
		case <-idle.C:
			// Kafka keeps the last record of a log, so records up to end-1
			// exist: silence before it (sarama redispatching around a
			// leader change) is not the end. The caller retries.
			return nil, fmt.Errorf("reading %s/%d: no record for %v at offset %d, before the end %d", topic, p, readIdle, next, end)
		case m := <-pc.Messages():
			e, err := Decode(m.Key, m.Value)
			if err != nil {
				return nil, err
			}
			if e.empty() {
				delete(entries, e.ContactID)
			} else {
				entries[e.ContactID] = e
			}
			if m.Offset >= end-1 {
				return entries, nil
			}
			next = m.Offset + 1
			idle.Reset(readIdle)
		}
	}
}

// ReadAll returns the parked contacts of every partition of topic, sorted
// by contact id.
func ReadAll(ctx context.Context, client sarama.Client, topic string) ([]Entry, error) {
	partitions, err := client.Partitions(topic)
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	var all []Entry
	for _, p := range partitions {
		entries, err := Read(ctx, client, topic, p)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			all = append(all, e)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ContactID < all[j].ContactID })
	return all, nil
}

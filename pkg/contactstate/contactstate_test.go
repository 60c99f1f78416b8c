package contactstate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

var owner = Owner{Topic: "contact-events", Group: "contact-worker"}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		s    State
	}{
		{"newest only", State{Newest: Mark{"evt_2", at("2025-05-17T17:06:39-07:00")}}},
		{"deleted", State{Newest: Mark{"evt_3", at("2025-05-17T17:10:00Z")}, Deleted: true}},
		{"parked", State{Newest: Mark{"evt_1", at("2025-05-17T17:00:00Z")},
			Parked: Parked{Head: Mark{"evt_5", at("2025-05-17T18:00:00Z")}, HeadKind: "permanent", Since: at("2025-05-18T00:00:00Z"), Records: 3}}},
		{"parked behind an unparseable head", State{Parked: Parked{Head: Mark{EventID: "evt_x"}, HeadKind: "invalid", Since: at("2025-05-18T00:00:00Z")}}},
		{"discarded", State{Discarded: []Mark{{"evt_4", at("2025-05-17T17:06:39Z")}, {EventID: "evt_unknown_time"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Message("state", 4, owner, "1234", tt.s)
			if m.Partition != 4 || m.Topic != "state" {
				t.Errorf("record for %s/%d, want state/4", m.Topic, m.Partition)
			}
			if k, _ := m.Key.Encode(); string(k) != "1234" {
				t.Errorf("key %q, want the contact id", k)
			}
			v, _ := m.Value.Encode()
			got, err := Decode(v, owner)
			if err != nil {
				t.Fatalf("decoding %s: %v", v, err)
			}
			if !got.Equal(tt.s) {
				t.Errorf("decoded %+v, want %+v (record %s)", got, tt.s, v)
			}
		})
	}
}

func TestZeroStateIsATombstone(t *testing.T) {
	m := Message("state", 0, owner, "1234", State{})
	if m.Value != nil {
		t.Fatalf("value %v, want a tombstone (nil)", m.Value)
	}
	if s, err := Decode(nil, owner); err != nil || !s.IsZero() {
		t.Errorf("tombstone decoded %+v, %v; want the zero state", s, err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	v, _ := Message("state", 0, Owner{Topic: "staging-contact-events", Group: "contact-worker"}, "1234", State{Newest: Mark{"e", at("2025-01-01T00:00:00Z")}}).Value.Encode()
	if _, err := Decode(v, owner); !errors.Is(err, ErrForeign) {
		t.Errorf("another topic's record: %v, want ErrForeign", err)
	}
	for _, bad := range []string{`not json`, `{"v":99,"topic":"contact-events","group":"contact-worker"}`, `{"v":1,"topic":"contact-events","group":"contact-worker","parked":{"head":{"event_id":""}}}`, `[]`} {
		if _, err := Decode([]byte(bad), owner); err == nil || errors.Is(err, ErrForeign) {
			t.Errorf("%s: %v, want an error saying why it cannot be read", bad, err)
		}
	}
}

// A record of the former parked topic: its parked ids become the head and a
// count; its discarded ids have no timestamp and are kept.
func TestDecodeLegacy(t *testing.T) {
	v := `{"contact_id":"px","events":["e1","e2","e3"],"head_kind":"permanent","since":"2026-11-01T10:00:00Z","discarded":["e0"],"released":["a","b"]}`
	s, err := Decode([]byte(v), owner)
	if err != nil {
		t.Fatal(err)
	}
	want := State{Parked: Parked{Head: Mark{EventID: "e1"}, HeadKind: "permanent", Since: at("2026-11-01T10:00:00Z"), Records: 2}, Discarded: []Mark{{EventID: "e0"}}}
	if !s.Equal(want) {
		t.Errorf("decoded %+v, want %+v", s, want)
	}
	// Released only: nothing left to know.
	if s, err := Decode([]byte(`{"contact_id":"py","released":["a"]}`), owner); err != nil || !s.IsZero() {
		t.Errorf("released-only record: %+v, %v; want the zero state", s, err)
	}
}

func TestDiscardedArePrunedByTheNewest(t *testing.T) {
	var s State
	s.Discard(Mark{"d1", at("2025-01-01T00:00:01Z")})
	s.Discard(Mark{"d2", at("2025-01-01T00:00:03Z")})
	s.Discard(Mark{EventID: "d3"}) // timestamp unknown
	s.Apply(Mark{"e", at("2025-01-01T00:00:03Z")}, false)
	if !s.IsDiscarded("d2") || !s.IsDiscarded("d3") || s.IsDiscarded("d1") {
		t.Errorf("discarded %v: want d1 dropped (older than the newest), d2 (same instant) and d3 (unknown) kept", s.Discarded)
	}
	for i := range 2 * MaxDiscarded {
		s.Discard(Mark{fmt.Sprint("n", i), at("2025-01-02T00:00:00Z")})
	}
	if len(s.Discarded) != MaxDiscarded || !s.IsDiscarded(fmt.Sprint("n", 2*MaxDiscarded-1)) {
		t.Errorf("%d discarded kept, want the newest %d", len(s.Discarded), MaxDiscarded)
	}
}

// Partition places a key where sarama's hash partitioner (the gateway's)
// places it.
func TestPartitionIsSaramasHashPartitioner(t *testing.T) {
	hp := sarama.NewHashPartitioner("")
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		key := make([]byte, 1+r.IntN(40))
		for j := range key {
			key[j] = byte(r.IntN(256))
		}
		if i%2 == 0 {
			key = fmt.Appendf(nil, "contact-%d", i)
		}
		for _, n := range []int32{1, 3, 6, 7, 12, 64} {
			want, err := hp.Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder(key)}, n)
			if err != nil {
				t.Fatal(err)
			}
			if got := Partition(key, n); got != want {
				t.Fatalf("key %q among %d: %d, sarama %d", key, n, got, want)
			}
		}
	}
}

// Sources lists exactly the state partitions where the contacts of an
// events partition can be: every key of events partition p is in one of
// them, and each of them holds some key of p.
func TestSources(t *testing.T) {
	for _, tc := range []struct{ n, s int32 }{{6, 6}, {12, 6}, {6, 12}, {7, 6}, {9, 6}, {1, 4}, {4, 1}} {
		found := map[int32]map[int32]bool{}
		for i := range 20000 {
			key := fmt.Appendf(nil, "c-%d", i)
			p, q := Partition(key, tc.n), Partition(key, tc.s)
			if found[p] == nil {
				found[p] = map[int32]bool{}
			}
			found[p][q] = true
		}
		for p := int32(0); p < tc.n; p++ {
			src := Sources(p, tc.n, tc.s)
			for q := range found[p] {
				if !slices.Contains(src, q) {
					t.Errorf("n=%d s=%d: a key of events partition %d is in state partition %d, not in Sources %v", tc.n, tc.s, p, q, src)
				}
			}
			if len(found[p]) != len(src) {
				t.Errorf("n=%d s=%d: Sources(%d) = %v, keys found in %d of them", tc.n, tc.s, p, src, len(found[p]))
			}
		}
	}
	if got := Sources(3, 6, 6); !slices.Equal(got, []int32{3}) {
		t.Errorf("as many partitions: %v, want [3]", got)
	}
}

func TestStore(t *testing.T) {
	s := NewStore()
	part := NewPartitionState()
	part.Put("a", State{Newest: Mark{"a1", at("2025-01-01T00:00:00Z")}})
	part.Put("b", State{Parked: Parked{Head: Mark{EventID: "b1"}, HeadKind: "permanent"}})
	s.Install(2, part)
	if s.Contacts() != 2 || s.Parked() != 1 {
		t.Fatalf("%d contacts, %d parked; want 2, 1", s.Contacts(), s.Parked())
	}
	if got := s.Get(2, "a"); got.Newest.EventID != "a1" || !got.Newest.At.Equal(at("2025-01-01T00:00:00Z")) {
		t.Errorf("a: %+v", got)
	}
	// Released: compact again, with its newest.
	s.Put(2, "b", State{Newest: Mark{"b1", at("2025-01-02T00:00:00-05:00")}})
	if s.Parked() != 0 || s.Contacts() != 2 {
		t.Errorf("after release: %d contacts, %d parked; want 2, 0", s.Contacts(), s.Parked())
	}
	if got := s.Get(2, "b"); !got.Newest.At.Equal(at("2025-01-02T05:00:00Z")) || got.IsParked() {
		t.Errorf("b: %+v, want the instant kept", got)
	}
	// A timestamp Unix nanoseconds cannot hold stays whole.
	old := State{Newest: Mark{"c1", at("1492-10-12T00:00:00Z")}}
	s.Put(3, "c", old)
	if got := s.Get(3, "c"); !got.Equal(old) {
		t.Errorf("c: %+v, want %+v", got, old)
	}
	s.Put(2, "a", State{})
	if s.Contacts() != 2 {
		t.Errorf("%d contacts after forgetting a, want 2 (b, c)", s.Contacts())
	}
	s.Drop(2)
	if s.Contacts() != 1 || !s.Get(2, "b").IsZero() {
		t.Errorf("after dropping partition 2: %d contacts, b %+v", s.Contacts(), s.Get(2, "b"))
	}
}

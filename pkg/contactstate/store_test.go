package contactstate

import (
	"testing"
	"time"
)

// OldestParked names when the contact parked the longest was parked, across
// the partitions held; zero when none is, and when its partition is gone.
func TestStoreOldestParked(t *testing.T) {
	s := NewStore()
	if !s.OldestParked().IsZero() {
		t.Fatal("an empty store has a parked contact")
	}
	t1, t2 := time.Unix(1000, 0), time.Unix(2000, 0)
	for p, since := range map[int32]time.Time{0: t2, 1: t1} {
		part := NewPartitionState()
		part.Put("c", State{Parked: Parked{Head: Mark{EventID: "h"}, Since: since}})
		part.Put("free", State{Newest: Mark{EventID: "n", At: time.Unix(5, 0)}})
		s.Install(p, part)
	}
	if got := s.OldestParked(); !got.Equal(t1) {
		t.Errorf("oldest parked %v, want %v", got, t1)
	}
	s.Drop(1)
	if got := s.OldestParked(); !got.Equal(t2) {
		t.Errorf("after partition 1 was given up: %v, want %v", got, t2)
	}
}

package worker

import "testing"

func TestWatermark(t *testing.T) {
	tests := []struct {
		name        string
		read        []int64
		finish      []int64
		want        int64
		wantPending int
	}{
		{"nothing finished", []int64{5, 6, 7}, nil, 5, 3},
		{"in order", []int64{5, 6, 7}, []int64{5, 6}, 7, 1},
		{"all finished", []int64{5, 6, 7}, []int64{7, 5, 6}, 8, 0},
		{"gap: the lowest unfinished holds", []int64{5, 6, 7, 8}, []int64{6, 8}, 5, 2},
		{"gap closes", []int64{5, 6, 7, 8}, []int64{6, 8, 5}, 7, 1},
		{"offsets with holes (compacted topic)", []int64{3, 9, 20}, []int64{3, 9}, 20, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWatermark()
			for _, o := range tt.read {
				w.read(o)
			}
			for _, o := range tt.finish {
				w.finish(o)
			}
			got, ok := w.commit()
			if !ok || got != tt.want || w.pending() != tt.wantPending {
				t.Errorf("commit %d (%v), pending %d; want %d, %d", got, ok, w.pending(), tt.want, tt.wantPending)
			}
		})
	}
	if _, ok := newWatermark().commit(); ok {
		t.Error("a watermark with nothing read has an offset to commit")
	}
}

// One record stuck at the bottom while many finish above it: the watermark
// stays at it, and memory follows the unfinished records, not the finished.
func TestWatermarkMemoryFollowsUnfinished(t *testing.T) {
	w := newWatermark()
	w.read(0)
	for o := int64(1); o <= 100000; o++ {
		w.read(o)
		w.finish(o)
	}
	if got, _ := w.commit(); got != 0 || w.pending() != 1 {
		t.Fatalf("commit %d, pending %d; want 0, 1", got, w.pending())
	}
	if len(w.unfinished) > 200 {
		t.Errorf("%d offsets kept for 1 unfinished record", len(w.unfinished))
	}
	w.finish(0)
	if got, _ := w.commit(); got != 100001 {
		t.Errorf("commit %d after all finished, want 100001", got)
	}
}

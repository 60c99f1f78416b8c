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

func TestWatermarkMetadata(t *testing.T) {
	w := newWatermark()
	for o := int64(100); o < 110; o++ {
		w.read(o)
	}
	for _, o := range []int64{101, 102, 104, 105, 106, 109} {
		w.finish(o)
	}
	meta := w.metadata() // unfinished: 100, 103, 107, 108
	finished := finishedAbove(meta, 100)
	if finished == nil {
		t.Fatalf("metadata %q does not read back", meta)
	}
	for o := int64(95); o < 115; o++ {
		want := o == 101 || o == 102 || o == 104 || o == 105 || o == 106 || o == 109
		if got := finished(o); got != want {
			t.Errorf("offset %d finished %v, want %v", o, got, want)
		}
	}
	tests := []struct{ name, meta string }{
		{"another offset's", meta},
		{"empty", ""},
		{"not ours", "some-other-client-state"},
		{"not base64", metadataPrefix + "%%%"},
		{"truncated", meta[:len(meta)-2]},
	}
	for _, tt := range tests {
		base := int64(100)
		if tt.name == "another offset's" {
			base = 101
		}
		if finishedAbove(tt.meta, base) != nil {
			t.Errorf("%s metadata read as finished records", tt.name)
		}
	}
	if newWatermark().metadata() != "" {
		t.Error("metadata with nothing read")
	}
}

// Thousands of unfinished records: the metadata stays under its bound and
// describes a prefix exactly; beyond it nothing is taken as finished.
func TestWatermarkMetadataBounded(t *testing.T) {
	w := newWatermark()
	for o := int64(0); o < 100000; o++ {
		w.read(o)
		if o%7 != 0 { // one in seven unfinished, spread out
			w.finish(o)
		}
	}
	meta := w.metadata()
	if len(meta) > maxMetadata+len(metadataPrefix) {
		t.Fatalf("metadata of %d bytes, over %d", len(meta), maxMetadata)
	}
	finished := finishedAbove(meta, 0)
	if finished == nil {
		t.Fatal("bounded metadata does not read back")
	}
	described := 0
	for o := int64(0); o < 100000; o++ {
		if finished(o) {
			described++
			if o%7 == 0 {
				t.Fatalf("unfinished offset %d taken as finished", o)
			}
		}
	}
	if described < 1000 {
		t.Errorf("only %d finished records described in %d bytes", described, len(meta))
	}
}

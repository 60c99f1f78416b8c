package worker

// watermark tracks one partition's records between reading and finishing
// (applied or dead-lettered), so that the offset committed never passes a
// record that is not finished, however out of order they finish: Kafka
// commits one offset per partition, "everything before this is done"
// (sarama's MarkOffset keeps only the highest mark; IBM/sarama#1287).
//
// It holds only the unfinished offsets: records finished above the lowest
// unfinished one cost nothing, so one stuck record does not make memory grow
// with the records finished after it.
type watermark struct {
	// unfinished holds the unfinished offsets in increasing order, plus
	// finished ones not yet swept out (lazy removal).
	unfinished []int64
	open       map[int64]struct{} // the offsets really unfinished
	next       int64              // the offset after the highest one read; -1 before any
}

func newWatermark() *watermark {
	return &watermark{open: map[int64]struct{}{}, next: -1}
}

// read records that offset was read; offsets are read in increasing order.
func (w *watermark) read(offset int64) {
	w.unfinished = append(w.unfinished, offset)
	w.open[offset] = struct{}{}
	w.next = offset + 1
}

// finish records that offset was applied or dead-lettered.
func (w *watermark) finish(offset int64) {
	delete(w.open, offset)
	for len(w.unfinished) > 0 {
		if _, ok := w.open[w.unfinished[0]]; ok {
			break
		}
		w.unfinished = w.unfinished[1:]
	}
	// Sweep finished offsets out of the middle once they are the majority,
	// so the slice stays proportional to what is unfinished.
	if len(w.unfinished) > 64 && len(w.unfinished) > 2*len(w.open) {
		kept := make([]int64, 0, 2*len(w.open))
		for _, o := range w.unfinished {
			if _, ok := w.open[o]; ok {
				kept = append(kept, o)
			}
		}
		w.unfinished = kept
	}
}

// pending is the number of records read and not finished.
func (w *watermark) pending() int { return len(w.open) }

// commit returns the offset to commit: the lowest unfinished one, or the one
// after the highest read when all are finished; ok is false before any read.
func (w *watermark) commit() (offset int64, ok bool) {
	if w.next < 0 {
		return 0, false
	}
	if len(w.unfinished) > 0 {
		return w.unfinished[0], true
	}
	return w.next, true
}

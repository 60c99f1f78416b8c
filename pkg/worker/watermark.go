package worker

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"strings"
)

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

// Finished records above the watermark are remembered in the commit's
// metadata (as Confluent's parallel-consumer does), so that a member that
// takes the partition over (after a rebalance, a restart or a crash) skips
// them instead of applying them all again: with one contact stuck in its
// retries for minutes, those are every record read since. The metadata is
// "w1:" and base64 (URL alphabet, no padding) of uvarints: the watermark it
// belongs to, the end of the range it describes, the number of unfinished
// offsets in [watermark, end), and those offsets as gaps (the first from
// the watermark, each next one from the one before, minus one). Records in
// the range that are not listed were finished.
const metadataPrefix = "w1:"

// maxMetadata bounds the metadata, well under Kafka's
// offset.metadata.max.bytes (4,096 by default): past it the described
// range stops at the first unfinished offset that does not fit, and what
// lies beyond is applied again (harmless: the Idempotency-Key).
const maxMetadata = 2048

// metadata describes the finished records above the watermark; it is empty
// when there are none.
func (w *watermark) metadata() string {
	base, ok := w.commit()
	if !ok || base == w.next {
		return ""
	}
	var unfinished []int64
	for _, o := range w.unfinished {
		if _, open := w.open[o]; open {
			unfinished = append(unfinished, o)
		}
	}
	budget := maxMetadata/4*3 - 3*binary.MaxVarintLen64 // what base64 of the payload leaves, less the header
	var gaps []byte
	end, prev, n := w.next, base-1, 0
	for _, o := range unfinished {
		g := binary.AppendUvarint(nil, uint64(o-prev-1))
		if len(gaps)+len(g) > budget {
			end = o // describe [base, o) exactly; o and beyond are read again
			break
		}
		gaps, prev, n = append(gaps, g...), o, n+1
	}
	if end == base+int64(n) {
		return "" // nothing finished in the range: nothing to skip
	}
	payload := binary.AppendUvarint(nil, uint64(base))
	payload = binary.AppendUvarint(payload, uint64(end-base))
	payload = binary.AppendUvarint(payload, uint64(n))
	return metadataPrefix + base64.RawURLEncoding.EncodeToString(append(payload, gaps...))
}

// finishedAbove reads the metadata committed with offset base and returns
// which offsets it says were finished; it returns nil (nothing is known
// finished) when the metadata is empty, of another form, or belongs to
// another offset.
func finishedAbove(meta string, base int64) func(offset int64) bool {
	raw, ok := strings.CutPrefix(meta, metadataPrefix)
	if !ok {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return nil
	}
	r := bytes.NewReader(payload)
	var head [3]uint64
	for i := range head {
		if head[i], err = binary.ReadUvarint(r); err != nil {
			return nil
		}
	}
	if int64(head[0]) != base || head[1] > 1<<40 || head[2] > head[1] {
		return nil
	}
	end := base + int64(head[1])
	unfinished := make(map[int64]struct{}, head[2])
	prev := base - 1
	for i := uint64(0); i < head[2]; i++ {
		g, err := binary.ReadUvarint(r)
		if err != nil || g > head[1] {
			return nil
		}
		prev += int64(g) + 1
		unfinished[prev] = struct{}{}
	}
	if prev >= end || r.Len() != 0 {
		return nil
	}
	return func(offset int64) bool {
		if offset < base || offset >= end {
			return false
		}
		_, open := unfinished[offset]
		return !open
	}
}

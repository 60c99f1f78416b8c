package contactstate

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// benchContacts is how many contacts the memory benchmark holds: the issue's
// "1,000,000 guarded contacts per pod".
const benchContacts = 1_000_000

// benchContact and benchState are the contact id (12 bytes) and state
// (a 36-byte event id, as a UUID would be) of the i-th contact of the
// benchmarks (tests/e2e's rebuild benchmark writes the same).
func benchContact(i int) string { return fmt.Sprintf("c-%010d", i) }

func benchState(i int) State {
	return State{Newest: Mark{EventID: fmt.Sprintf("evt_%08x-0000-4000-8000-%012x", i, i)[:36], At: time.Date(2026, 11, 29, 0, 0, i%86400, 0, time.UTC)}}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkStateMemory: the heap a member holds for 1,000,000 contacts it
// knows (each with its newest event applied), built one Put at a time as a
// rebuild builds them.
func BenchmarkStateMemory(b *testing.B) {
	for range b.N {
		b.StopTimer()
		before := heapInUse()
		b.StartTimer()
		part := NewPartitionState()
		for i := range benchContacts {
			part.Put(benchContact(i), benchState(i))
		}
		b.StopTimer()
		b.ReportMetric(float64(heapInUse()-before)/benchContacts, "bytes/contact")
		b.ReportMetric(float64(part.Len()), "contacts")
		runtime.KeepAlive(part)
	}
}

// BenchmarkDecode: one state record's value decoded.
func BenchmarkDecode(b *testing.B) {
	v, _ := Message("state", 0, owner, benchContact(1), benchState(1)).Value.Encode()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(v, owner); err != nil {
			b.Fatal(err)
		}
	}
}

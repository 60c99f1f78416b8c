package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/acmecrm/integration-service/pkg/contacts"
)

// At most the limit's calls are in flight; a wait between retries holds
// none (it never acquires).
func TestGateBoundsCallsInFlight(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	g := newCallGate(3, nil, 0, time.Second, m)
	var mu sync.Mutex
	now, top := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, _, err := g.Acquire(context.Background(), "c")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			now++
			top = max(top, now)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			now--
			mu.Unlock()
			release(nil)
		}()
	}
	wg.Wait()
	if top != 3 {
		t.Errorf("%d calls at once at most, want 3", top)
	}
	if got := testutil.ToFloat64(m.inFlight); got != 0 {
		t.Errorf("in flight %v after every call returned", got)
	}
}

// A 429 with Retry-After pauses every call for the time asked (capped),
// halves the limit once however many calls it answers at once, and
// successes grow it back.
func TestGateRateLimit(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	g := newCallGate(16, nil, 0, 300*time.Millisecond, m)
	limited := &contacts.TransientError{Status: 429, Cause: contacts.CauseRateLimited, RetryAfter: 10 * time.Second}
	var releases []func(error)
	for range 8 {
		release, _, err := g.Acquire(context.Background(), "c")
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	for _, release := range releases {
		release(limited) // eight answered 429 at once: one signal
	}
	if got := testutil.ToFloat64(m.concurrencyLimit); got != 8 {
		t.Errorf("limit %v after one burst of 429s, want 16 halved once: 8", got)
	}
	if p := g.Paused(); p <= 0 || p > 300*time.Millisecond {
		t.Errorf("paused %v, want the 10 s asked, capped at 300ms", p)
	}
	start := time.Now()
	release, held, err := g.Acquire(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond || held < 200*time.Millisecond {
		t.Errorf("the next call waited %v (held %v), want the pause", waited, held)
	}
	release(nil)
	for range 100 {
		release, _, _ := g.Acquire(context.Background(), "c")
		release(nil)
	}
	if got := testutil.ToFloat64(m.concurrencyLimit); got != 16 {
		t.Errorf("limit %v after 100 successes, want back to 16", got)
	}
	if got := testutil.ToFloat64(m.pauses); got != 1 {
		t.Errorf("%v pauses, want 1", got)
	}
}

// The pace after a 429: 0.9 × the calls answered over the last second when
// the process called all along; a lower bound that doubles (probes) when
// it did not; slow growth just after a cut, faster the longer the API
// accepts the pace, and none while the pace does not bind.
func TestGatePace(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	g := newCallGate(16, nil, 0, time.Second, m)
	clock := time.Unix(1_000_000, 0)
	g.now = func() time.Time { return clock }
	limited := &contacts.TransientError{Status: 429, Cause: contacts.CauseRateLimited, RetryAfter: time.Second}
	step := func(d time.Duration) { clock = clock.Add(d) }
	// 50 calls answered every 100 ms for 1 s: 500 a second.
	for i := range 10 {
		if i > 0 {
			step(paceSlot)
		}
		for range 50 {
			g.observe(nil, 5*time.Millisecond)
		}
	}
	if g.paced {
		t.Fatal("paced before any 429")
	}
	g.observe(limited, 5*time.Millisecond)
	if !g.paced || g.probing || g.paceRate < 440 || g.paceRate > 460 {
		t.Fatalf("after a 429: paced %v probing %v at %.0f/s, want 0.9 × 500 = 450, not probing", g.paced, g.probing, g.paceRate)
	}
	step(time.Second) // the pause
	// Successes while the pace does not bind: no growth.
	for range 8 {
		step(raiseEvery)
		g.observe(nil, 5*time.Millisecond)
	}
	if g.paceRate != 450 {
		t.Errorf("pace %.0f after 2 s that did not bind, want 450", g.paceRate)
	}
	// Binding: +2 % just after the cut, more after quiet seconds.
	g.waited.Store(true)
	step(raiseEvery)
	g.observe(nil, 5*time.Millisecond)
	first := g.paceRate/450 - 1
	for range 20 { // 5 s
		g.waited.Store(true)
		step(raiseEvery)
		g.observe(nil, 5*time.Millisecond)
	}
	before := g.paceRate
	g.waited.Store(true)
	step(raiseEvery)
	g.observe(nil, 5*time.Millisecond)
	later := g.paceRate/before - 1
	if first <= 0 || later <= 2*first {
		t.Errorf("growth per step %.3f just after the cut, %.3f seconds later: want it to grow faster with time", first, later)
	}
	// A 429 a moment after the pause: a short measure, a lower bound.
	clear(g.answered[:])
	for range 5 {
		g.observe(nil, 5*time.Millisecond)
	}
	step(decreaseEvery)
	g.observe(limited, 5*time.Millisecond)
	if !g.probing || g.paceRate != paceFloor {
		t.Fatalf("after a 429 on a short measure: probing %v at %.0f/s, want probing at the floor %v", g.probing, g.paceRate, paceFloor)
	}
	step(time.Second)
	g.waited.Store(true)
	step(raiseEvery)
	g.observe(nil, 5*time.Millisecond)
	if g.paceRate != 2*paceFloor {
		t.Errorf("probing pace %.0f after one step, want doubled: %v", g.paceRate, 2*paceFloor)
	}
}

// A cut of the limit applies as calls return, however many callers wait
// in line.
func TestGateCutAppliesPastWaiters(t *testing.T) {
	g := newCallGate(16, nil, 0, time.Second, NewMetrics(prometheus.NewRegistry()))
	for range 16 {
		if err := g.acquireSlot(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	inFlight, top := 0, 0
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.acquireSlot(context.Background()); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inFlight++
			top = max(top, inFlight)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inFlight--
			mu.Unlock()
			g.releaseSlot()
		}()
	}
	time.Sleep(50 * time.Millisecond) // the 200 in line
	g.mu.Lock()
	g.limit = 4 // cut
	g.mu.Unlock()
	for range 16 {
		g.releaseSlot()
	}
	wg.Wait()
	if top != 4 {
		t.Errorf("%d calls at once at most after the cut to 4, with 200 callers in line; want 4", top)
	}
	if g.inFlight != 0 || g.waiters.Len() != 0 {
		t.Errorf("%d slots held, %d waiters after every call returned", g.inFlight, g.waiters.Len())
	}
}

// Callers that waited in line through a 429's pause call only after it.
func TestGateNoCallDuringPause(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	g := newCallGate(4, nil, 0, 300*time.Millisecond, m)
	var held []func(error)
	for range 4 {
		release, _, err := g.Acquire(context.Background(), "c")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, release)
	}
	var mu sync.Mutex
	var calledAt []time.Time
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, _, err := g.Acquire(context.Background(), "c")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			calledAt = append(calledAt, time.Now())
			mu.Unlock()
			release(nil)
		}()
	}
	time.Sleep(50 * time.Millisecond) // the 20 in line for a slot
	cut := time.Now()
	for _, release := range held {
		release(&contacts.TransientError{Status: 429, Cause: contacts.CauseRateLimited, RetryAfter: time.Second})
	}
	wg.Wait()
	for _, at := range calledAt {
		if d := at.Sub(cut); d < 290*time.Millisecond {
			t.Errorf("a call %v after the 429, during its pause of 300 ms (the cap)", d)
			break
		}
	}
	if got := testutil.ToFloat64(m.inFlight); got != 0 {
		t.Errorf("in flight %v after every call returned", got)
	}
}

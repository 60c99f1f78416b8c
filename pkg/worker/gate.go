package worker

import (
	"container/list"
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/acmecrm/integration-service/pkg/contacts"
)

// callGate admits each call to the Contacts API, for the whole process:
//
//   - only a call holds a slot, never an event waiting between retries: at
//     most limit calls are in flight, a limit that adapts to what the API
//     accepts between 1 and WORKER_MAX_IN_FLIGHT (AIMD: halved on a 429 or
//     a 503 with Retry-After, at most once per decreaseEvery; one more per
//     limit calls answered);
//   - when the API asked for a pause (Retry-After on a 429 or a 503,
//     RFC 9110 section 10.2.3), no call is made until it is over (capped
//     by WORKER_RATE_LIMIT_MAX_PAUSE): the whole process slows down, not
//     just that event;
//   - once the API has slowed it down, calls are paced (a token bucket,
//     golang.org/x/time/rate) at what the API accepted: see slowDown and
//     raise;
//   - during a fault of the API, one call per probe interval (apiHealth);
//   - optionally at most WORKER_MAX_CALLS_PER_SECOND (a token bucket,
//     golang.org/x/time/rate).
//
// The slots are a counter under mu with a FIFO queue of waiters, so that a
// cut of the limit applies as soon as calls return, however many wait (a
// fixed semaphore with a reservation taken in the queue's turn would
// apply it only once every waiter before it had called).
type callGate struct {
	max      int64
	health   *apiHealth
	rate     *rate.Limiter // WORKER_MAX_CALLS_PER_SECOND; nil: no cap
	pace     *rate.Limiter // adaptive; rate.Inf until the API slows the process down
	maxPause time.Duration
	metrics  *Metrics
	now      func() time.Time
	waited   atomic.Bool // a call waited for the pace since the last raise: the pace binds

	mu           sync.Mutex
	limit        float64   // calls allowed in flight now, in [1, max]
	inFlight     int64     // calls holding a slot
	waiters      list.List // of chan struct{}, closed when its slot is granted
	pauseUntil   time.Time
	lastDecrease time.Time
	latency      time.Duration // EWMA of the calls answered (not throttled)
	// The pace: paced is false while it is lifted.
	paced     bool
	paceRate  float64 // calls per second
	probing   bool    // the pace is a lower bound (measured over less than a second): it doubles
	lastCut   time.Time
	lastRaise time.Time
	// answered counts the calls answered (not throttled) per paceSlot over
	// the last paceWindow.
	answered    [paceSlots]int
	slot        int64     // the paceSlot answered[slot%paceSlots] counts
	activeSince time.Time // the end of the last pause
}

// The pace's measure and steps.
const (
	// Calls answered are counted per paceSlot over paceWindow.
	paceSlot   = 100 * time.Millisecond
	paceSlots  = 10
	paceWindow = paceSlots * paceSlot
	// paceCut: after a 429, the pace is paceCut × the calls the API
	// answered in the last paceWindow of calling (at most paceCut × the
	// pace before), paceFloor calls a second at least.
	paceCut   = 0.9
	paceFloor = 10.0
	// raiseEvery, while calls wait for the pace, the pace grows: doubled
	// while probing; otherwise by raiseStep, doubled for every raiseQuiet
	// without a 429 (at most raiseMax): slowly just after a cut, since each
	// 429 costs the process a pause, faster the longer the API has
	// accepted it (it may have room again: the fleet's other processes
	// finished or left), so that a process whose pace is far below its
	// share (cut while the fleet overloaded the API) catches up.
	raiseEvery = 250 * time.Millisecond
	raiseStep  = 0.02
	raiseQuiet = time.Second
	raiseMax   = 0.5
	// unpaced: a pace this high is lifted.
	unpaced = 1e6
)

// decreaseEvery spaces the limit's cuts: the calls in flight when the API
// starts refusing all come back refused, and that is one signal, not many.
const decreaseEvery = 200 * time.Millisecond

// newCallGate returns a gate of max calls in flight at most (its limit
// starts there); perSecond > 0 caps calls per second.
func newCallGate(maxInFlight int, health *apiHealth, perSecond float64, maxPause time.Duration, m *Metrics) *callGate {
	g := &callGate{max: int64(maxInFlight), health: health, maxPause: maxPause, metrics: m, now: time.Now,
		limit: float64(maxInFlight)}
	if perSecond > 0 {
		g.rate = rate.NewLimiter(rate.Limit(perSecond), max(1, int(math.Ceil(perSecond/100)))) // a hundredth of a second's calls at once: the fleet's bursts stay small
	}
	g.pace = rate.NewLimiter(rate.Inf, 1)
	m.concurrencyLimit.Set(float64(maxInFlight))
	paused := func() float64 { return g.Paused().Seconds() }
	m.paused.Store(&paused)
	return g
}

// Acquire returns when a call may be made, with the function the caller
// must call with its result, and how long the gate held the caller back
// (time that is no contact's fault: it does not spend a retry budget);
// or ctx's error.
func (g *callGate) Acquire(ctx context.Context, contact string) (release func(error), held time.Duration, err error) {
	start := g.now()
	for {
		if err := g.waitPause(ctx); err != nil {
			return nil, g.now().Sub(start), err
		}
		if g.health != nil {
			if _, err := g.health.Admit(ctx, contact); err != nil {
				return nil, g.now().Sub(start), err
			}
		}
		// The slot first: at most the limit's callers wait for the pace below,
		// not every event ready.
		if err := g.acquireSlot(ctx); err != nil {
			return nil, g.now().Sub(start), err
		}
		if err := g.waitPace(ctx); err != nil {
			g.releaseSlot()
			return nil, g.now().Sub(start), err
		}
		if g.Paused() > 0 {
			// A 429 came back while this caller waited for its slot or the
			// pace: no call during the pause the API asked for.
			g.releaseSlot()
			continue
		}
		break
	}
	g.metrics.inFlight.Inc()
	called := g.now()
	return func(err error) {
		g.observe(err, g.now().Sub(called)) // first: a pause it asks for holds the caller the slot goes to
		g.releaseSlot()
		g.metrics.inFlight.Dec()
	}, called.Sub(start), nil
}

// waitPause returns once no pause is asked for, or ctx's error.
func (g *callGate) waitPause(ctx context.Context) error {
	for {
		wait := g.Paused()
		if wait <= 0 {
			return nil
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

// acquireSlot returns once fewer than floor(limit) calls hold a slot and
// every caller before this one was served (FIFO), or ctx's error.
func (g *callGate) acquireSlot(ctx context.Context) error {
	g.mu.Lock()
	if g.waiters.Len() == 0 && g.inFlight < int64(g.limit) {
		g.inFlight++
		g.mu.Unlock()
		return nil
	}
	ready := make(chan struct{})
	e := g.waiters.PushBack(ready)
	g.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		select {
		case <-ready: // granted meanwhile: handed on
			g.inFlight--
		default:
			g.waiters.Remove(e)
		}
		g.grant()
		g.mu.Unlock()
		return ctx.Err()
	}
}

// releaseSlot gives a slot back.
func (g *callGate) releaseSlot() {
	g.mu.Lock()
	g.inFlight--
	g.grant()
	g.mu.Unlock()
}

// grant hands slots to the waiters first in line while the limit allows.
// The caller holds mu.
func (g *callGate) grant() {
	for g.waiters.Len() > 0 && g.inFlight < int64(g.limit) {
		e := g.waiters.Front()
		g.waiters.Remove(e)
		g.inFlight++
		close(e.Value.(chan struct{}))
	}
}

// waitPace waits for the static cap and the pace. A wait for the pace longer
// than half a paceWindow is given up and taken again later, so that a
// pace that grew meanwhile applies: x/time/rate keeps a reservation's
// time even when the limit changes.
func (g *callGate) waitPace(ctx context.Context) error {
	if g.rate != nil {
		if err := g.rate.Wait(ctx); err != nil {
			return err
		}
	}
	for {
		r := g.pace.Reserve()
		d := r.Delay()
		if d > 0 {
			g.waited.Store(true)
		}
		if d <= paceWindow/2 {
			return sleepCtx(ctx, d)
		}
		r.Cancel()
		if err := sleepCtx(ctx, paceWindow/2); err != nil {
			return err
		}
	}
}

// observe adapts the limit, the pace and the pause to one call's result
// and duration.
func (g *callGate) observe(err error, took time.Duration) {
	now := g.now()
	retryAfter := contacts.RetryAfterOf(err)
	throttled := contacts.CauseOf(err) == contacts.CauseRateLimited || retryAfter > 0 && contacts.IsTransient(err)
	g.mu.Lock()
	before := math.Floor(g.limit)
	if !throttled && (err == nil || !contacts.IsTransient(err)) {
		g.count(now)
		if g.latency == 0 {
			g.latency = took
		} else {
			g.latency += (took - g.latency) / 16
		}
	}
	switch {
	case throttled:
		// The calls in flight when the API starts refusing all come back
		// refused, some during the pause they caused: one signal.
		if now.Sub(g.lastDecrease) >= decreaseEvery && !now.Before(g.activeSince) {
			g.lastDecrease = now
			g.slowDown(now)
			g.limit = max(g.limit/2, g.limitFloor())
		}
		if retryAfter > 0 {
			if g.pauseUntil.Before(now) {
				g.metrics.pauses.Inc() // a new pause, not one extended
			}
			if until := now.Add(min(retryAfter, g.maxPause)); until.After(g.pauseUntil) {
				g.pauseUntil = until
			}
		}
		g.activeSince = maxTime(now, g.pauseUntil)
		g.lastRaise = g.activeSince
	case err == nil:
		g.limit = min(float64(g.max), g.limit+1/g.limit)
		if g.paced && now.Sub(g.lastRaise) >= raiseEvery {
			g.raise(now)
		}
	}
	if math.Floor(g.limit) != before {
		g.metrics.concurrencyLimit.Set(math.Floor(g.limit))
		g.grant()
	}
	g.mu.Unlock()
}

// limitFloor is the fewest calls in flight a cut leaves: twice what the
// pace needs at the calls' latency (Little's law), so that the limit never
// binds below the rate the API accepts — the pace, not the limit, answers
// a rate limit; the limit answers a slower API. The caller holds mu.
func (g *callGate) limitFloor() float64 {
	if !g.paced {
		return 1
	}
	return min(float64(g.max), max(1, math.Ceil(2*g.paceRate*g.latency.Seconds())))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// advance moves the answered slots up to now, emptying those it passes.
// The caller holds mu.
func (g *callGate) advance(now time.Time) {
	s := now.UnixNano() / int64(paceSlot)
	switch {
	case s-g.slot >= paceSlots:
		clear(g.answered[:])
	case s > g.slot:
		for i := g.slot + 1; i <= s; i++ {
			g.answered[i%paceSlots] = 0
		}
	default:
		return
	}
	g.slot = s
}

// count counts a call answered (not throttled) now. The caller holds mu.
func (g *callGate) count(now time.Time) {
	g.advance(now)
	g.answered[g.slot%paceSlots]++
}

// slowDown paces calls after a 429: at paceCut × the rate of calls answered
// since calling resumed after the last pause (over paceWindow at most), at
// most paceCut × the pace before. Time spent paused is not calling time: a
// rate measured over it would cut the pace far below what the API accepts.
// A paceSlot of that time without an answer (the process was idle, not
// held) makes the rate a lower bound only: the pace then probes (doubles)
// until the next 429 measures it. Less than a paceSlot of calling measures
// nothing: the pace before is cut. The answered calls are counted anew.
// The caller holds mu.
func (g *callGate) slowDown(now time.Time) {
	g.advance(now)
	active := min(paceWindow, now.Sub(g.activeSince))
	slots := min(paceSlots-1, int(active/paceSlot)) // whole slots of calling, before the current one
	answered, idle := g.answered[g.slot%paceSlots], 0
	for i := int64(1); i <= int64(slots); i++ {
		n := g.answered[(g.slot-i)%paceSlots]
		answered += n
		if n == 0 {
			idle++
		}
	}
	clear(g.answered[:])
	g.lastCut = now
	r := paceCut * g.paceRate
	if slots > 0 || !g.paced {
		g.probing = idle > 0
		r = paceCut * float64(answered) / max(active, paceSlot).Seconds()
		if g.paced {
			r = min(r, paceCut*g.paceRate)
		}
	}
	g.setPace(max(paceFloor, r))
}

// raise grows the pace when calls wait for it: see raiseEvery. The caller
// holds mu.
func (g *callGate) raise(now time.Time) {
	g.lastRaise = now
	if !g.waited.Swap(false) {
		return // the pace does not bind: nothing to learn
	}
	if g.probing {
		g.setPace(2 * g.paceRate)
		return
	}
	step := raiseStep * math.Exp2(float64(now.Sub(g.lastCut)/raiseQuiet))
	g.setPace(g.paceRate * (1 + min(raiseMax, step)))
}

// setPace paces calls at r a second (lifted once r reaches unpaced), a
// twentieth of a second's calls at once. The caller holds mu.
func (g *callGate) setPace(r float64) {
	if r >= unpaced {
		g.paced, g.probing = false, false
		g.pace.SetLimit(rate.Inf)
		g.metrics.pace.Set(0)
		return
	}
	g.paced, g.paceRate = true, r
	g.pace.SetLimit(rate.Limit(r))
	g.pace.SetBurst(max(1, int(r/20)))
	g.metrics.pace.Set(r)
}

// Paused returns how long calls are still paused for (0: not paused).
func (g *callGate) Paused() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(0, g.pauseUntil.Sub(g.now()))
}

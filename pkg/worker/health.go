package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
)

// outageDetector tells an outage of the Contacts API (most calls failing
// transiently, across many contacts) from contacts that fail on their own.
// During an outage the worker takes no new records, does not dead-letter
// events for running out of retry time (it is not their fault), and lets
// one call per probe interval through to test the API; the first call the
// API answers (anything but a transient failure) ends the outage. Outside
// an outage the per-event retry budget and dead-lettering apply.
//
// It is safe for concurrent use; one serves the whole process.
type outageDetector struct {
	cfg config.Outage
	now func() time.Time
	// onChange is told of each transition (metrics, logs, pausing fetches);
	// it is called without the lock held, in transition order.
	onChange func(out bool, why string)

	mu      sync.Mutex
	buckets [outageBuckets]bucket // calls counted per tenth of the window
	failing map[string]time.Time  // contact -> its last transient failure
	pruneAt int                   // size of failing that makes it pruned
	out     bool
	ended   chan struct{} // closed when the current outage ends
	// nextProbe is when the next call may go through during an outage.
	nextProbe time.Time
	notify    sync.Mutex // keeps onChange calls in transition order
}

// outageBuckets is how many parts the window is counted in: memory stays
// the same whatever the rate of calls, and the window slides a tenth at a time.
const outageBuckets = 10

type bucket struct {
	slot            int64 // which tenth of a window since the epoch it counts
	calls, failures int
}

// newOutageDetector returns a detector with the configured thresholds;
// onChange may be nil.
func newOutageDetector(cfg config.Outage, onChange func(out bool, why string)) *outageDetector {
	if onChange == nil {
		onChange = func(bool, string) {}
	}
	return &outageDetector{cfg: cfg, now: time.Now, onChange: onChange, failing: map[string]time.Time{}, pruneAt: 1024}
}

// Record counts the result of one call to the Contacts API for contact.
// A call cut short by the worker itself (ctx ended) says nothing of the API
// and is not counted.
func (o *outageDetector) Record(ctx context.Context, contact string, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	failed := err != nil && contacts.IsTransient(err)
	now := o.now()
	o.mu.Lock()
	width := max(int64(o.cfg.Window/outageBuckets), 1)
	slot := now.UnixNano() / width
	b := &o.buckets[slot%outageBuckets]
	if b.slot != slot {
		*b = bucket{slot: slot}
	}
	b.calls++
	if failed {
		b.failures++
		o.failing[contact] = now
		if len(o.failing) >= o.pruneAt {
			o.prune(now)
		}
	}
	var change func()
	switch {
	case o.out && !failed:
		o.out = false
		close(o.ended)
		change = func() { o.onChange(false, "the Contacts API answered") }
	case !o.out && failed:
		calls, failures := 0, 0
		for _, b := range o.buckets {
			if slot-b.slot < outageBuckets {
				calls += b.calls
				failures += b.failures
			}
		}
		if calls < o.cfg.MinCalls || float64(failures) < o.cfg.FailureRatio*float64(calls) {
			break
		}
		if o.prune(now); len(o.failing) < o.cfg.MinContacts {
			break
		}
		o.out = true
		o.ended = make(chan struct{})
		o.nextProbe = now.Add(o.cfg.ProbeInterval)
		why := fmt.Sprintf("%d of %d calls in the last %v failed transiently, across %d contacts", failures, calls, o.cfg.Window, len(o.failing))
		change = func() { o.onChange(true, why) }
	}
	if change == nil {
		o.mu.Unlock()
		return
	}
	o.notify.Lock() // taken before mu is released: transitions are reported in order
	o.mu.Unlock()
	defer o.notify.Unlock()
	change()
}

// prune forgets the contacts whose last failure left the window. The
// caller holds mu.
func (o *outageDetector) prune(now time.Time) {
	cut := now.Add(-o.cfg.Window)
	for c, at := range o.failing {
		if at.Before(cut) {
			delete(o.failing, c)
		}
	}
	o.pruneAt = max(1024, 2*len(o.failing))
}

// Out reports whether the API is out now.
func (o *outageDetector) Out() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.out
}

// Ended returns a channel closed when the current outage ends, or nil when
// there is none (a nil channel never receives: select on it freely).
func (o *outageDetector) Ended() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.out {
		return nil
	}
	return o.ended
}

// Admit returns when a call may be made: at once outside an outage; during
// one, when this caller gets the next probe slot or the outage ends. It
// returns how long the caller was held back, or ctx's error.
func (o *outageDetector) Admit(ctx context.Context) (time.Duration, error) {
	start := o.now()
	for {
		o.mu.Lock()
		if !o.out {
			o.mu.Unlock()
			return o.now().Sub(start), nil
		}
		now := o.now()
		if !now.Before(o.nextProbe) {
			o.nextProbe = now.Add(o.cfg.ProbeInterval)
			o.mu.Unlock()
			return now.Sub(start), nil // this call is the probe
		}
		ended, wait := o.ended, o.nextProbe.Sub(now)
		o.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return o.now().Sub(start), ctx.Err()
		case <-ended:
		case <-t.C:
		}
		t.Stop()
	}
}

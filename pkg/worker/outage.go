package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
)

// OutageDetector tells an outage of the Contacts API (most calls failing
// transiently, across many contacts) from contacts that fail on their own.
// During an outage the worker takes no new records, does not dead-letter
// events for running out of retry time (it is not their fault), and lets
// one call per probe interval through to test the API; the first call the
// API answers (anything but a transient failure) ends the outage. Outside
// an outage the per-event retry budget and dead-lettering apply.
//
// It is safe for concurrent use; one serves the whole process.
type OutageDetector struct {
	cfg config.Outage
	now func() time.Time
	// onChange is told of each transition (metrics, logs, pausing fetches);
	// it is called without the lock held, in transition order.
	onChange func(out bool, why string)

	mu        sync.Mutex
	calls     []call         // in the window, oldest first
	failures  int            // transient failures among calls
	failing   map[string]int // transient failures in the window, per contact
	out       bool
	ended     chan struct{} // closed when the current outage ends
	nextProbe time.Time
	notify    sync.Mutex // keeps onChange calls in transition order
}

type call struct {
	at      time.Time
	contact string
	failed  bool
}

// NewOutageDetector returns a detector with the configured thresholds;
// onChange may be nil.
func NewOutageDetector(cfg config.Outage, onChange func(out bool, why string)) *OutageDetector {
	if onChange == nil {
		onChange = func(bool, string) {}
	}
	return &OutageDetector{cfg: cfg, now: time.Now, onChange: onChange, failing: map[string]int{}}
}

// Record counts the result of one call to the Contacts API for contact.
// A call cut short by the worker itself (ctx ended) says nothing of the API
// and is not counted.
func (o *OutageDetector) Record(ctx context.Context, contact string, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	failed := err != nil && contacts.IsTransient(err)
	now := o.now()
	o.mu.Lock()
	o.expire(now)
	o.calls = append(o.calls, call{at: now, contact: contact, failed: failed})
	if failed {
		o.failures++
		o.failing[contact]++
	}
	var change func()
	switch {
	case o.out && !failed:
		o.out = false
		close(o.ended)
		change = func() { o.onChange(false, "the Contacts API answered") }
	case !o.out && failed && len(o.calls) >= o.cfg.MinCalls && len(o.failing) >= o.cfg.MinContacts &&
		float64(o.failures) >= o.cfg.FailureRatio*float64(len(o.calls)):
		o.out = true
		o.ended = make(chan struct{})
		o.nextProbe = now.Add(o.cfg.ProbeInterval)
		calls, failures, contactsN := len(o.calls), o.failures, len(o.failing)
		change = func() {
			o.onChange(true, outageWhy(calls, failures, contactsN, o.cfg.Window))
		}
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

func outageWhy(calls, failures, contactsN int, window time.Duration) string {
	return fmt.Sprintf("%d of %d calls in the last %v failed transiently, across %d contacts", failures, calls, window, contactsN)
}

// expire drops the calls older than the window. The caller holds mu.
func (o *OutageDetector) expire(now time.Time) {
	cut := now.Add(-o.cfg.Window)
	i := 0
	for ; i < len(o.calls) && o.calls[i].at.Before(cut); i++ {
		if c := o.calls[i]; c.failed {
			o.failures--
			if o.failing[c.contact]--; o.failing[c.contact] == 0 {
				delete(o.failing, c.contact)
			}
		}
	}
	o.calls = o.calls[i:]
}

// Out reports whether the API is out now.
func (o *OutageDetector) Out() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.out
}

// Ended returns a channel closed when the current outage ends, or nil when
// there is none (a nil channel never receives: select on it freely).
func (o *OutageDetector) Ended() <-chan struct{} {
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
func (o *OutageDetector) Admit(ctx context.Context) (time.Duration, error) {
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

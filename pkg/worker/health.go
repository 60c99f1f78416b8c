package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
)

// apiHealth judges a failure by who it hits: a fault of one contact (a 422
// on its email among contacts applied fine) or of the Contacts API as a
// whole, or of this service's configuration (5xx, 429, refused
// credentials, redirects, 404 for every contact, refused connections),
// whatever the status class. It keeps the latest answer of each contact
// called lately — distinct contacts, so that the retries of a few failing
// ones never weigh like many — and:
//
//   - declares a fault of the API when the failures of distinct contacts
//     reach WORKER_OUTAGE_MIN_CONTACTS and WORKER_OUTAGE_FAILURE_RATIO of the
//     contacts with an answer in WORKER_OUTAGE_WINDOW, naming the cause most
//     of them met: reading pauses, one call per WORKER_OUTAGE_PROBE_INTERVAL
//     tests the API, the first one the API answers as working ends it;
//   - answers whether a contact's failure can be its own (healthyOther):
//     only when another contact was answered as working — since the
//     failure began, for failures typical of a fault of the whole API. At
//     any traffic level, quiet hours included and from the first failure,
//     nothing is dead-lettered without that evidence;
//   - wakes the retries waiting in backoff when a contact that was failing
//     is answered as working again (recovered), so that when a partial
//     outage ends the contacts it held come back at once, not at their
//     next backoff.
//
// An answer "as working" is a success, or a refusal of the contact's own
// request (CauseRejected: the API read and judged it). It is safe for
// concurrent use; one serves the whole process.
type apiHealth struct {
	cfg config.Outage
	now func() time.Time
	// onChange is told of each transition (metrics, logs); cause is empty
	// when the fault ends. It is called without the lock held, in order.
	onChange func(cause contacts.Cause, why string)

	mu     sync.Mutex
	latest map[string]answer // contact -> its latest answer in the window
	// inflight counts the calls under way per contact: a contact called
	// but not yet answered weighs against declaring a fault, so that the
	// first fast failures (a 503 from a load balancer returns sooner than
	// a success) are not taken for the whole API while calls to other
	// contacts are still out.
	inflight map[string]int
	pruneAt  int
	// working are the latest answers as working of two distinct contacts,
	// the newer first: enough to answer healthyOther for any contact.
	working   [2]answer
	fault     contacts.Cause // "" when none
	ended     chan struct{}  // closed when the current fault ends
	nextProbe time.Time
	fresh     int           // callers waiting to probe whose contact is not failing now
	recovered chan struct{} // closed, and replaced, when a failing contact recovers
	notify    sync.Mutex    // keeps onChange calls in transition order
}

type answer struct {
	contact string
	at      time.Time // when the answer came
	// started is when its call was made: evidence "since" a time counts
	// only calls made after it, since a call made before a fault began can
	// still come back working after it.
	started time.Time
	working bool
	cause   contacts.Cause
}

func newAPIHealth(cfg config.Outage, onChange func(cause contacts.Cause, why string)) *apiHealth {
	if onChange == nil {
		onChange = func(contacts.Cause, string) {}
	}
	return &apiHealth{cfg: cfg, now: time.Now, onChange: onChange, latest: map[string]answer{}, inflight: map[string]int{}, pruneAt: 1024, recovered: make(chan struct{})}
}

// apiWide reports whether a failure of cause is one a fault of the whole
// API (or of this service's configuration) produces. A 429 is not: the
// call gate slows the process down for it (pause, pace), and probing once
// per interval on top would only slow it further.
func apiWide(cause contacts.Cause) bool {
	return cause != contacts.CauseRejected && cause != contacts.CauseRateLimited && cause != ""
}

// Begin tells of a call for contact being made; the function it returns
// takes the call's result as Record does.
func (h *apiHealth) Begin(contact string) (done func(ctx context.Context, err error)) {
	h.mu.Lock()
	h.inflight[contact]++
	started := h.now()
	h.mu.Unlock()
	return func(ctx context.Context, err error) {
		h.mu.Lock()
		if h.inflight[contact]--; h.inflight[contact] <= 0 {
			delete(h.inflight, contact)
		}
		h.mu.Unlock()
		h.record(ctx, contact, err, started)
	}
}

// Record takes the result of one call for contact, made just now. A call
// the worker cut short itself (ctx ended) says nothing of the API; neither
// does a DELETE answered 404 (contacts.ErrGone: done, or a wrong base URL).
func (h *apiHealth) Record(ctx context.Context, contact string, err error) {
	h.record(ctx, contact, err, h.now())
}

func (h *apiHealth) record(ctx context.Context, contact string, err error, started time.Time) {
	if err != nil && ctx.Err() != nil || errors.Is(err, contacts.ErrGone) {
		return
	}
	cause := contacts.CauseOf(err)
	a := answer{contact: contact, at: h.now(), started: started, working: err == nil || cause == contacts.CauseRejected, cause: cause}
	if err != nil && cause == "" {
		a.cause = contacts.CauseUnavailable // not a typed answer: as a network failure
	}
	h.mu.Lock()
	prev, had := h.latest[contact]
	h.latest[contact] = a
	if len(h.latest) >= h.pruneAt {
		h.prune(a.at)
	}
	if a.working {
		if h.working[0].contact != contact {
			h.working[1] = h.working[0]
		}
		h.working[0] = a
		if had && !prev.working {
			close(h.recovered)
			h.recovered = make(chan struct{})
		}
	}
	var change func()
	switch {
	case h.fault != "" && a.working:
		was := h.fault
		h.fault = ""
		close(h.ended)
		change = func() {
			h.onChange("", fmt.Sprintf("the Contacts API answered contact %s as working: the %s fault is over", contact, was))
		}
	case h.fault == "" && !a.working && apiWide(a.cause):
		if cause, why, ok := h.faulty(a.at); ok {
			h.fault = cause
			h.ended = make(chan struct{})
			h.nextProbe = a.at.Add(h.cfg.ProbeInterval)
			change = func() { h.onChange(cause, why) }
		}
	}
	if change == nil {
		h.mu.Unlock()
		return
	}
	h.notify.Lock() // taken before mu is released: transitions are reported in order
	h.mu.Unlock()
	defer h.notify.Unlock()
	change()
}

// faulty decides, from the latest answers of the contacts called in the
// window and the contacts called but not answered yet, whether the API is at fault, and names the cause most failing
// contacts met. The caller holds mu.
func (h *apiHealth) faulty(now time.Time) (contacts.Cause, string, bool) {
	h.prune(now)
	var failing, working int
	byCause := map[contacts.Cause]int{}
	for _, a := range h.latest {
		switch {
		case a.working:
			working++
		case apiWide(a.cause):
			failing++
			byCause[a.cause]++
		}
	}
	pending := 0 // called, not answered yet
	for c := range h.inflight {
		if _, ok := h.latest[c]; !ok {
			pending++
		}
	}
	if failing < h.cfg.MinContacts || float64(failing) < h.cfg.FailureRatio*float64(failing+working+pending) {
		return "", "", false
	}
	causes := make([]contacts.Cause, 0, len(byCause))
	for c := range byCause {
		causes = append(causes, c)
	}
	slices.SortFunc(causes, func(a, b contacts.Cause) int { // most contacts first; by name between equals
		return cmp.Or(cmp.Compare(byCause[b], byCause[a]), cmp.Compare(a, b))
	})
	return causes[0], fmt.Sprintf("%d of %d contacts called in the last %v failed (%s: %d), none of them on its own", failing, failing+working, h.cfg.Window, causes[0], byCause[causes[0]]), true
}

// prune forgets the answers older than the window. The caller holds mu.
func (h *apiHealth) prune(now time.Time) {
	cut := now.Add(-h.cfg.Window)
	for c, a := range h.latest {
		if a.at.Before(cut) {
			delete(h.latest, c)
		}
	}
	h.pruneAt = max(1024, 2*len(h.latest))
}

// healthyOther reports whether a contact other than contact was answered as
// working at or after since (any time, for the zero since), while no fault
// of the API is declared: the evidence that a failure of contact is its
// own.
func (h *apiHealth) healthyOther(contact string, since time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fault != "" {
		return false
	}
	for _, a := range h.working {
		if a.contact != "" && a.contact != contact {
			return !a.started.Before(since)
		}
	}
	return false
}

// Fault returns the cause of the current fault of the API, "" when none.
func (h *apiHealth) Fault() contacts.Cause {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fault
}

// Out reports whether a fault of the API is declared now.
func (h *apiHealth) Out() bool { return h.Fault() != "" }

// Ended returns a channel closed when the current fault ends, or nil when
// there is none (a nil channel never receives: select on it freely).
func (h *apiHealth) Ended() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fault == "" {
		return nil
	}
	return h.ended
}

// Recovered returns a channel closed when the next failing contact is
// answered as working again.
func (h *apiHealth) Recovered() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.recovered
}

// Admit returns when a call may be made: at once outside a fault; during
// one, when this caller gets the next probe slot or the fault ends. It
// returns how long the caller was held back, or ctx's error.
func (h *apiHealth) Admit(ctx context.Context, contact string) (time.Duration, error) {
	start := h.now()
	fresh := false // counted in h.fresh while waiting
	defer func() {
		if fresh {
			h.mu.Lock()
			h.fresh--
			h.mu.Unlock()
		}
	}()
	for {
		h.mu.Lock()
		if h.fault == "" {
			h.mu.Unlock()
			return h.now().Sub(start), nil
		}
		// A contact failing now probes only when no other waits: one whose
		// failures are its own would otherwise keep a fault it made up going.
		a, known := h.latest[contact]
		failing := known && !a.working
		switch {
		case !failing && !fresh:
			fresh = true
			h.fresh++
		case failing && fresh: // its contact failed meanwhile
			fresh = false
			h.fresh--
		}
		now := h.now()
		if !now.Before(h.nextProbe) && (!failing || h.fresh == 0) {
			h.nextProbe = now.Add(h.cfg.ProbeInterval)
			h.mu.Unlock()
			return now.Sub(start), nil // this call is the probe
		}
		ended, wait := h.ended, max(h.nextProbe.Sub(now), 0)
		if failing && !now.Before(h.nextProbe) {
			wait = h.cfg.ProbeInterval / 4 // a fresh contact's turn: look again shortly
		}
		h.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return h.now().Sub(start), ctx.Err()
		case <-ended:
		case <-t.C:
		}
		t.Stop()
	}
}

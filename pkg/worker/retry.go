package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
)

// errRetriesExhausted wraps the last transient error once the retry budget
// (max elapsed time) is spent.
var errRetriesExhausted = errors.New("retries exhausted")

// retrier makes one event's call until it succeeds or its failure is found
// to be the contact's own, retrying with exponential backoff and jitter
// (cenkalti/backoff), honouring Retry-After. Whether a failure is the
// contact's own is decided by who else it hits (apiHealth): only while
// another contact is answered as working. It holds no state between
// calls, so one serves every partition.
type retrier struct {
	cfg config.Retry
	// gate, when set, admits each call (a slot, the pause the API asked
	// for, a probe during a fault); the time it holds a call back does not
	// spend the budget.
	gate *callGate
	// health, when set, says whether another contact is answered as
	// working; without it every failure is the contact's own.
	health *apiHealth
	// sleep waits d, or until wake is closed (then a little more, spread),
	// or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration, wake <-chan struct{}) error
	now   func() time.Time
}

// newRetrier returns a retrier with the configured backoff; gate and health
// may be nil.
func newRetrier(cfg config.Retry, gate *callGate, health *apiHealth) *retrier {
	return &retrier{cfg: cfg, gate: gate, health: health, sleep: sleepOrWake, now: time.Now}
}

// retryNotify is told of each failed attempt before its wait (logs, metrics).
type retryNotify func(attempt int, err error, wait time.Duration)

// Do makes op's call for contact until:
//
//   - it succeeds: nil;
//   - a DELETE finds the contact gone (contacts.ErrGone) and another
//     contact was answered as working by a call made since (the base URL
//     is right): nil;
//   - the API rejects the contact's request (contacts.CauseRejected, a 422
//     on its email): that error at once (dead-lettered as permanent) —
//     the API answered and judged this request, at any traffic level —
//     unless a fault of the whole API is declared now;
//   - it fails in a way a fault of the whole API produces (refused
//     credentials, a redirect, a 404 to a PUT) and another contact was
//     answered as working since this event first failed: that error;
//   - it keeps failing transiently (network, 408, 425, 429, 5xx) for the
//     whole budget (WORKER_RETRY_MAX_ELAPSED_TIME, counted outside the time
//     the gate held it back) and another contact was answered as working
//     since it first failed: an error wrapping errRetriesExhausted;
//   - ctx ends: ctx's error (the caller abandons the event).
//
// Anything else is retried: at any traffic level nothing is given up on
// without evidence that the API works for others. A wait ends early when a
// contact that was failing is answered as working again. Do returns the
// number of calls made.
func (r *retrier) Do(ctx context.Context, contact string, op func(context.Context) error, onRetry retryNotify) (int, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = r.cfg.InitialInterval
	b.Multiplier = r.cfg.Multiplier
	b.MaxInterval = r.cfg.MaxInterval
	b.MaxElapsedTime = 0 // the budget is kept below, without the time held back
	b.RandomizationFactor = backoff.DefaultRandomizationFactor
	b.Reset()
	start := r.now()
	var held time.Duration
	var firstFailure time.Time
	for attempt := 1; ; attempt++ {
		release := func(error) {}
		if r.gate != nil {
			rel, d, err := r.gate.Acquire(ctx, contact)
			held += d
			if err != nil {
				return attempt - 1, err
			}
			release = rel
		}
		err := op(ctx)
		release(err)
		if err == nil {
			return attempt, nil
		}
		if ctx.Err() != nil {
			return attempt, ctx.Err()
		}
		if firstFailure.IsZero() {
			firstFailure = r.now()
		}
		var wait time.Duration
		if contacts.CauseOf(err) == contacts.CauseRateLimited {
			// The process called too fast, not this contact: the call goes
			// again once the pause the API asked for is over (the gate holds
			// it), its backoff not grown, its budget not spent.
			wait = rateLimitedWait(err)
			held += wait
		} else if wait = b.NextBackOff(); contacts.RetryAfterOf(err) > wait {
			wait = contacts.RetryAfterOf(err) // the API knows better when it will be back
		}
		if r.gate != nil {
			wait = min(wait, max(r.gate.maxPause, r.cfg.MaxInterval))
		}
		if r.health != nil && r.health.Out() {
			// During a fault of the API every waiting event is a probe
			// candidate: the fault ends only when one calls.
			wait = min(wait, r.health.cfg.ProbeInterval)
		}
		switch cause := contacts.CauseOf(err); {
		case errors.Is(err, contacts.ErrGone):
			// Evidence from around this 404 (a call made at most
			// goneEvidence before it, or after): a base URL gone wrong a
			// minute ago answers every call so, and its deletes must not
			// count as done; calls made together with it are evidence.
			if r.own(contact, firstFailure.Add(-goneEvidence)) {
				return attempt, nil // deleted already
			}
		case cause == contacts.CauseRejected:
			if r.health == nil || !r.health.Out() {
				return attempt, err
			}
		case !contacts.IsTransient(err):
			if r.own(contact, firstFailure) {
				return attempt, err
			}
		case r.now().Sub(start)-held+wait > r.cfg.MaxElapsedTime:
			if r.own(contact, firstFailure) {
				return attempt, fmt.Errorf("%w after %d attempts: %w", errRetriesExhausted, attempt, err)
			}
			start, held = r.now(), 0 // nobody else answered: not this event's fault; a new budget
		}
		onRetry(attempt, err, wait)
		var wake <-chan struct{}
		if r.health != nil {
			wake = r.health.Recovered()
		}
		// A waiting event is not active: its admission goes to another
		// meanwhile, and is taken again to call.
		tok := tokenOf(ctx)
		tok.release()
		if err := r.sleep(ctx, wait, wake); err != nil {
			return attempt, err
		}
		t0 := r.now()
		if err := tok.acquire(ctx); err != nil {
			return attempt, err
		}
		held += r.now().Sub(t0) // held back by other events, not this one's fault
	}
}

// goneEvidence is how long before a DELETE's 404 a call answered as working
// still shows the base URL right: the calls sent together with the DELETE.
const goneEvidence = 5 * time.Second

// rateLimitedWait is how long a call answered 429 waits before it goes
// again: the Retry-After it came with, else a second.
func rateLimitedWait(err error) time.Duration {
	if ra := contacts.RetryAfterOf(err); ra > 0 {
		return ra
	}
	return time.Second
}

// own reports whether a failure of contact's call is its own: another
// contact was answered as working by a call made since since (any time,
// when zero).
func (r *retrier) own(contact string, since time.Time) bool {
	return r.health == nil || r.health.healthyOther(contact, since)
}

// wakeSpread spreads the retries a recovery wakes, so they do not all call
// at once.
const wakeSpread = 250 * time.Millisecond

// sleepOrWake waits d, or until wake is closed and then up to wakeSpread
// more (at most d in all), or until ctx ends (its error). A wait of nothing
// returns at once: no timer, no trip through the scheduler.
func sleepOrWake(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	case <-wake:
		return sleepCtx(ctx, min(d, rand.N(wakeSpread)))
	}
}

// sleepCtx waits d or until ctx ends (its error).
func sleepCtx(ctx context.Context, d time.Duration) error { return sleepOrWake(ctx, d, nil) }

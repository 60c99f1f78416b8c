package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
)

// errRetriesExhausted wraps the last transient error once the retry budget
// (max elapsed time) is spent.
var errRetriesExhausted = errors.New("retries exhausted")

// retrier retries transient failures with exponential backoff and jitter
// (cenkalti/backoff), honouring Retry-After, until the budget is spent.
type retrier struct {
	cfg config.Retry
	// gate, when set, holds attempts back during an outage of the API and
	// keeps an outage from spending the budget.
	gate retryGate
	// sleep waits d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time
}

// retryGate is what the retrier needs of the outage detector (OutageDetector).
type retryGate interface {
	// Admit returns when an attempt may be made, with how long it held the
	// caller back, or ctx's error.
	Admit(ctx context.Context) (time.Duration, error)
	// Out reports whether the API is out for everyone now.
	Out() bool
}

// newRetrier returns a retrier with the configured backoff; gate may be nil.
// It holds no state between calls, so one serves every partition.
func newRetrier(cfg config.Retry, gate retryGate) *retrier {
	return &retrier{cfg: cfg, gate: gate, sleep: sleepCtx, now: time.Now}
}

// retryNotify is told of each failed attempt before its wait (logs, metrics).
type retryNotify func(attempt int, err error, wait time.Duration)

// Do runs op until it succeeds, fails other than transiently, the budget is
// spent (the error then wraps ErrRetriesExhausted and the last failure), or
// ctx ends (ctx's error: the caller abandons the event). It returns the
// number of attempts made.
//
// The budget counts the time spent outside an outage only: time held back
// by the gate does not count, and a budget that runs out while the API is
// out for everyone starts again, so an outage dead-letters nothing.
func (r *retrier) Do(ctx context.Context, op func(context.Context) error, onRetry retryNotify) (int, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = r.cfg.InitialInterval
	b.Multiplier = r.cfg.Multiplier
	b.MaxInterval = r.cfg.MaxInterval
	b.MaxElapsedTime = 0 // the budget is kept below, without outage time
	b.RandomizationFactor = backoff.DefaultRandomizationFactor
	b.Reset()
	start := r.now()
	var held time.Duration
	for attempt := 1; ; attempt++ {
		if r.gate != nil {
			d, err := r.gate.Admit(ctx)
			held += d
			if err != nil {
				return attempt - 1, err
			}
		}
		err := op(ctx)
		if err == nil {
			return attempt, nil
		}
		if ctx.Err() != nil {
			return attempt, ctx.Err()
		}
		if !contacts.IsTransient(err) {
			return attempt, err
		}
		wait := b.NextBackOff()
		if ra := contacts.RetryAfterOf(err); ra > wait {
			wait = ra // the API knows better when it will be back
		}
		if r.now().Sub(start)-held+wait > r.cfg.MaxElapsedTime {
			if r.gate == nil || !r.gate.Out() {
				return attempt, fmt.Errorf("%w after %d attempts: %w", errRetriesExhausted, attempt, err)
			}
			start, held = r.now(), 0 // out for everyone: not this event's fault
		}
		onRetry(attempt, err, wait)
		if err := r.sleep(ctx, wait); err != nil {
			return attempt, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

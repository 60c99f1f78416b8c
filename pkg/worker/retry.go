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

// ErrRetriesExhausted wraps the last transient error once the retry budget
// (max elapsed time) is spent.
var ErrRetriesExhausted = errors.New("retries exhausted")

// Retrier retries transient failures with exponential backoff and jitter
// (cenkalti/backoff), honouring Retry-After, until the budget is spent.
type Retrier struct {
	cfg config.Retry
	// sleep waits d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

// NewRetrier returns a retrier with the configured backoff. It holds no
// state between calls, so one serves every partition.
func NewRetrier(cfg config.Retry) *Retrier {
	return &Retrier{cfg: cfg, sleep: sleepCtx}
}

// OnRetry is told of each failed attempt before its wait (logs, metrics).
type OnRetry func(attempt int, err error, wait time.Duration)

// Do runs op until it succeeds, fails other than transiently, the budget is
// spent (the error then wraps ErrRetriesExhausted and the last failure), or
// ctx ends (ctx's error: the caller abandons the event). It returns the
// number of attempts made.
func (r *Retrier) Do(ctx context.Context, op func(context.Context) error, onRetry OnRetry) (int, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = r.cfg.InitialInterval
	b.Multiplier = r.cfg.Multiplier
	b.MaxInterval = r.cfg.MaxInterval
	b.MaxElapsedTime = r.cfg.MaxElapsedTime
	b.RandomizationFactor = backoff.DefaultRandomizationFactor
	b.Reset()
	for attempt := 1; ; attempt++ {
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
		if ra := contacts.RetryAfterOf(err); ra > wait && wait != backoff.Stop {
			wait = ra // the API knows better when it will be back
		}
		if wait == backoff.Stop || b.GetElapsedTime()+wait > r.cfg.MaxElapsedTime {
			return attempt, fmt.Errorf("%w after %d attempts: %w", ErrRetriesExhausted, attempt, err)
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

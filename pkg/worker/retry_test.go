package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
)

var testRetry = config.Retry{InitialInterval: 100 * time.Millisecond, Multiplier: 2, MaxInterval: time.Second, MaxElapsedTime: 10 * time.Second}

// fakeSleep records the waits instead of sleeping, and moves no clock: the
// budget is then spent only by Retry-After waits longer than it.
func newTestRetrier(waits *[]time.Duration) *retrier {
	r := newRetrier(testRetry, nil)
	r.sleep = func(ctx context.Context, d time.Duration) error {
		*waits = append(*waits, d)
		return ctx.Err()
	}
	return r
}

func TestRetrier(t *testing.T) {
	transient := &contacts.TransientError{Status: 503, Err: errors.New("down")}
	permanent := &contacts.PermanentError{Status: 400, Err: errors.New("bad")}
	tests := []struct {
		name         string
		results      []error // one per attempt; the last repeats
		wantAttempts int
		wantErr      error // nil, ErrRetriesExhausted, or the permanent error
		check        func(t *testing.T, waits []time.Duration)
	}{
		{"first try", []error{nil}, 1, nil, nil},
		{"503 twice then 200", []error{transient, transient, nil}, 3, nil, func(t *testing.T, waits []time.Duration) {
			if len(waits) != 2 {
				t.Fatalf("waits %v, want 2", waits)
			}
			// Exponential with ±50% jitter: the first around 100ms, the second around 200ms.
			if waits[0] < 50*time.Millisecond || waits[0] > 150*time.Millisecond || waits[1] < 100*time.Millisecond || waits[1] > 300*time.Millisecond {
				t.Errorf("waits %v, want about 100ms then 200ms", waits)
			}
		}},
		{"permanent at once", []error{permanent}, 1, permanent, func(t *testing.T, waits []time.Duration) {
			if len(waits) != 0 {
				t.Errorf("waited %v before giving up on a permanent error", waits)
			}
		}},
		{"transient then permanent", []error{transient, permanent}, 2, permanent, nil},
		{"Retry-After honoured", []error{&contacts.TransientError{Status: 429, RetryAfter: 3 * time.Second, Err: errors.New("slow down")}, nil}, 2, nil, func(t *testing.T, waits []time.Duration) {
			if len(waits) != 1 || waits[0] != 3*time.Second {
				t.Errorf("waits %v, want [3s]", waits)
			}
		}},
		{"Retry-After beyond the budget", []error{&contacts.TransientError{Status: 503, RetryAfter: time.Hour, Err: errors.New("maintenance")}}, 1, errRetriesExhausted, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var waits []time.Duration
			attempt := 0
			n, err := newTestRetrier(&waits).Do(context.Background(), func(context.Context) error {
				res := tt.results[min(attempt, len(tt.results)-1)]
				attempt++
				return res
			}, func(int, error, time.Duration) {})
			if n != tt.wantAttempts {
				t.Errorf("attempts %d, want %d", n, tt.wantAttempts)
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, waits)
			}
		})
	}
}

// With real time, a transient failure that never passes is retried until
// the budget is spent, then reported as exhausted with the last failure.
func TestRetrierBudget(t *testing.T) {
	r := newRetrier(config.Retry{InitialInterval: 10 * time.Millisecond, Multiplier: 2, MaxInterval: 40 * time.Millisecond, MaxElapsedTime: 300 * time.Millisecond}, nil)
	start := time.Now()
	retries := 0
	n, err := r.Do(context.Background(), func(context.Context) error {
		return &contacts.TransientError{Status: 503, Err: errors.New("down")}
	}, func(int, error, time.Duration) { retries++ })
	if !errors.Is(err, errRetriesExhausted) || !contacts.IsTransient(err) {
		t.Errorf("got %v, want exhausted wrapping the transient error", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("took %v with a 300ms budget", elapsed)
	}
	if n < 4 || retries != n-1 {
		t.Errorf("%d attempts, %d retries; want several attempts, one retry fewer", n, retries)
	}
}

// Stopping ends the retries at once, with the context's error.
func TestRetrierStopsOnCancel(t *testing.T) {
	r := newRetrier(config.Retry{InitialInterval: time.Hour, Multiplier: 2, MaxInterval: time.Hour, MaxElapsedTime: 10 * time.Hour}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	start := time.Now()
	_, err := r.Do(ctx, func(context.Context) error { return &contacts.TransientError{Err: errors.New("down")} }, func(int, error, time.Duration) {})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %v, want context.Canceled at once", err, time.Since(start))
	}
}

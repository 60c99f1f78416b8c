package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
)

var testRetry = config.Retry{InitialInterval: 100 * time.Millisecond, Multiplier: 2, MaxInterval: time.Second, MaxElapsedTime: 10 * time.Second}

var (
	unavailable = &contacts.TransientError{Status: 503, Cause: contacts.CauseUnavailable, Err: errors.New("down")}
	rejected    = &contacts.PermanentError{Status: 422, Cause: contacts.CauseRejected, Err: errors.New("bad email")}
	refused     = &contacts.PermanentError{Status: 401, Cause: contacts.CauseCredentials, Err: errors.New("token")}
)

// newTestRetrier records the waits instead of sleeping, and moves no clock:
// the budget is then spent only by waits longer than it. With health, its
// evidence decides what is the contact's own.
func newTestRetrier(waits *[]time.Duration, health *apiHealth) *retrier {
	r := newRetrier(testRetry, nil, health)
	r.sleep = func(ctx context.Context, d time.Duration, _ <-chan struct{}) error {
		*waits = append(*waits, d)
		return ctx.Err()
	}
	return r
}

// Without a health view every failure is the contact's own: the retrier
// alone, its backoff and Retry-After.
func TestRetrier(t *testing.T) {
	tests := []struct {
		name         string
		results      []error // one per attempt; the last repeats
		wantAttempts int
		wantErr      error // nil, errRetriesExhausted, or the permanent error
		check        func(t *testing.T, waits []time.Duration)
	}{
		{"first try", []error{nil}, 1, nil, nil},
		{"503 twice then 200", []error{unavailable, unavailable, nil}, 3, nil, func(t *testing.T, waits []time.Duration) {
			if len(waits) != 2 {
				t.Fatalf("waits %v, want 2", waits)
			}
			// Exponential with ±50% jitter: the first around 100ms, the second around 200ms.
			if waits[0] < 50*time.Millisecond || waits[0] > 150*time.Millisecond || waits[1] < 100*time.Millisecond || waits[1] > 300*time.Millisecond {
				t.Errorf("waits %v, want about 100ms then 200ms", waits)
			}
		}},
		{"rejected at once", []error{rejected}, 1, rejected, func(t *testing.T, waits []time.Duration) {
			if len(waits) != 0 {
				t.Errorf("waited %v before giving up on a rejection", waits)
			}
		}},
		{"transient then rejected", []error{unavailable, rejected}, 2, rejected, nil},
		{"gone: done", []error{contacts.ErrGone}, 1, nil, nil},
		{"Retry-After honoured", []error{&contacts.TransientError{Status: 429, Cause: contacts.CauseRateLimited, RetryAfter: 3 * time.Second, Err: errors.New("slow down")}, nil}, 2, nil, func(t *testing.T, waits []time.Duration) {
			if len(waits) != 1 || waits[0] != 3*time.Second {
				t.Errorf("waits %v, want [3s]", waits)
			}
		}},
		{"Retry-After beyond the budget", []error{&contacts.TransientError{Status: 503, Cause: contacts.CauseUnavailable, RetryAfter: time.Hour, Err: errors.New("maintenance")}}, 1, errRetriesExhausted, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var waits []time.Duration
			attempt := 0
			n, err := newTestRetrier(&waits, nil).Do(context.Background(), "c", func(context.Context) error {
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

// With a health view, a failure is given up on only with evidence that the
// API works for another contact (a rejection, 422, excepted: the API
// answered and judged the request): for failures a fault of the whole API
// produces, evidence since the event first failed. Until then the call is
// retried, however long it takes.
func TestRetrierNeedsEvidence(t *testing.T) {
	hour := &contacts.TransientError{Status: 503, Cause: contacts.CauseUnavailable, RetryAfter: time.Hour, Err: errors.New("maintenance")}
	tests := []struct {
		name     string
		err      error
		before   bool // another contact answered as working before the first failure
		after    int  // ... after this many attempts (0: never)
		wantN    int
		wantErr  error
		wantDone bool
	}{
		{"rejected, the API working for others before: dead-lettered at once", rejected, true, 0, 1, rejected, false},
		{"rejected, nobody else answered yet (quiet hours): dead-lettered at once, the API judged it", rejected, false, 0, 1, rejected, false},
		{"credentials refused, others worked before but not since: retried", refused, true, 4, 4, refused, false},
		{"transient past its budget, nobody else answered: retried (a new budget) until someone is", hour, false, 3, 3, errRetriesExhausted, false},
		{"transient past its budget, others working before only: still retried", hour, true, 2, 2, errRetriesExhausted, false},
		{"a DELETE's 404, others working just before it (sent together): done", contacts.ErrGone, true, 0, 1, nil, true},
		{"a DELETE's 404 before any evidence: retried until there is", contacts.ErrGone, false, 2, 2, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newAPIHealth(testOutage, nil)
			if tt.before {
				h.Record(context.Background(), "other", nil)
			}
			var waits []time.Duration
			r := newTestRetrier(&waits, h)
			attempts := 0
			n, err := r.Do(context.Background(), "c", func(ctx context.Context) error {
				attempts++
				if attempts > 10 {
					t.Fatal("retried past the evidence")
				}
				if tt.after > 0 && attempts == tt.after {
					time.Sleep(time.Millisecond) // after the first failure, on the clock
					h.Record(ctx, "other", nil)
				}
				return tt.err
			}, func(int, error, time.Duration) {})
			if n != tt.wantN {
				t.Errorf("attempts %d, want %d", n, tt.wantN)
			}
			if tt.wantDone {
				if err != nil {
					t.Errorf("got %v, want done", err)
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// With real time, a transient failure that never passes while others work
// is retried until the budget is spent, then reported as exhausted with
// the last failure.
func TestRetrierBudget(t *testing.T) {
	r := newRetrier(config.Retry{InitialInterval: 10 * time.Millisecond, Multiplier: 2, MaxInterval: 40 * time.Millisecond, MaxElapsedTime: 300 * time.Millisecond}, nil, nil)
	start := time.Now()
	retries := 0
	n, err := r.Do(context.Background(), "c", func(context.Context) error { return unavailable }, func(int, error, time.Duration) { retries++ })
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
	r := newRetrier(config.Retry{InitialInterval: time.Hour, Multiplier: 2, MaxInterval: time.Hour, MaxElapsedTime: 10 * time.Hour}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	start := time.Now()
	_, err := r.Do(ctx, "c", func(context.Context) error { return unavailable }, func(int, error, time.Duration) {})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %v, want context.Canceled at once", err, time.Since(start))
	}
}

// A wait in backoff ends early, within wakeSpread, when a contact that was
// failing is answered as working again: a partial outage's end brings its
// contacts back at once, not at their next backoff.
func TestRetrierWakesOnRecovery(t *testing.T) {
	h := newAPIHealth(testOutage, nil)
	r := newRetrier(config.Retry{InitialInterval: time.Hour, Multiplier: 2, MaxInterval: time.Hour, MaxElapsedTime: 10 * time.Hour}, nil, h)
	h.Record(context.Background(), "shard-mate", unavailable)
	var failing atomic.Bool
	failing.Store(true)
	done := make(chan time.Time, 1)
	go func() {
		_, err := r.Do(context.Background(), "c", func(context.Context) error {
			if failing.Load() {
				return unavailable
			}
			return nil
		}, func(int, error, time.Duration) {})
		if err != nil {
			t.Error(err)
		}
		done <- time.Now()
	}()
	time.Sleep(50 * time.Millisecond) // c is in its hour-long wait
	failing.Store(false)
	recovered := time.Now()
	h.Record(context.Background(), "shard-mate", nil) // the shard is back
	select {
	case at := <-done:
		if d := at.Sub(recovered); d > wakeSpread+time.Second {
			t.Errorf("applied %v after the recovery", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting its backoff after a failing contact recovered")
	}
}

// A DELETE's 404 with evidence only from long before it (the base URL may
// have gone wrong since): retried until a call made around or after it is
// answered as working.
func TestRetrierGoneNeedsRecentEvidence(t *testing.T) {
	h := newAPIHealth(testOutage, nil)
	old := time.Now().Add(-time.Minute)
	h.now = func() time.Time { return old }
	h.Record(context.Background(), "other", nil)
	h.now = time.Now
	var waits []time.Duration
	attempts := 0
	n, err := newTestRetrier(&waits, h).Do(context.Background(), "c", func(ctx context.Context) error {
		attempts++
		if attempts > 10 {
			t.Fatal("retried past the evidence")
		}
		if attempts == 3 {
			h.Record(ctx, "other", nil)
		}
		return contacts.ErrGone
	}, func(int, error, time.Duration) {})
	if n != 3 || err != nil {
		t.Errorf("%d attempts, %v; want done at the 3rd, once another contact was answered", n, err)
	}
}

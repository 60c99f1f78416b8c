package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
)

var testOutage = config.Outage{Window: 10 * time.Second, MinCalls: 10, FailureRatio: 0.8, MinContacts: 3, ProbeInterval: time.Second}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var (
	down = &contacts.TransientError{Status: 503, Err: errors.New("down")}
	bad  = &contacts.PermanentError{Status: 422, Err: errors.New("bad email")}
)

type result struct {
	contact string
	err     error
}

func calls(n int, contactsN int, err error) []result {
	var rs []result
	for i := 0; i < n; i++ {
		rs = append(rs, result{fmt.Sprintf("c%d", i%contactsN), err})
	}
	return rs
}

func TestOutageDetection(t *testing.T) {
	tests := []struct {
		name  string
		calls []result
		want  bool
	}{
		{"all fail across many contacts", calls(10, 5, down), true},
		{"too few calls", calls(9, 9, down), false},
		{"one contact failing alone", calls(50, 1, down), false},
		{"two contacts failing: under min contacts", calls(50, 2, down), false},
		{"most succeed", append(calls(5, 5, down), calls(20, 5, nil)...), false},
		{"permanent failures are answers", calls(20, 5, bad), false},
		{"80% failing", append(calls(2, 2, nil), calls(8, 4, down)...), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var changes []bool
			o := newOutageDetector(testOutage, func(out bool, _ string) { changes = append(changes, out) })
			for _, c := range tt.calls {
				o.Record(context.Background(), c.contact, c.err)
			}
			if o.Out() != tt.want {
				t.Errorf("out %v, want %v", o.Out(), tt.want)
			}
			if tt.want && (len(changes) != 1 || !changes[0]) {
				t.Errorf("transitions %v, want one to out", changes)
			}
		})
	}
}

func TestOutageWindowForgetsOldCalls(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	o := newOutageDetector(testOutage, nil)
	o.now = c.now
	for _, r := range calls(9, 9, down) {
		o.Record(context.Background(), r.contact, r.err)
	}
	c.add(11 * time.Second) // those nine leave the window
	o.Record(context.Background(), "x", down)
	if o.Out() {
		t.Error("out on calls older than the window")
	}
}

// A call the worker cancelled itself says nothing of the API.
func TestOutageIgnoresCancelledCalls(t *testing.T) {
	o := newOutageDetector(testOutage, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, r := range calls(20, 5, down) {
		o.Record(ctx, r.contact, r.err)
	}
	if o.Out() {
		t.Error("out on calls the worker cancelled")
	}
}

// During an outage one caller per probe interval gets through; the first
// answer ends the outage and lets every waiting caller go.
func TestOutageAdmitProbesThenReleases(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	var changes []bool
	o := newOutageDetector(testOutage, func(out bool, _ string) { changes = append(changes, out) })
	o.now = c.now
	if _, err := o.Admit(context.Background()); err != nil {
		t.Fatal("held back outside an outage")
	}
	for _, r := range calls(10, 5, down) {
		o.Record(context.Background(), r.contact, r.err)
	}
	if !o.Out() || o.Ended() == nil {
		t.Fatal("not out")
	}
	admitted := make(chan int, 10)
	for i := 0; i < 5; i++ {
		go func(i int) {
			if _, err := o.Admit(context.Background()); err == nil {
				admitted <- i
			}
		}(i)
	}
	time.Sleep(50 * time.Millisecond)
	if len(admitted) != 0 {
		t.Fatalf("%d callers let through before the probe interval", len(admitted))
	}
	c.add(time.Second) // the probe slot opens; the waiters' real timers fire within the real second
	select {
	case <-admitted:
	case <-time.After(3 * time.Second):
		t.Fatal("no probe let through after the probe interval")
	}
	time.Sleep(50 * time.Millisecond)
	if len(admitted) != 0 {
		t.Errorf("%d more callers let through in one probe interval, want only the probe", len(admitted))
	}
	o.Record(context.Background(), "c0", nil) // the probe succeeded
	for i := 0; i < 4; i++ {
		select {
		case <-admitted:
		case <-time.After(3 * time.Second):
			t.Fatalf("waiting callers not released by the end of the outage (%d of 4)", i)
		}
	}
	if o.Out() || len(changes) != 2 || changes[0] != true || changes[1] != false {
		t.Errorf("out %v, transitions %v; want in then out", o.Out(), changes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := o.Admit(ctx); err != nil {
		t.Errorf("Admit after the outage: %v", err)
	}
}

// The retry budget does not run out during an outage: an event retried
// through one is not dead-lettered; outside one it is.
func TestRetrierKeepsRetryingThroughAnOutage(t *testing.T) {
	cfg := config.Retry{InitialInterval: time.Millisecond, Multiplier: 2, MaxInterval: 2 * time.Millisecond, MaxElapsedTime: 20 * time.Millisecond}
	o := newOutageDetector(config.Outage{Window: time.Minute, MinCalls: 1, FailureRatio: 0.5, MinContacts: 1, ProbeInterval: time.Millisecond}, nil)
	r := newRetrier(cfg, o)
	start := time.Now()
	n, err := r.Do(context.Background(), func(ctx context.Context) error {
		var err error
		if time.Since(start) < 200*time.Millisecond { // ten budgets long
			err = down
		}
		o.Record(ctx, "c", err)
		return err
	}, func(int, error, time.Duration) {})
	if err != nil || n < 2 {
		t.Errorf("got %v after %d attempts, want applied after the outage", err, n)
	}
	// The same failure with no outage (one contact is not one): dead-lettered.
	alone := newOutageDetector(testOutage, nil)
	r = newRetrier(cfg, alone)
	_, err = r.Do(context.Background(), func(ctx context.Context) error { alone.Record(ctx, "c", down); return down }, func(int, error, time.Duration) {})
	if !errors.Is(err, errRetriesExhausted) {
		t.Errorf("got %v, want retries exhausted", err)
	}
}

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

var testOutage = config.Outage{Window: 10 * time.Second, FailureRatio: 0.8, MinContacts: 3, ProbeInterval: time.Second}

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
	rateLimited = &contacts.TransientError{Status: 429, Cause: contacts.CauseRateLimited, Err: errors.New("slow down")}
	redirected  = &contacts.PermanentError{Status: 301, Cause: contacts.CauseRedirected, Location: "https://contacts.example/api", Err: errors.New("moved")}
	notFound    = &contacts.PermanentError{Status: 404, Cause: contacts.CauseNotFound, Err: errors.New("no such route")}
)

type reply struct {
	contact string
	err     error
}

// calls returns n calls spread over contactsN contacts, each answered err.
func calls(n, contactsN int, err error) []reply {
	var rs []reply
	for i := 0; i < n; i++ {
		rs = append(rs, reply{fmt.Sprintf("c%d", i%contactsN), err})
	}
	return rs
}

func concat(cs ...[]reply) []reply {
	var out []reply
	for _, c := range cs {
		out = append(out, c...)
	}
	return out
}

// ok returns one successful call for each of n contacts named prefix0…
func ok(prefix string, n int) []reply {
	var rs []reply
	for i := 0; i < n; i++ {
		rs = append(rs, reply{fmt.Sprintf("%s%d", prefix, i), nil})
	}
	return rs
}

// The classification of a failure by who it hits: distinct contacts, each
// by its latest answer, so retries of a few never weigh like many.
func TestHealthFaultDetection(t *testing.T) {
	tests := []struct {
		name  string
		calls []reply
		want  contacts.Cause
	}{
		{"three contacts, all unavailable", calls(3, 3, unavailable), contacts.CauseUnavailable},
		{"two contacts failing: under the minimum", calls(50, 2, unavailable), ""},
		{"one contact retried a hundred times", calls(100, 1, unavailable), ""},
		{"a partial outage: 30% of contacts failing", concat(ok("h", 7), calls(30, 3, unavailable)), ""},
		{"80% failing", concat(ok("h", 1), calls(8, 4, unavailable)), contacts.CauseUnavailable},
		{"rejections are the API working: every contact 422", calls(20, 5, rejected), ""},
		{"credentials refused for every contact", calls(3, 3, refused), contacts.CauseCredentials},
		{"every call redirected", calls(3, 3, redirected), contacts.CauseRedirected},
		{"every PUT 404", calls(4, 4, notFound), contacts.CauseNotFound},
		{"every call 429: the gate slows down for it, no fault", calls(5, 5, rateLimited), ""},
		{"DELETEs answered 404 say nothing", calls(5, 5, contacts.ErrGone), ""},
		{"the cause most contacts met is named", []reply{{"x", unavailable}, {"y", refused}, {"z", unavailable}}, contacts.CauseUnavailable},
		{"contacts that recovered no longer count", concat(calls(2, 2, unavailable), ok("c", 2), []reply{{"x", unavailable}}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var changes []contacts.Cause
			h := newAPIHealth(testOutage, func(c contacts.Cause, _ string) { changes = append(changes, c) })
			for _, c := range tt.calls {
				h.Record(context.Background(), c.contact, c.err)
			}
			if got := h.Fault(); got != tt.want {
				t.Errorf("fault %q, want %q", got, tt.want)
			}
			if tt.want != "" && (len(changes) != 1 || changes[0] != tt.want) {
				t.Errorf("transitions %v, want one to %s", changes, tt.want)
			}
		})
	}
}

func TestHealthWindowForgetsOldAnswers(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	h := newAPIHealth(testOutage, nil)
	h.now = c.now
	for _, r := range calls(2, 2, unavailable) {
		h.Record(context.Background(), r.contact, r.err)
	}
	c.add(11 * time.Second) // those two leave the window
	h.Record(context.Background(), "x", unavailable)
	if h.Out() {
		t.Error("a fault on answers older than the window")
	}
}

// A call the worker cancelled itself says nothing of the API.
func TestHealthIgnoresCancelledCalls(t *testing.T) {
	h := newAPIHealth(testOutage, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, r := range calls(20, 5, unavailable) {
		h.Record(ctx, r.contact, r.err)
	}
	if h.Out() {
		t.Error("a fault on calls the worker cancelled")
	}
}

// The evidence that a failure is a contact's own: another contact answered
// as working (since a time, when given), and no fault of the API.
func TestHealthyOther(t *testing.T) {
	c := &clock{t: time.Unix(100, 0)}
	h := newAPIHealth(testOutage, nil)
	h.now = c.now
	if h.healthyOther("x", time.Time{}) {
		t.Error("evidence before any answer")
	}
	h.Record(context.Background(), "x", nil)
	if h.healthyOther("x", time.Time{}) {
		t.Error("x's own success taken as evidence for x")
	}
	h.Record(context.Background(), "y", rejected) // the API read and judged y's request
	if !h.healthyOther("x", time.Time{}) || !h.healthyOther("y", time.Time{}) {
		t.Error("each of x and y is evidence for the other")
	}
	c.add(time.Minute)
	if h.healthyOther("x", c.now()) {
		t.Error("an answer from before since taken as evidence")
	}
	h.Record(context.Background(), "z", nil)
	if !h.healthyOther("x", c.now()) {
		t.Error("z's answer now is evidence for x since now")
	}
	// A call made before x's failure, answered working after it (the token
	// revoked while it was out): no evidence since the failure.
	done := h.Begin("w")
	c.add(time.Second)
	failed := c.now()
	c.add(time.Second)
	done(context.Background(), nil)
	if h.healthyOther("x", failed) {
		t.Error("a call made before the failure, answered after it, taken as evidence since the failure")
	}
	for _, r := range calls(12, 12, unavailable) { // 12 of 15 contacts
		h.Record(context.Background(), "f"+r.contact, r.err)
	}
	if h.Fault() == "" || h.healthyOther("x", time.Time{}) {
		t.Errorf("fault %q: no evidence of anyone's own failure during a fault of the API", h.Fault())
	}
}

// Recovered is closed when a failing contact is answered as working.
func TestHealthRecovered(t *testing.T) {
	h := newAPIHealth(testOutage, nil)
	wake := h.Recovered()
	h.Record(context.Background(), "a", nil)
	h.Record(context.Background(), "b", unavailable)
	select {
	case <-wake:
		t.Fatal("woken though no failing contact recovered")
	default:
	}
	h.Record(context.Background(), "b", nil)
	select {
	case <-wake:
	default:
		t.Fatal("not woken when b recovered")
	}
	if h.Recovered() == wake {
		t.Error("the next recovery has no channel of its own")
	}
}

// During a fault one caller per probe interval gets through; the first
// answer as working ends it and lets every waiting caller go.
func TestHealthAdmitProbesThenReleases(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	var changes []contacts.Cause
	h := newAPIHealth(testOutage, func(cause contacts.Cause, _ string) { changes = append(changes, cause) })
	h.now = c.now
	if _, err := h.Admit(context.Background(), "c"); err != nil {
		t.Fatal("held back outside a fault")
	}
	for _, r := range calls(3, 3, refused) {
		h.Record(context.Background(), r.contact, r.err)
	}
	if !h.Out() || h.Ended() == nil {
		t.Fatal("no fault")
	}
	admitted := make(chan int, 10)
	for i := 0; i < 5; i++ {
		go func(i int) {
			if _, err := h.Admit(context.Background(), "c"); err == nil {
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
	h.Record(context.Background(), "c0", refused) // the probe: still refused
	if !h.Out() {
		t.Fatal("a probe refused like the rest ended the fault")
	}
	h.Record(context.Background(), "c0", nil) // the next probe worked
	for i := 0; i < 4; i++ {
		select {
		case <-admitted:
		case <-time.After(3 * time.Second):
			t.Fatalf("waiting callers not released by the end of the fault (%d of 4)", i)
		}
	}
	if h.Out() || len(changes) != 2 || changes[0] != contacts.CauseCredentials || changes[1] != "" {
		t.Errorf("fault %q, transitions %v; want credentials_refused then over", h.Fault(), changes)
	}
}

// The first answers are fast failures while calls to other contacts are
// still out: no fault until those answer too.
func TestHealthWaitsForCallsInFlight(t *testing.T) {
	h := newAPIHealth(config.Outage{Window: time.Minute, FailureRatio: 0.8, MinContacts: 3, ProbeInterval: time.Second}, nil)
	var pending []func(context.Context, error)
	for i := range 10 {
		pending = append(pending, h.Begin(fmt.Sprintf("ok%d", i)))
	}
	unavailable := &contacts.TransientError{Status: 503, Cause: contacts.CauseUnavailable}
	for i := range 3 {
		h.Begin(fmt.Sprintf("bad%d", i))(context.Background(), unavailable)
	}
	if h.Out() {
		t.Fatal("a fault declared from 3 failures while 10 other contacts' calls were out")
	}
	for _, done := range pending {
		done(context.Background(), unavailable)
	}
	if h.Fault() != contacts.CauseUnavailable {
		t.Fatalf("fault = %q once the 10 calls failed too, want unavailable", h.Fault())
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/record"
)

// fakeSession is the part of a sarama session ConsumeClaim uses.
type fakeSession struct {
	ctx    context.Context
	mu     sync.Mutex
	marked int64
	meta   string
}

func (s *fakeSession) Claims() map[string][]int32 { return nil }
func (s *fakeSession) MemberID() string           { return "m" }
func (s *fakeSession) GenerationID() int32        { return 1 }
func (s *fakeSession) MarkOffset(_ string, _ int32, offset int64, meta string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if offset < s.marked {
		panic(fmt.Sprintf("mark moved back from %d to %d", s.marked, offset))
	}
	if offset > s.marked { // as sarama: the same offset changes nothing
		s.marked, s.meta = offset, meta
	}
}
func (s *fakeSession) Commit() {}
func (s *fakeSession) ResetOffset(_ string, _ int32, offset int64, meta string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if offset <= s.marked {
		s.marked, s.meta = offset, meta
	}
}
func (s *fakeSession) MarkMessage(m *sarama.ConsumerMessage, _ string) {}
func (s *fakeSession) Context() context.Context                        { return s.ctx }
func (s *fakeSession) mark() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.marked
}

type fakeClaim struct{ msgs chan *sarama.ConsumerMessage }

func (c fakeClaim) Topic() string                            { return "contact-events" }
func (c fakeClaim) Partition() int32                         { return 0 }
func (c fakeClaim) InitialOffset() int64                     { return 0 }
func (c fakeClaim) HighWaterMarkOffset() int64               { return int64(cap(c.msgs)) }
func (c fakeClaim) Messages() <-chan *sarama.ConsumerMessage { return c.msgs }

// slowAPI answers every call after a short delay, holds the calls of
// contacts in blocked until released, and records overlapping calls of one
// contact and the most calls at once.
type slowAPI struct {
	delay time.Duration

	mu       sync.Mutex
	order    map[string][]string // contact -> event ids in call order
	active   map[string]int
	now, top int
	overlaps int
	blocked  map[string]chan struct{}
}

func newSlowAPI(delay time.Duration, blocked ...string) *slowAPI {
	a := &slowAPI{delay: delay, order: map[string][]string{}, active: map[string]int{}, blocked: map[string]chan struct{}{}}
	for _, c := range blocked {
		a.blocked[c] = make(chan struct{})
	}
	return a
}

func (a *slowAPI) Put(ctx context.Context, c contacts.Contact, key string) error {
	a.mu.Lock()
	if a.active[c.AcmeContactID]++; a.active[c.AcmeContactID] > 1 {
		a.overlaps++
	}
	a.now++
	a.top = max(a.top, a.now)
	block := a.blocked[c.AcmeContactID]
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.active[c.AcmeContactID]--
		a.now--
		a.mu.Unlock()
	}()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	time.Sleep(a.delay)
	a.mu.Lock()
	a.order[c.AcmeContactID] = append(a.order[c.AcmeContactID], key)
	a.mu.Unlock()
	return nil
}

func (a *slowAPI) Delete(ctx context.Context, id, key string) error {
	return a.Put(ctx, contacts.Contact{AcmeContactID: id}, key)
}

func (a *slowAPI) release(contact string) { close(a.blocked[contact]) }

func (a *slowAPI) applied() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, ids := range a.order {
		n += len(ids)
	}
	return n
}

// isBlocked reports whether a call of contact is in progress.
func isBlocked(a *slowAPI, contact string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.active[contact] > 0
}

func newTestHandler(api contactsAPI, maxInFlight, buffer int, ordering string) *dispatcher {
	p := newTestProcessor(&fakeAPI{results: []error{nil}}, &fakeDLQ{})
	p.API = api
	gate := newCallGate(maxInFlight, nil, 0, time.Second, p.Metrics)
	p.Retrier = newRetrier(config.Retry{InitialInterval: time.Millisecond, Multiplier: 2, MaxInterval: 5 * time.Millisecond, MaxElapsedTime: 100 * time.Millisecond}, gate, nil)
	return newDispatcher(p, config.WorkerFleet{MaxInFlight: maxInFlight, PartitionBuffer: buffer, Ordering: ordering}, nil)
}

// event returns the record at offset of contact's n-th event.
func event(offset int64, contact string, n int) *sarama.ConsumerMessage {
	v := fmt.Sprintf(`{"event_type":"contact.updated","event_id":"evt_%s_%03d","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":%q}}`, contact, n, contact)
	return &sarama.ConsumerMessage{Topic: "contact-events", Offset: offset, Key: []byte(contact), Value: []byte(v)}
}

// feed puts events for contactsN contacts, perContact each, interleaved,
// into a claim whose channel holds them all; it returns the claim and the
// number of records.
func feed(contactsN, perContact int, first ...string) (fakeClaim, int) {
	c := fakeClaim{msgs: make(chan *sarama.ConsumerMessage, contactsN*perContact+len(first)+1)} // room for one more
	off := int64(0)
	for _, f := range first {
		c.msgs <- event(off, f, 0)
		off++
	}
	for n := 0; n < perContact; n++ {
		for i := 0; i < contactsN; i++ {
			c.msgs <- event(off, fmt.Sprintf("c%02d", i), n)
			off++
		}
	}
	return c, int(off)
}

func runClaim(t *testing.T, h *dispatcher, claim fakeClaim) (*fakeSession, context.CancelFunc, chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &fakeSession{ctx: ctx}
	done := make(chan error, 1)
	go func() { done <- h.ConsumeClaim(s, claim) }()
	t.Cleanup(cancel)
	return s, cancel, done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func checkOrder(t *testing.T, a *slowAPI, perContact int) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for c, ids := range a.order {
		if len(ids) != perContact {
			t.Errorf("%s: %d applied, want %d", c, len(ids), perContact)
		}
		for i, id := range ids {
			if want := fmt.Sprintf("evt_%s_%03d", c, i); id != want {
				t.Errorf("%s: call %d was %s, want %s (partition order)", c, i, id, want)
				break
			}
		}
	}
	if a.overlaps != 0 {
		t.Errorf("%d calls overlapped another call of the same contact", a.overlaps)
	}
}

func TestConsumeClaimOrdersPerKeyAndRunsKeysConcurrently(t *testing.T) {
	tests := []struct {
		name             string
		ordering         string
		maxInFlight      int
		wantMin, wantMax int // calls at once
	}{
		{"by key", config.OrderingKey, 8, 2, 8},
		{"by key, bound 1", config.OrderingKey, 1, 1, 1},
		{"by partition", config.OrderingPartition, 8, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newSlowAPI(time.Millisecond)
			claim, n := feed(20, 10)
			h := newTestHandler(api, tt.maxInFlight, 1000, tt.ordering)
			s, cancel, done := runClaim(t, h, claim)
			waitFor(t, "every event applied and marked", func() bool { return s.mark() == int64(n) })
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			checkOrder(t, api, 10)
			if api.top < tt.wantMin || api.top > tt.wantMax {
				t.Errorf("%d calls at once at most, want between %d and %d", api.top, tt.wantMin, tt.wantMax)
			}
		})
	}
}

// A contact whose call does not finish holds back only itself: every other
// contact's events are applied, and the mark stays at its event (the
// watermark) until it finishes.
func TestConsumeClaimStuckContactHoldsOnlyItselfAndTheWatermark(t *testing.T) {
	api := newSlowAPI(0, "stuck")
	claim, n := feed(10, 5, "stuck")
	claim.msgs <- event(int64(n), "stuck", 1) // its second event waits behind the first
	n++
	h := newTestHandler(api, 4, 1000, config.OrderingKey)
	s, cancel, done := runClaim(t, h, claim)
	buffered := h.proc.Metrics.buffered.WithLabelValues("contact-events", "0")
	// The API counts a call before the partition's loop hears it finished:
	// wait on the loop's own state.
	waitFor(t, "every other contact applied and finished", func() bool {
		return api.applied() == 50 && testutil.ToFloat64(buffered) == 2
	})
	if got := s.mark(); got != 0 {
		t.Errorf("marked %d while offset 0 is unfinished, want 0", got)
	}
	if got := testutil.ToFloat64(h.proc.Metrics.watermarkLag.WithLabelValues("contact-events", "0")); got != float64(n) {
		t.Errorf("watermark lag %v, want %d", got, n)
	}
	api.release("stuck")
	waitFor(t, "the stuck contact applied and everything marked", func() bool { return s.mark() == int64(n) })
	cancel()
	<-done
	if got := api.order["stuck"]; len(got) != 2 || got[0] != "evt_stuck_000" || got[1] != "evt_stuck_001" {
		t.Errorf("stuck contact applied %v, want its two events in order", got)
	}
}

// At the buffer bound the partition is read no further: the records stay
// in the claim's channel (in Kafka, for the real consumer).
func TestConsumeClaimBackPressure(t *testing.T) {
	api := newSlowAPI(0, "c00", "c01", "c02", "c03", "c04", "c05")
	claim, n := feed(6, 3)
	h := newTestHandler(api, 100, 5, config.OrderingKey)
	_, cancel, done := runClaim(t, h, claim)
	waitFor(t, "5 records taken", func() bool { return len(claim.msgs) == n-5 })
	time.Sleep(50 * time.Millisecond)
	if got := len(claim.msgs); got != n-5 {
		t.Errorf("%d records left unread, want %d: the buffer bound of 5 was passed", got, n-5)
	}
	cancel()
	<-done
}

// On stop (or revocation) the calls in flight are cancelled, nothing more is
// started, nothing unfinished is marked, and ConsumeClaim returns only after
// every call has returned.
func TestConsumeClaimStopAbandonsInFlight(t *testing.T) {
	api := newSlowAPI(0, "stuck")
	claim, _ := feed(0, 0, "free", "stuck")
	claim.msgs <- event(2, "stuck", 1) // waits behind the stuck one: never started
	h := newTestHandler(api, 4, 100, config.OrderingKey)
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "the free contact applied", func() bool { return api.applied() == 1 })
	waitFor(t, "the stuck contact in flight", func() bool { return isBlocked(api, "stuck") })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ConsumeClaim did not return after the session ended")
	}
	if isBlocked(api, "stuck") {
		t.Error("ConsumeClaim returned while a call was still in flight")
	}
	if got := s.mark(); got != 1 {
		t.Errorf("marked %d, want 1: past the applied event at 0, not past the abandoned one at 1", got)
	}
	if got := len(api.order["stuck"]); got != 0 {
		t.Errorf("%d events of the stuck contact applied after the stop, want none", got)
	}
	if got := testutil.ToFloat64(h.proc.Metrics.inFlight); got != 0 {
		t.Errorf("events in flight %v after the stop, want 0", got)
	}
}

// Revocation (the claim's channel closing, as a cooperative rebalance does)
// stops the partition the same way.
func TestConsumeClaimRevoked(t *testing.T) {
	api := newSlowAPI(0, "stuck")
	claim, _ := feed(0, 0, "free", "stuck")
	h := newTestHandler(api, 4, 100, config.OrderingKey)
	s, _, done := runClaim(t, h, claim)
	waitFor(t, "the free contact applied", func() bool { return api.applied() == 1 })
	waitFor(t, "the stuck contact in flight", func() bool { return isBlocked(api, "stuck") })
	close(claim.msgs)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ConsumeClaim did not return after its claim was revoked")
	}
	if s.mark() != 1 {
		t.Errorf("marked %d, want 1 (the abandoned event)", s.mark())
	}
}

// A member taking a partition over skips what its last owner finished above
// the committed offset (the commit's metadata), and applies the rest.
func TestConsumeClaimSkipsWhatTheLastOwnerFinished(t *testing.T) {
	api := newSlowAPI(0, "stuck")
	claim, n := feed(10, 5, "stuck")
	h := newTestHandler(api, 4, 1000, config.OrderingKey)
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "every other contact applied", func() bool { return api.applied() == 50 })
	cancel()
	<-done
	s.mu.Lock()
	marked, meta := s.marked, s.meta
	s.mu.Unlock()
	if marked != 0 || meta == "" {
		t.Fatalf("committed %d with metadata %q, want 0 with the finished records described", marked, meta)
	}

	// The next owner: the same records from the committed offset.
	next := newSlowAPI(0)
	again, _ := feed(10, 5, "stuck")
	h2 := newTestHandler(next, 4, 1000, config.OrderingKey)
	h2.committed = func(string, int32) (int64, string, error) { return marked, meta, nil }
	s2, cancel2, done2 := runClaim(t, h2, again)
	waitFor(t, "everything marked", func() bool { return s2.mark() == int64(n) })
	cancel2()
	<-done2
	if got := next.applied(); got != 1 || len(next.order["stuck"]) != 1 {
		t.Errorf("the next owner applied %d events (%v), want only the stuck one", got, next.order)
	}
	if got := testutil.ToFloat64(h2.proc.Metrics.skipped); got != 50 {
		t.Errorf("skipped %v, want 50", got)
	}
}

// An outage declared, then every call in flight cancelled (a rebalance):
// the next session still takes a record, its call is the probe, the API
// answers, the outage ends and everything is applied.
func TestConsumeClaimOutageWithNothingInFlight(t *testing.T) {
	api := newSlowAPI(0)
	claim, n := feed(6, 1)
	h := newTestHandler(api, 4, 100, config.OrderingKey)
	out := newAPIHealth(config.Outage{Window: time.Minute, FailureRatio: 0.5, MinContacts: 1, ProbeInterval: 50 * time.Millisecond}, nil)
	out.Record(context.Background(), "x", &contacts.TransientError{Status: 503, Cause: contacts.CauseUnavailable})
	if !out.Out() {
		t.Fatal("not out")
	}
	h.health = out
	h.proc.Health = out
	gate := newCallGate(4, out, 0, time.Second, h.proc.Metrics)
	h.proc.Retrier = newRetrier(config.Retry{InitialInterval: time.Millisecond, Multiplier: 2, MaxInterval: 5 * time.Millisecond, MaxElapsedTime: time.Second}, gate, out)
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "everything applied after the probe", func() bool { return s.mark() == int64(n) })
	cancel()
	<-done
	if out.Out() {
		t.Error("still out after the API answered")
	}
}

// fakeStates keeps contacts' states in memory, as the state topic would:
// writes can be held or failed, and what each wrote is kept.
type fakeStates struct {
	store *contactstate.Store
	// preload is installed by load.
	preload map[string]contactstate.State

	mu        sync.Mutex
	hold      chan struct{} // when set, writes wait for it to close
	fail      int           // writes still to fail
	written   map[string]contactstate.State
	writes    int
	forwarded map[int32][]string // partition -> event ids
}

func newFakeStates(store *contactstate.Store) *fakeStates {
	return &fakeStates{store: store, written: map[string]contactstate.State{}, forwarded: map[int32][]string{}}
}

func (f *fakeStates) load(_ context.Context, p, _ int32) error {
	part := contactstate.NewPartitionState()
	for c, s := range f.preload {
		part.Put(c, s)
	}
	f.store.Install(p, part)
	return nil
}

func (f *fakeStates) drop(p int32) { f.store.Drop(p) }

func (f *fakeStates) write(ctx context.Context, p int32, contacts []string) error {
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.fail > 0 {
		f.fail--
		return errors.New("broker unavailable")
	}
	for _, c := range contacts {
		f.written[c] = f.store.Get(p, c)
	}
	return nil
}

func (f *fakeStates) forward(_ context.Context, m *sarama.ConsumerMessage, to int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, _ := record.Identity(m)
	f.forwarded[to] = append(f.forwarded[to], id)
	return nil
}

func (f *fakeStates) newestWritten(contact string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written[contact].Newest.EventID
}

func newStatefulHandler(api contactsAPI) (*dispatcher, *fakeStates) {
	h := newTestHandler(api, 8, 1000, config.OrderingKey)
	h.proc.State = contactstate.NewStore()
	h.proc.Guard = guard{}
	states := newFakeStates(h.proc.State)
	h.state = states
	return h, states
}

// An event whose contact's state changed is finished only once the state's
// record is written: until then its offset is not marked, and a write that
// fails is tried again.
func TestConsumeClaimMarksOnlyWhatTheStateTopicHolds(t *testing.T) {
	api := newSlowAPI(0)
	claim, n := feed(5, 2)
	h, states := newStatefulHandler(api)
	states.hold = make(chan struct{})
	states.fail = 2
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "every event applied", func() bool { return api.applied() == n })
	time.Sleep(3 * flushInterval)
	if got := s.mark(); got != 0 {
		t.Fatalf("marked %d while no state was written, want 0", got)
	}
	states.mu.Lock()
	close(states.hold)
	states.mu.Unlock()
	waitFor(t, "everything marked once written", func() bool { return s.mark() == int64(n) })
	cancel()
	<-done
	for i := range 5 {
		c := fmt.Sprintf("c%02d", i)
		if got := states.newestWritten(c); got != fmt.Sprintf("evt_%s_001", c) {
			t.Errorf("%s: newest written %q, want its second event", c, got)
		}
	}
	if got := testutil.ToFloat64(h.proc.Metrics.stateWriteFailures); got != 2 {
		t.Errorf("state write failures %v, want 2", got)
	}
}

// A stop waits for the write in flight and makes a last one for what is
// left, so what was applied is committed; a last write that fails leaves
// its events uncommitted (the next owner applies them again).
func TestConsumeClaimStopWritesTheStates(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprint("last write fails=", fail), func(t *testing.T) {
			api := newSlowAPI(0)
			claim, n := feed(3, 1)
			h, states := newStatefulHandler(api)
			states.hold = make(chan struct{})
			s, cancel, done := runClaim(t, h, claim)
			waitFor(t, "every event applied", func() bool { return api.applied() == n })
			cancel()
			time.Sleep(20 * time.Millisecond)
			select {
			case <-done:
				t.Fatal("ConsumeClaim returned while a state write was in flight")
			default:
			}
			states.mu.Lock()
			if fail {
				states.fail = 10
			}
			close(states.hold)
			states.mu.Unlock()
			<-done
			want := int64(n)
			if fail {
				want = 0
			}
			if got := s.mark(); got != want {
				t.Errorf("marked %d, want %d", got, want)
			}
		})
	}
}

// The states rebuilt on assignment decide: an event older than its
// contact's newest is stale, never applied; its offset is marked at once.
func TestConsumeClaimUsesTheLoadedStates(t *testing.T) {
	api := newSlowAPI(0)
	claim := fakeClaim{msgs: make(chan *sarama.ConsumerMessage, 3)}
	claim.msgs <- event(0, "x", 0) // 2025-05-17T17:06:39Z
	h, states := newStatefulHandler(api)
	states.preload = map[string]contactstate.State{"x": {Newest: contactstate.Mark{EventID: "newer", At: ts("2025-05-17T18:00:00Z")}}}
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "the stale event marked", func() bool { return s.mark() == 1 })
	cancel()
	<-done
	if api.applied() != 0 {
		t.Errorf("applied %v, want nothing: older than x's newest", api.order)
	}
	if states.writes != 0 {
		t.Errorf("%d state writes for a stale event, want none", states.writes)
	}
}

// A record whose key belongs to another partition is forwarded there, in
// order, not applied here.
func TestConsumeClaimForwardsMisplacedRecords(t *testing.T) {
	api := newSlowAPI(0)
	h, states := newStatefulHandler(api)
	h.eventPartitions = 4
	claim := fakeClaim{msgs: make(chan *sarama.ConsumerMessage, 10)}
	var mine, theirs []string
	for i := 0; len(mine) < 2 || len(theirs) < 3; i++ {
		c := fmt.Sprintf("k%d", i)
		m := event(int64(len(mine)+len(theirs)), c, 0)
		if contactstate.Partition([]byte(c), 4) == 0 {
			if len(mine) == 2 {
				continue
			}
			mine = append(mine, c)
		} else {
			if len(theirs) == 3 {
				continue
			}
			theirs = append(theirs, c)
		}
		claim.msgs <- m
	}
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "everything marked", func() bool { return s.mark() == 5 })
	cancel()
	<-done
	if api.applied() != 2 {
		t.Errorf("applied %d, want the 2 records of partition 0", api.applied())
	}
	n := 0
	for to, ids := range states.forwarded {
		for _, id := range ids {
			c := strings.Split(id, "_")[1]
			if contactstate.Partition([]byte(c), 4) != to {
				t.Errorf("%s forwarded to %d, its key belongs to %d", id, to, contactstate.Partition([]byte(c), 4))
			}
			n++
		}
	}
	if n != 3 {
		t.Errorf("forwarded %v, want the 3 others", states.forwarded)
	}
	if got := testutil.ToFloat64(h.proc.Metrics.events.WithLabelValues("contact.updated", "forwarded")); got != 3 {
		t.Errorf("forwarded counted %v, want 3", got)
	}
}

// goneAPI answers 410 to the PUTs of the contacts it names (contacts deleted
// in the API: a failure a fault of the whole API also produces), and as
// slowAPI to the others.
type goneAPI struct {
	*slowAPI
	gone map[string]bool
}

func (a goneAPI) Put(ctx context.Context, c contacts.Contact, key string) error {
	if a.gone[c.AcmeContactID] {
		return &contacts.PermanentError{Status: 410, Cause: contacts.CauseNotFound, Err: errors.New("gone")}
	}
	return a.slowAPI.Put(ctx, c, key)
}

// A fault declared from contacts that fail on their own, in quiet hours:
// the partition's only event in progress is one of theirs, and it keeps
// failing. One more record is read per probe interval, a healthy contact's
// call ends the made-up fault, and the failing contact is then
// dead-lettered (on evidence from a later call): the partition is not held
// for good.
func TestConsumeClaimFaultOfFailingContactsEnds(t *testing.T) {
	api := goneAPI{newSlowAPI(0), map[string]bool{"bad1": true, "bad2": true, "bad3": true}}
	claim, n := feed(6, 1, "bad1")
	h := newTestHandler(api, 4, 100, config.OrderingKey)
	out := newAPIHealth(config.Outage{Window: time.Minute, FailureRatio: 0.8, MinContacts: 3, ProbeInterval: 50 * time.Millisecond}, nil)
	for _, c := range []string{"bad1", "bad2", "bad3"} {
		out.Record(context.Background(), c, &contacts.PermanentError{Status: 410, Cause: contacts.CauseNotFound})
	}
	if !out.Out() {
		t.Fatal("no fault declared")
	}
	h.health = out
	h.proc.Health = out
	gate := newCallGate(4, out, 0, time.Second, h.proc.Metrics)
	h.proc.Retrier = newRetrier(config.Retry{InitialInterval: time.Millisecond, Multiplier: 2, MaxInterval: 5 * time.Millisecond, MaxElapsedTime: time.Second}, gate, out)
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "the healthy contacts applied", func() bool { return api.applied() == 6 })
	if out.Out() {
		t.Error("still at fault after healthy contacts were answered")
	}
	// bad1's 410 is given up on with evidence from a call made after it
	// failed: the next event of another contact. (A call that started
	// before bad1's latest failure is no evidence: on a loaded machine the
	// first one may; the next one, half a second later, is.)
	sent := 0
	deadline := time.Now().Add(10 * time.Second)
	for s.mark() != int64(n+sent) {
		if time.Now().After(deadline) {
			t.Fatalf("the failing contact not dead-lettered after %d later events of other contacts (marked %d)", sent, s.mark())
		}
		if sent < 10 {
			claim.msgs <- event(int64(n+sent), fmt.Sprintf("c9%d", sent), 0)
			sent++
		}
		time.Sleep(500 * time.Millisecond)
	}
	cancel()
	<-done
	if got := api.applied(); got != 6+sent {
		t.Errorf("%d applied, want the %d healthy contacts' events", got, 6+sent)
	}
}

// A state topic that refuses every write: the events waiting for their
// contact's record are bounded too (the partition buffer), so reading
// stops instead of holding ever more offsets.
func TestConsumeClaimStateWritesRefusedStopReading(t *testing.T) {
	api := newSlowAPI(0)
	claim, n := feed(stateWaitingMax+3000, 1)
	h, states := newStatefulHandler(api)
	h.buffer = 50
	states.hold = make(chan struct{}) // every write waits, as one that never ends
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "the bound's worth applied", func() bool { return api.applied() >= stateWaitingMax })
	time.Sleep(200 * time.Millisecond)
	read := n - len(claim.msgs)
	if read > stateWaitingMax+h.buffer+8 {
		t.Errorf("%d records read while no state write was acknowledged, want at most stateWaitingMax (%d) and a buffer (%d)", read, stateWaitingMax, h.buffer)
	}
	if got := s.mark(); got != 0 {
		t.Errorf("marked %d, want 0", got)
	}
	close(states.hold)
	waitFor(t, "everything marked once the writes go through", func() bool { return s.mark() == int64(n) })
	cancel()
	<-done
}

// The oldest unfinished record's age grows while the API holds its event,
// falls to 0 once it is finished, and the partition's series (its lag
// among them) go when the partition is given up.
func TestConsumeClaimOldestUnfinishedAge(t *testing.T) {
	api := newSlowAPI(0, "stuck")
	claim, _ := feed(0, 0)
	m := event(0, "stuck", 0)
	m.Timestamp = time.Now().Add(-time.Minute) // enqueued a minute ago
	claim.msgs <- m
	h := newTestHandler(api, 4, 100, config.OrderingKey)
	s, cancel, done := runClaim(t, h, claim)
	age := func() float64 {
		return testutil.ToFloat64(h.proc.Metrics.oldestUnfinished.WithLabelValues("contact-events", "0"))
	}
	waitFor(t, "the held event's age reported", func() bool { return age() >= 60 })
	api.release("stuck")
	waitFor(t, "the event finished", func() bool { return s.mark() == 1 })
	waitFor(t, "the age back to 0", func() bool { return age() == 0 })
	if got := testutil.CollectAndCount(h.proc.Metrics.lag); got != 1 {
		t.Errorf("%d lag series while the partition is held, want 1", got)
	}
	cancel()
	<-done
	for name, c := range map[string]prometheus.Collector{"lag": h.proc.Metrics.lag, "oldest": h.proc.Metrics.oldestUnfinished} {
		if got := testutil.CollectAndCount(c); got != 0 {
			t.Errorf("%d %s series after the partition was given up, want 0", got, name)
		}
	}
}

// Ready events wait for an admission (activePerSlot × max in flight per
// process) before they get a goroutine: a buffer of distinct contacts does
// not start one per record while the API holds them all.
func TestConsumeClaimBoundsActiveEvents(t *testing.T) {
	names := make([]string, 100)
	for i := range names {
		names[i] = fmt.Sprintf("c%02d", i)
	}
	api := newSlowAPI(0, names...)
	claim, n := feed(100, 1)
	h := newTestHandler(api, 4, 1000, config.OrderingKey)
	base := runtime.NumGoroutine()
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "every record read", func() bool { return len(claim.msgs) == 0 })
	time.Sleep(100 * time.Millisecond)
	if extra := runtime.NumGoroutine() - base; extra > activePerSlot*4+10 {
		t.Errorf("%d goroutines more while 100 events wait for 4 call slots, want about %d (the admissions)", extra, activePerSlot*4)
	}
	for _, c := range names {
		api.release(c)
	}
	waitFor(t, "every event applied", func() bool { return s.mark() == int64(n) })
	cancel()
	<-done
}

// flakyAPI answers 503 to the contacts it names, and as slowAPI to the rest.
type flakyAPI struct {
	*slowAPI
	failing map[string]bool
}

func (a flakyAPI) Put(ctx context.Context, c contacts.Contact, key string) error {
	if a.failing[c.AcmeContactID] {
		return &contacts.TransientError{Status: 503, Cause: contacts.CauseUnavailable, Err: errors.New("down")}
	}
	return a.slowAPI.Put(ctx, c, key)
}

// An event waiting between retries gives its admission back: with one call
// slot (two admissions) and two contacts failing, the others still flow.
func TestConsumeClaimWaitingEventHoldsNoAdmission(t *testing.T) {
	api := flakyAPI{newSlowAPI(time.Millisecond), map[string]bool{"c00": true, "c01": true}}
	claim, n := feed(20, 1)
	h := newTestHandler(api, 1, 1000, config.OrderingKey)
	h.proc.Retrier = newRetrier(config.Retry{InitialInterval: 200 * time.Millisecond, Multiplier: 1, MaxInterval: 200 * time.Millisecond, MaxElapsedTime: time.Hour}, newCallGate(1, nil, 0, time.Second, h.proc.Metrics), nil)
	s, cancel, done := runClaim(t, h, claim)
	waitFor(t, "the 18 healthy contacts applied while two retry", func() bool { return api.applied() == n-2 })
	if s.mark() != 0 {
		t.Errorf("marked %d past c00, which is still retrying", s.mark())
	}
	cancel()
	<-done
}

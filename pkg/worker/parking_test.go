package worker

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/acmecrm/integration-service/pkg/contacts"
	"github.com/acmecrm/integration-service/pkg/parking"
	"github.com/acmecrm/integration-service/pkg/record"
)

// rejectingAPI refuses (422) the contacts in reject and records the event
// ids it applied, per contact.
type rejectingAPI struct {
	mu      sync.Mutex
	reject  map[string]bool
	applied map[string][]string
}

func (a *rejectingAPI) Put(_ context.Context, c contacts.Contact, key string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reject[c.AcmeContactID] {
		return &contacts.PermanentError{Status: 422, Err: fmt.Errorf("bad email")}
	}
	a.applied[c.AcmeContactID] = append(a.applied[c.AcmeContactID], key)
	return nil
}

func (a *rejectingAPI) Delete(ctx context.Context, id, key string) error {
	return a.Put(ctx, contacts.Contact{AcmeContactID: id}, key)
}

// sent records what a publisher sends, acknowledging at once.
type sent struct {
	mu   sync.Mutex
	msgs []*sarama.ProducerMessage
}

func (s *sent) Enqueue(_ context.Context, m *sarama.ProducerMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	return nil
}

type dlqRecord struct{ id, kind, behind string }

func (s *sent) dlq() []dlqRecord {
	var out []dlqRecord
	for _, m := range s.msgs {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[string(x.Key)] = string(x.Value)
		}
		out = append(out, dlqRecord{h[record.HeaderID], h[record.HeaderDLQErrorKind], h[record.HeaderDLQParkedBehind]})
	}
	return out
}

type parkingRig struct {
	api            *rejectingAPI
	dlq, parkedLog *sent
	p              *processor
	store          *parking.Store
	offset         int64
}

func newParkingRig() *parkingRig {
	r := &parkingRig{api: &rejectingAPI{reject: map[string]bool{}, applied: map[string][]string{}}, dlq: &sent{}, parkedLog: &sent{}, store: parking.NewStore()}
	r.p = newTestProcessor(&fakeAPI{results: []error{nil}}, &fakeDLQ{})
	r.p.API = r.api
	r.p.DeadLetterer = &publisher{Producer: r.dlq, Topic: "contact-events-dlq", Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})}
	r.p.Parking = &parkingState{Store: r.store, Writer: &publisher{Producer: r.parkedLog, Topic: "contact-events-parked", Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "y"})}}
	return r
}

// event returns contact's record of id; replays > 0 makes it a replayed
// copy, discard a discard record.
func (r *parkingRig) record(contact, id string, replays int, discard bool) *sarama.ConsumerMessage {
	r.offset++
	v := fmt.Sprintf(`{"event_type":"contact.updated","event_id":%q,"timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":%q}}`, id, contact)
	m := &sarama.ConsumerMessage{Topic: "contact-events", Partition: 3, Offset: r.offset, Key: []byte(contact), Value: []byte(v),
		Headers: []*sarama.RecordHeader{{Key: []byte(record.HeaderID), Value: []byte(id)}}}
	if replays > 0 {
		m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte(record.HeaderDLQReplayCount), Value: []byte(strconv.Itoa(replays))})
	}
	if discard {
		m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte(record.HeaderDLQDiscard), Value: []byte("true")})
	}
	return m
}

func (r *parkingRig) process(t *testing.T, contact, id string, replays int, discard bool, want eventOutcome) {
	t.Helper()
	if got := r.p.Process(context.Background(), r.record(contact, id, replays, discard)); got != want {
		t.Fatalf("%s: %s, want %s", id, got, want)
	}
}

func (r *parkingRig) parked(t *testing.T, contact string) []string {
	t.Helper()
	e, _ := r.store.Get(3, contact)
	// What is in the store was written to the parked topic first, to the
	// partition of the contact's events.
	var last *sarama.ProducerMessage
	for _, m := range r.parkedLog.msgs {
		if k, _ := m.Key.Encode(); string(k) == contact {
			last = m
		}
	}
	if last != nil {
		var value []byte
		if last.Value != nil {
			value, _ = last.Value.Encode()
		}
		written, err := parking.Decode([]byte(contact), value)
		if err != nil || fmt.Sprint(written.Events) != fmt.Sprint(e.Events) || last.Partition != 3 {
			t.Errorf("%s: store %v, parked topic %v (partition %d)", contact, e.Events, written.Events, last.Partition)
		}
	}
	return e.Events
}

// The scenario of the parking design: E1 rejected, E2 and E3 parked while
// another contact is applied; the cause fixed, a replay of E1, E2, E3 in
// order applies them and releases the contact; E4 is applied at once.
func TestParkingReleaseByReplay(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "y", "y1", 0, false, outcomeApplied)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	r.process(t, "x", "e3", 0, false, outcomeParked)
	if got := r.parked(t, "x"); fmt.Sprint(got) != "[e1 e2 e3]" {
		t.Fatalf("parked %v, want [e1 e2 e3]", got)
	}
	if got := r.dlq.dlq(); fmt.Sprint(got) != "[{e1 permanent } {e2 parked e1} {e3 parked e1}]" {
		t.Errorf("dead letters %v", got)
	}
	if len(r.api.applied["x"]) != 0 || len(r.api.applied["y"]) != 1 {
		t.Errorf("applied %v: want nothing of x, y's event", r.api.applied)
	}
	if got := testutil.ToFloat64(r.p.Metrics.parked); got != 1 {
		t.Errorf("parked contacts gauge %v, want 1", got)
	}

	r.api.reject["x"] = false // the cause fixed; the replay puts them back in order
	r.process(t, "x", "e1", 1, false, outcomeApplied)
	r.process(t, "x", "e2", 1, false, outcomeApplied)
	if got := r.parked(t, "x"); fmt.Sprint(got) != "[e3]" {
		t.Errorf("parked %v after two of three, want [e3]", got)
	}
	r.process(t, "x", "e3", 1, false, outcomeApplied)
	if got := r.parked(t, "x"); len(got) != 0 {
		t.Errorf("still parked %v", got)
	}
	if e, _ := r.store.Get(3, "x"); e.Parked() || fmt.Sprint(e.Released) != "[e1 e2 e3]" {
		t.Errorf("released contact's entry %+v, want not parked, e1 e2 e3 released", e)
	}
	r.process(t, "x", "e4", 0, false, outcomeApplied)
	if got := fmt.Sprint(r.api.applied["x"]); got != "[e1 e2 e3 e4]" {
		t.Errorf("applied %s, want [e1 e2 e3 e4]", got)
	}
	if got := testutil.ToFloat64(r.p.Metrics.parked); got != 0 {
		t.Errorf("parked contacts gauge %v, want 0", got)
	}
}

// The head failing again on its replay leaves the contact parked, and the
// events replayed behind it are parked again, in order.
func TestParkingHeadFailsAgain(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	r.process(t, "x", "e1", 1, false, outcomeDeadLettered)
	r.process(t, "x", "e2", 1, false, outcomeParked)
	r.process(t, "x", "e3", 0, false, outcomeParked) // live, meanwhile
	if got := r.parked(t, "x"); fmt.Sprint(got) != "[e1 e2 e3]" {
		t.Errorf("parked %v, want [e1 e2 e3]", got)
	}
	if len(r.api.applied["x"]) != 0 {
		t.Errorf("applied %v", r.api.applied["x"])
	}
	got := r.dlq.dlq()
	if fmt.Sprint(got[2:]) != "[{e1 permanent } {e2 parked e1} {e3 parked e1}]" {
		t.Errorf("new dead letters %v, want e1 again, then e2 and e3 parked behind it", got[2:])
	}
}

// An event replayed out of turn (not the head) is not applied: it would
// overtake the head.
func TestParkingReplayOutOfTurn(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	r.api.reject["x"] = false
	r.process(t, "x", "e2", 1, false, outcomeParked)
	if len(r.api.applied["x"]) != 0 {
		t.Errorf("applied %v ahead of the head", r.api.applied["x"])
	}
}

// Discarding the head: it is never applied (not even a later copy), and
// what was parked behind it follows in order.
func TestParkingDiscardHead(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	r.api.reject["x"] = false
	r.process(t, "x", "e1", 1, true, outcomeDiscarded)
	r.process(t, "x", "e2", 1, false, outcomeApplied)
	if got := r.parked(t, "x"); len(got) != 0 {
		t.Errorf("still parked %v", got)
	}
	r.process(t, "x", "e1", 1, false, outcomeDiscarded) // a copy replayed from the DLQ's beginning
	if got := fmt.Sprint(r.api.applied["x"]); got != "[e2]" {
		t.Errorf("applied %s, want [e2]: e1 was discarded", got)
	}
	if got := testutil.ToFloat64(r.p.Metrics.parked); got != 0 {
		t.Errorf("parked contacts gauge %v, want 0 (the entry only remembers the discard)", got)
	}
}

// A record without a contact (no key) is dead-lettered as before, parking
// nothing.
func TestParkingNeedsAContact(t *testing.T) {
	r := newParkingRig()
	m := r.record("", "bad", 0, false)
	m.Value = []byte(`{"event_type":`)
	if got := r.p.Process(context.Background(), m); got != outcomeDeadLettered {
		t.Fatalf("%s, want dead_lettered", got)
	}
	if len(r.parkedLog.msgs) != 0 {
		t.Errorf("parked state written for a record without a contact")
	}
}

// A live event of a contact that arrives while its release is under way
// (between the put-back records) does not overtake them: it is parked
// behind what is left, and applied only after a further release.
func TestParkingLiveEventDuringRelease(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	r.api.reject["x"] = false
	r.process(t, "x", "e1", 1, false, outcomeApplied)
	r.process(t, "x", "e3", 0, false, outcomeParked) // live, between the put-back e1 and e2
	r.process(t, "x", "e2", 1, false, outcomeApplied)
	if got := r.parked(t, "x"); fmt.Sprint(got) != "[e3]" {
		t.Fatalf("parked %v, want [e3]", got)
	}
	r.process(t, "x", "e3", 1, false, outcomeApplied) // the next release
	if got := fmt.Sprint(r.api.applied["x"]); got != "[e1 e2 e3]" {
		t.Errorf("applied %s, want [e1 e2 e3]", got)
	}
	if got := r.parked(t, "x"); len(got) != 0 {
		t.Errorf("still parked %v", got)
	}
}

// The replayed head delivered again after it was applied (a crash before
// the commit), and older DLQ copies replayed by a later routine run: none
// is applied again, and the contact is not parked behind them.
func TestParkingReleasedCopiesAreNotAppliedAgain(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	r.api.reject["x"] = false
	r.process(t, "x", "e1", 1, false, outcomeApplied)
	r.process(t, "x", "e1", 1, false, outcomeAlreadyApplied) // delivered again
	if got := r.parked(t, "x"); fmt.Sprint(got) != "[e2]" {
		t.Fatalf("parked %v, want [e2]: not behind the applied e1", got)
	}
	r.process(t, "x", "e2", 1, false, outcomeApplied)
	r.process(t, "x", "e3", 0, false, outcomeApplied)
	r.process(t, "x", "e1", 1, false, outcomeAlreadyApplied) // a routine replay of the old copies
	r.process(t, "x", "e2", 2, false, outcomeAlreadyApplied)
	if got := fmt.Sprint(r.api.applied["x"]); got != "[e1 e2 e3]" {
		t.Errorf("applied %s, want [e1 e2 e3] and nothing older after e3", got)
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/contacts"
	"github.com/acmecrm/integration-service/pkg/contactstate"
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
	m.Offset = int64(len(s.msgs)) // as sarama sets it once acknowledged
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
	api    *rejectingAPI
	dlq    *sent
	p      *processor
	store  *contactstate.Store
	offset int64
	minute int // each new event one minute after the one before
}

func newParkingRig() *parkingRig {
	r := &parkingRig{api: &rejectingAPI{reject: map[string]bool{}, applied: map[string][]string{}}, dlq: &sent{}, store: contactstate.NewStore()}
	r.p = newTestProcessor(&fakeAPI{results: []error{nil}}, &fakeDLQ{})
	r.p.API = r.api
	r.p.DeadLetterer = &publisher{Producer: r.dlq, Topic: "contact-events-dlq", Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})}
	r.p.State = r.store
	r.p.Guard = guard{MaxClockSkew: time.Hour}
	return r
}

// stamps holds each event id's timestamp: a copy of an event carries the
// same one.
var stamps sync.Map

// record returns contact's record of id, timestamped a minute after the
// previous new id; replays > 0 makes it a copy put back by a release that
// read the whole DLQ as it is now, discard a discard record.
func (r *parkingRig) record(contact, id string, replays int, discard bool) *sarama.ConsumerMessage {
	r.offset++
	stamp, seen := stamps.Load(contact + "/" + id)
	if !seen {
		r.minute++
		stamp = time.Date(2025, 5, 17, 17, r.minute, 0, 0, time.UTC).Format(time.RFC3339)
		stamps.Store(contact+"/"+id, stamp)
	}
	return r.at(contact, id, stamp.(string), replays, discard)
}

// at returns contact's record of id with the given timestamp.
func (r *parkingRig) at(contact, id, stamp string, replays int, discard bool) *sarama.ConsumerMessage {
	r.offset++
	v := fmt.Sprintf(`{"event_type":"contact.updated","event_id":%q,"timestamp":%q,"data":{"contact_id":%q}}`, id, stamp, contact)
	m := &sarama.ConsumerMessage{Topic: "contact-events", Partition: 3, Offset: r.offset, Key: []byte(contact), Value: []byte(v),
		Headers: []*sarama.RecordHeader{{Key: []byte(record.HeaderID), Value: []byte(id)}}}
	if replays > 0 {
		m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte(record.HeaderDLQReplayCount), Value: []byte(strconv.Itoa(replays))},
			&sarama.RecordHeader{Key: []byte(record.HeaderDLQReleaseThrough), Value: []byte(fmt.Sprintf("0:%d", len(r.dlq.msgs)))})
	}
	if discard {
		m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte(record.HeaderDLQDiscard), Value: []byte("true")})
	}
	return m
}

func (r *parkingRig) process(t *testing.T, contact, id string, replays int, discard bool, want eventOutcome) {
	t.Helper()
	r.processRecord(t, r.record(contact, id, replays, discard), want)
}

func (r *parkingRig) processRecord(t *testing.T, m *sarama.ConsumerMessage, want eventOutcome) {
	t.Helper()
	before := r.store.Get(m.Partition, string(m.Key))
	got, changed := r.p.Process(context.Background(), m)
	if got != want {
		t.Fatalf("%s: %s, want %s", m.Value, got, want)
	}
	after := r.store.Get(m.Partition, string(m.Key))
	if (changed != stateUnchanged) != !after.Equal(before) {
		t.Errorf("%s: changed=%v, but the state went from %+v to %+v", m.Value, changed, before, after)
	}
	if parking := before.IsParked() || after.IsParked(); (changed == stateChangedParking) != parking && changed != stateUnchanged {
		t.Errorf("%s: change %v, but parked before %v, after %v: a change of parking is written at once", m.Value, changed, before.IsParked(), after.IsParked())
	}
}

// head returns the event contact is parked behind ("" when not parked).
func (r *parkingRig) head(contact string) string {
	return r.store.Get(3, contact).Parked.Head.EventID
}

// The scenario of the parking design: E1 rejected, E2 and E3 parked while
// another contact is applied; the cause fixed, a replay of E1, E2, E3 in
// order applies them (E1 releases the contact); E4 is applied at once.
func TestParkingReleaseByReplay(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "y", "y1", 0, false, outcomeApplied)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	r.process(t, "x", "e3", 0, false, outcomeParked)
	if s := r.store.Get(3, "x"); s.Parked.Head.EventID != "e1" || s.Parked.Records != 2 || s.Parked.HeadKind != "permanent" {
		t.Fatalf("x's state %+v, want parked behind e1 (permanent) with 2 records", s)
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
	if r.head("x") != "" {
		t.Errorf("still parked behind %s after its head was applied", r.head("x"))
	}
	r.process(t, "x", "e2", 1, false, outcomeApplied)
	r.process(t, "x", "e3", 1, false, outcomeApplied)
	r.process(t, "x", "e4", 0, false, outcomeApplied)
	if got := fmt.Sprint(r.api.applied["x"]); got != "[e1 e2 e3 e4]" {
		t.Errorf("applied %s, want [e1 e2 e3 e4]", got)
	}
	if got := testutil.ToFloat64(r.p.Metrics.parked); got != 0 {
		t.Errorf("parked contacts gauge %v, want 0", got)
	}
	if s := r.store.Get(3, "x"); s.Newest.EventID != "e4" || s.IsParked() {
		t.Errorf("x's state %+v, want e4 the newest, not parked", s)
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
	if s := r.store.Get(3, "x"); s.Parked.Head.EventID != "e1" || s.Parked.Records != 3 {
		t.Errorf("x's state %+v, want parked behind e1, 3 records parked", s)
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
	if r.head("x") != "" {
		t.Errorf("still parked behind %s after its head was discarded", r.head("x"))
	}
	r.process(t, "x", "e1", 1, false, outcomeDiscarded) // a copy put back before e2 is applied
	r.process(t, "x", "e2", 1, false, outcomeApplied)
	r.process(t, "x", "e1", 1, false, outcomeStale) // older than e2: the guard covers it now
	if got := fmt.Sprint(r.api.applied["x"]); got != "[e2]" {
		t.Errorf("applied %s, want [e2]: e1 was discarded", got)
	}
	if got := testutil.ToFloat64(r.p.Metrics.parked); got != 0 {
		t.Errorf("parked contacts gauge %v, want 0", got)
	}
	if s := r.store.Get(3, "x"); len(s.Discarded) != 0 {
		t.Errorf("discarded %v kept once the newest covers it", s.Discarded)
	}
}

// A discarded head that was the contact's last event: its copy, as new as
// anything applied, is still never applied.
func TestParkingDiscardedLastEvent(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "x", "e1", 1, true, outcomeDiscarded)
	r.api.reject["x"] = false
	r.process(t, "x", "e1", 2, false, outcomeDiscarded) // --replay-from-beginning, later
	if len(r.api.applied["x"]) != 0 {
		t.Errorf("applied %v", r.api.applied["x"])
	}
}

// A record without a contact (no key) is dead-lettered as before, parking
// nothing and keeping no state.
func TestParkingNeedsAContact(t *testing.T) {
	r := newParkingRig()
	m := r.record("", "bad", 0, false)
	m.Value = []byte(`{"event_type":`)
	if got, changed := r.p.Process(context.Background(), m); got != outcomeDeadLettered || changed != stateUnchanged {
		t.Fatalf("%s (changed %v), want dead_lettered, no state", got, changed)
	}
	if r.store.Contacts() != 0 {
		t.Errorf("state kept for a record without a contact")
	}
}

// A live event of a contact that arrives while its release is under way
// (after the head's put-back record, before the others) is applied at
// once: the head released the contact. The older put-back events after it
// are stale, so the contact ends with the newest snapshot.
func TestParkingLiveEventDuringRelease(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	r.api.reject["x"] = false
	r.process(t, "x", "e1", 1, false, outcomeApplied)
	r.process(t, "x", "e3", 0, false, outcomeApplied) // live, between the put-back e1 and e2
	r.process(t, "x", "e2", 1, false, outcomeStale)
	if got := fmt.Sprint(r.api.applied["x"]); got != "[e1 e3]" {
		t.Errorf("applied %s, want [e1 e3]", got)
	}
	if s := r.store.Get(3, "x"); s.Newest.EventID != "e3" || s.IsParked() {
		t.Errorf("x's state %+v, want e3 the newest, not parked", s)
	}
}

// The replayed head delivered again after it was applied (a crash before
// the commit) is a copy of the newest: stale, not applied again; older DLQ
// copies replayed by a later routine run are stale and park nothing.
func TestParkingReleasedCopiesAreStale(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	r.api.reject["x"] = false
	r.process(t, "x", "e1", 1, false, outcomeApplied)
	r.process(t, "x", "e1", 1, false, outcomeStale) // delivered again
	r.process(t, "x", "e2", 1, false, outcomeApplied)
	r.process(t, "x", "e3", 0, false, outcomeApplied)
	r.process(t, "x", "e1", 1, false, outcomeStale) // a routine replay of the old copies
	r.process(t, "x", "e2", 2, false, outcomeStale)
	if got := fmt.Sprint(r.api.applied["x"]); got != "[e1 e2 e3]" {
		t.Errorf("applied %s, want [e1 e2 e3] and nothing older after e3", got)
	}
	if r.head("x") != "" {
		t.Errorf("parked behind %s", r.head("x"))
	}
}

// The stale-event guard: an older snapshot never overwrites a newer one.
func TestStaleGuard(t *testing.T) {
	r := newParkingRig()
	r.processRecord(t, r.at("x", "e3", "2025-05-17T17:03:00Z", 0, false), outcomeApplied)
	r.processRecord(t, r.at("x", "e2", "2025-05-17T17:02:00Z", 0, false), outcomeStale)
	// 01:00:05-07:00 is 08:00:05Z: newer than 08:00:04Z, though it sorts first as a string.
	r.processRecord(t, r.at("y", "y1", "2025-05-17T01:00:05-07:00", 0, false), outcomeApplied)
	r.processRecord(t, r.at("y", "y0", "2025-05-17T08:00:04Z", 0, false), outcomeStale)
	// Equal instants: partition order.
	r.processRecord(t, r.at("z", "z1", "2025-05-17T17:00:00Z", 0, false), outcomeApplied)
	r.processRecord(t, r.at("z", "z2", "2025-05-17T17:00:00Z", 0, false), outcomeApplied)
	// A delete, then an older create: no resurrection; a newer update re-creates.
	del := r.at("w", "w-del", "2025-05-17T17:10:00Z", 0, false)
	del.Value = []byte(strings.Replace(string(del.Value), "contact.updated", "contact.deleted", 1))
	r.processRecord(t, del, outcomeApplied)
	r.processRecord(t, r.at("w", "w-old", "2025-05-17T17:05:00Z", 0, false), outcomeStale)
	r.processRecord(t, r.at("w", "w-new", "2025-05-17T17:11:00Z", 0, false), outcomeApplied)
	for c, want := range map[string]string{"x": "[e3]", "y": "[y1]", "z": "[z1 z2]", "w": "[w-del w-new]"} {
		if got := fmt.Sprint(r.api.applied[c]); got != want {
			t.Errorf("%s applied %s, want %s", c, got, want)
		}
	}
	if got := testutil.ToFloat64(r.p.Metrics.events.WithLabelValues("contact.updated", "stale")); got != 3 {
		t.Errorf("stale events counted %v, want 3", got)
	}
	if got := len(r.dlq.msgs); got != 0 {
		t.Errorf("%d dead letters, want none: a stale event is never dead-lettered", got)
	}
}

// An event dated beyond the clock skew allowed ahead of its arrival is
// invalid: as the newest it would make its contact's later events stale.
func TestStaleGuardRefusesTheFuture(t *testing.T) {
	r := newParkingRig()
	arrival := time.Date(2025, 5, 17, 17, 0, 0, 0, time.UTC)
	m := r.at("x", "e-future", "2099-01-01T00:00:00Z", 0, false)
	m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte(record.HeaderReceivedAt), Value: []byte(arrival.Format(time.RFC3339Nano))})
	r.processRecord(t, m, outcomeDeadLettered)
	if got := r.dlq.dlq(); len(got) != 1 || got[0].kind != "invalid" {
		t.Fatalf("dead letters %v, want one invalid", got)
	}
	ok := r.at("y", "e-skewed", arrival.Add(30*time.Minute).Format(time.RFC3339), 0, false)
	ok.Headers = append(ok.Headers, &sarama.RecordHeader{Key: []byte(record.HeaderReceivedAt), Value: []byte(arrival.Format(time.RFC3339Nano))})
	r.processRecord(t, ok, outcomeApplied)
}

// An event of a parked contact parked while a release was reading the DLQ
// (after the point the release read to) was not put back by it: the head
// comes back and is applied, but the contact stays parked, so the next
// release puts that event back — it is never lost behind an applied head.
func TestParkingEventParkedDuringTheRelease(t *testing.T) {
	r := newParkingRig()
	r.api.reject["x"] = true
	r.process(t, "x", "e1", 0, false, outcomeDeadLettered)
	r.process(t, "x", "e2", 0, false, outcomeParked)
	through := len(r.dlq.msgs)                       // the release reads the DLQ up to here...
	r.process(t, "x", "e3", 0, false, outcomeParked) // ...while e3 is parked
	r.api.reject["x"] = false
	putBack := func(id string) *sarama.ConsumerMessage {
		m := r.record("x", id, 1, false)
		for _, h := range m.Headers {
			if string(h.Key) == record.HeaderDLQReleaseThrough {
				h.Value = []byte(fmt.Sprintf("0:%d", through))
			}
		}
		return m
	}
	r.processRecord(t, putBack("e1"), outcomeApplied)
	if r.head("x") != "e1" {
		t.Fatalf("head %q after a release that missed e3, want x still parked behind e1", r.head("x"))
	}
	r.processRecord(t, putBack("e2"), outcomeParked) // waits, in order, for the next release
	// The next release reads the whole DLQ: e1, e2 and e3, in order.
	r.process(t, "x", "e1", 2, false, outcomeApplied)
	if r.head("x") != "" {
		t.Fatalf("still parked behind %s after a release that read every record", r.head("x"))
	}
	r.process(t, "x", "e2", 2, false, outcomeApplied)
	r.process(t, "x", "e3", 1, false, outcomeApplied)
	if got := fmt.Sprint(r.api.applied["x"]); got != "[e1 e1 e2 e3]" {
		t.Errorf("applied %s, want e1 (twice: once per release), e2, e3", got)
	}
	if s := r.store.Get(3, "x"); s.Newest.EventID != "e3" {
		t.Errorf("x's newest %q, want e3", s.Newest.EventID)
	}
}

// A change of parking is written at once; other changes wait for the
// interval or a full batch; after a failed write, not before its backoff.
func TestStateFlushDue(t *testing.T) {
	f := newStateFlush(nil, 0, 3, prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}), zerolog.Nop())
	if f.due(false, true) {
		t.Fatal("due with nothing waiting")
	}
	f.add("a", 1, false)
	if f.due(false, false) {
		t.Error("a routine change due before the interval")
	}
	if !f.due(false, true) || !f.due(true, false) {
		t.Error("a routine change not due at the interval or when stopping")
	}
	f.add("b", 2, true)
	if !f.due(false, false) {
		t.Error("a change of parking not due at once")
	}
	f.urgent = false
	f.add("c", 3, false)
	if !f.due(false, false) {
		t.Error("a full batch (3) not due at once")
	}
	f.busy, f.inflight, f.waiting, f.writing = true, f.waiting, nil, []string{"a", "b"}
	f.urgent = false
	if f.due(false, true) {
		t.Error("due with a write in flight")
	}
	if done := f.end(flushResult{err: errors.New("broker down")}, false); len(done) != 0 {
		t.Errorf("a failed write finished %v", done)
	}
	if f.due(false, false) || f.due(false, true) {
		t.Error("due again before the failed write's backoff")
	}
	f.retryAt = time.Now().Add(-time.Millisecond)
	if !f.due(false, false) {
		t.Error("a failed write's changes (parking maybe among them) not due at once after the backoff")
	}
}

// An event of a type AcmeCRM added (contact.merged) is dead-lettered as
// unsupported, with no call: its contact is neither parked nor changed,
// and the contact's next event is applied at once. A parked contact's
// unsupported event is not parked behind its head either.
func TestUnsupportedEventType(t *testing.T) {
	r := newParkingRig()
	merged := func(contact, id string) *sarama.ConsumerMessage {
		m := r.record(contact, id, 0, false)
		m.Value = []byte(strings.Replace(string(m.Value), "contact.updated", "contact.merged", 1))
		return m
	}
	r.process(t, "m", "evt_m_1", 0, false, outcomeApplied)
	r.processRecord(t, merged("m", "evt_m_2"), outcomeDeadLettered)
	if kind := headerOf(r.dlq.msgs[len(r.dlq.msgs)-1], record.HeaderDLQErrorKind); kind != string(record.KindUnsupported) {
		t.Errorf("dead-lettered as %q, want unsupported", kind)
	}
	if r.head("m") != "" || len(r.api.applied["m"]) != 1 {
		t.Errorf("m parked behind %q, applied %v: want not parked, only evt_m_1 applied", r.head("m"), r.api.applied["m"])
	}
	r.process(t, "m", "evt_m_3", 0, false, outcomeApplied)

	r.api.reject["x"] = true
	r.process(t, "x", "evt_x_1", 0, false, outcomeDeadLettered) // x parked
	r.processRecord(t, merged("x", "evt_x_2"), outcomeDeadLettered)
	if kind := headerOf(r.dlq.msgs[len(r.dlq.msgs)-1], record.HeaderDLQErrorKind); kind != string(record.KindUnsupported) {
		t.Errorf("a parked contact's unsupported event dead-lettered as %q, want unsupported (not parked)", kind)
	}
	if got := r.store.Get(3, "x").Parked.Records; got != 0 {
		t.Errorf("%d records parked behind x's head, want 0", got)
	}
}

// headerOf returns the value of m's header key.
func headerOf(m *sarama.ProducerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// Records that break the record contract (a tombstone, no key, no event id,
// a key that is not data.contact_id) are dead-lettered as invalid and park
// no contact: the key's next event is applied at once, and no head with an
// empty id exists for a release to name.
func TestRecordContractBreaches(t *testing.T) {
	r := newParkingRig()
	good := r.record("k", "evt_k_1", 0, false)
	for name, m := range map[string]*sarama.ConsumerMessage{
		"tombstone":              {Topic: "contact-events", Partition: 3, Offset: 900, Key: []byte("k")},
		"no key":                 {Topic: "contact-events", Partition: 3, Offset: 901, Value: good.Value},
		"not JSON, no ce_id":     {Topic: "contact-events", Partition: 3, Offset: 902, Key: []byte("k"), Value: []byte("hello")},
		"key is another contact": {Topic: "contact-events", Partition: 3, Offset: 903, Key: []byte("other"), Value: good.Value},
	} {
		before := len(r.dlq.msgs)
		got, change := r.p.Process(context.Background(), m)
		if got != outcomeDeadLettered || change != stateUnchanged || len(r.dlq.msgs) != before+1 {
			t.Errorf("%s: %s, change %v, %d dead letters; want dead_lettered, no state change, one dead letter", name, got, change, len(r.dlq.msgs)-before)
			continue
		}
		last := r.dlq.msgs[len(r.dlq.msgs)-1]
		if kind, msg := headerOf(last, record.HeaderDLQErrorKind), headerOf(last, record.HeaderDLQError); kind != string(record.KindInvalid) || !strings.Contains(msg, "record contract") {
			t.Errorf("%s: dead-lettered as %s (%s), want invalid naming the record contract", name, kind, msg)
		}
	}
	if r.head("k") != "" || r.head("other") != "" {
		t.Errorf("parked behind %q / %q: want nothing parked", r.head("k"), r.head("other"))
	}
	r.processRecord(t, good, outcomeApplied)
}

// A contact parked behind an event of a type this worker does not apply
// (as the worker before unsupported types parked it): its release keeps
// the head in the DLQ as unsupported and releases the contact; its next
// event is applied.
func TestReleaseOfAnUnsupportedHead(t *testing.T) {
	r := newParkingRig()
	head := r.record("h", "evt_h_1", 1, false) // the head, put back by a release
	head.Value = []byte(strings.Replace(string(head.Value), "contact.updated", "contact.merged", 1))
	at, _ := time.Parse(time.RFC3339, "2025-05-17T17:00:00Z")
	r.store.Put(3, "h", contactstate.State{Parked: contactstate.Parked{Head: contactstate.Mark{EventID: "evt_h_1", At: at}, HeadKind: "invalid", Since: at, Records: 0}})
	r.processRecord(t, head, outcomeDeadLettered)
	if kind := headerOf(r.dlq.msgs[len(r.dlq.msgs)-1], record.HeaderDLQErrorKind); kind != string(record.KindUnsupported) {
		t.Errorf("the head dead-lettered again as %q, want unsupported", kind)
	}
	if r.head("h") != "" {
		t.Fatalf("h still parked behind %q: an unsupported head must not hold its contact", r.head("h"))
	}
	r.process(t, "h", "evt_h_2", 0, false, outcomeApplied)
}

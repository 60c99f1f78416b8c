package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/record"
)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func fact(id, typ, at string) facts {
	return facts{ID: id, Event: acmecrm.Event{EventID: id, EventType: "contact." + typ, Timestamp: ts(at)}}
}

func TestDecide(t *testing.T) {
	newest := contactstate.State{Newest: contactstate.Mark{EventID: "e2", At: ts("2025-05-17T17:03:00Z")}}
	deleted := contactstate.State{Newest: contactstate.Mark{EventID: "d", At: ts("2025-05-17T17:10:00Z")}, Deleted: true}
	parked := contactstate.State{Newest: newest.Newest, Parked: contactstate.Parked{Head: contactstate.Mark{EventID: "h", At: ts("2025-05-17T17:05:00Z")}, HeadKind: "permanent"}}
	discarded := contactstate.State{Discarded: []contactstate.Mark{{EventID: "x", At: ts("2025-05-17T17:20:00Z")}}}
	replayed := func(f facts) facts { f.Replayed = true; return f }
	discard := func(f facts) facts { f.Replayed, f.Discard = true, true; return f }
	invalid := facts{ID: "bad", Invalid: errors.New("unparseable")}
	sameInstant := contactstate.State{Newest: newest.Newest, SameInstant: []string{"e2a"}}
	discardedHead := contactstate.State{Parked: parked.Parked, Discarded: []contactstate.Mark{parked.Parked.Head}}
	tests := []struct {
		name  string
		s     contactstate.State
		f     facts
		guard bool
		want  verdict
	}{
		{"nothing known", contactstate.State{}, fact("e1", "updated", "2025-05-17T17:00:00Z"), true, verdictApply},
		{"a copy of the newest (redelivered after a crash, the same event sent twice)", newest, fact("e2", "updated", "2025-05-17T17:03:00Z"), true, verdictStale},
		{"a copy of an event applied before the newest at its instant", sameInstant, replayed(fact("e2a", "updated", "2025-05-17T17:03:00Z")), true, verdictStale},
		{"another event of the newest's instant", sameInstant, fact("e2b", "updated", "2025-05-17T17:03:00Z"), true, verdictApply},
		{"the discarded head put back again by a release", discardedHead, replayed(fact("h", "updated", "2025-05-17T17:05:00Z")), true, verdictDiscard},
		{"newer", newest, fact("e3", "updated", "2025-05-17T17:04:00Z"), true, verdictApply},
		{"older: stale", newest, fact("e1", "updated", "2025-05-17T17:02:00Z"), true, verdictStale},
		{"same instant: partition order", newest, fact("e2b", "updated", "2025-05-17T17:03:00Z"), true, verdictApply},
		{"same instant in another offset", newest, fact("e2b", "updated", "2025-05-17T10:03:00-07:00"), true, verdictApply},
		{"an offset that sorts after as a string is older as an instant", newest, fact("e0", "updated", "2025-05-17T10:02:59-07:00"), true, verdictStale},
		{"an older DLQ copy replayed", newest, replayed(fact("e1", "updated", "2025-05-17T17:01:00Z")), true, verdictStale},
		{"create older than the delete: no resurrection", deleted, fact("c", "created", "2025-05-17T17:05:00Z"), true, verdictStale},
		{"update newer than the delete: re-creates", deleted, fact("u", "updated", "2025-05-17T17:11:00Z"), true, verdictApply},
		{"delete older than the newest", newest, fact("d0", "deleted", "2025-05-17T17:01:00Z"), true, verdictStale},
		{"parked: newer waits", parked, fact("e4", "updated", "2025-05-17T17:06:00Z"), true, verdictPark},
		{"parked: older is stale, never dead-lettered", parked, fact("e1", "updated", "2025-05-17T17:01:00Z"), true, verdictStale},
		{"parked: the head put back", parked, replayed(fact("h", "updated", "2025-05-17T17:05:00Z")), true, verdictApplyHead},
		{"parked: the head live again (not a replay) waits", parked, fact("h", "updated", "2025-05-17T17:05:00Z"), true, verdictPark},
		{"parked: another event put back out of turn waits", parked, replayed(fact("e4", "updated", "2025-05-17T17:06:00Z")), true, verdictPark},
		{"parked: an invalid record waits", parked, invalid, true, verdictPark},
		{"parked: an invalid head put back is tried again", contactstate.State{Parked: contactstate.Parked{Head: contactstate.Mark{EventID: "bad"}}}, replayed(invalid), true, verdictApplyHead},
		{"invalid", newest, invalid, true, verdictInvalid},
		{"discard record", parked, discard(fact("h", "updated", "2025-05-17T17:05:00Z")), true, verdictDiscard},
		{"a copy of a discarded event", discarded, replayed(fact("x", "updated", "2025-05-17T17:20:00Z")), true, verdictDiscarded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(tt.s, tt.f); got != tt.want {
				t.Errorf("decide = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestNext(t *testing.T) {
	now := ts("2026-11-29T12:00:00Z")
	pos := func(o int64) *contactstate.Position { return &contactstate.Position{Partition: 1, Offset: o} }
	newest := contactstate.State{Newest: contactstate.Mark{EventID: "e2", At: ts("2025-05-17T17:03:00Z")}}
	parked := contactstate.State{Newest: newest.Newest, Parked: contactstate.Parked{Head: contactstate.Mark{EventID: "h", At: ts("2025-05-17T17:05:00Z")}, HeadKind: "transient", Records: 1, Last: pos(40)}}
	e3 := fact("e3", "updated", "2025-05-17T17:04:00Z")
	e2b := fact("e2b", "updated", "2025-05-17T17:03:00Z")
	h := fact("h", "updated", "2025-05-17T17:05:00Z")
	released := func(f facts, end int64) facts {
		f.Replayed, f.ReleaseThrough = true, map[int32]int64{0: 7, 1: end}
		return f
	}
	discardOf := func(f facts) facts { f.Replayed, f.Discard = true, true; return f }
	del := fact("d", "deleted", "2025-05-17T17:06:00Z")
	with := func(s contactstate.State, change func(*contactstate.State)) contactstate.State { change(&s); return s }
	tests := []struct {
		name string
		s    contactstate.State
		f    facts
		v    verdict
		r    effect
		want contactstate.State
	}{
		{"applied: the newest", newest, e3, verdictApply, effect{out: outcomeApplied}, contactstate.State{Newest: e3.mark()}},
		{"applied at the newest's instant: both remembered", newest, e2b, verdictApply, effect{out: outcomeApplied},
			contactstate.State{Newest: e2b.mark(), SameInstant: []string{"e2"}}},
		{"a delete applied", newest, del, verdictApply, effect{out: outcomeApplied}, contactstate.State{Newest: del.mark(), Deleted: true}},
		{"dead-lettered: parked behind it", newest, e3, verdictApply, effect{outcomeDeadLettered, record.KindPermanent, pos(7)},
			contactstate.State{Newest: newest.Newest, Parked: contactstate.Parked{Head: e3.mark(), HeadKind: "permanent", Since: now, Last: pos(7)}}},
		{"dead-lettered without an event id: not parked", newest, facts{Invalid: errTest}, verdictInvalid, effect{outcomeDeadLettered, record.KindInvalid, pos(8)}, newest},
		{"parked: counted, its place remembered", parked, e3, verdictPark, effect{outcomeParked, record.KindParked, pos(41)},
			with(parked, func(s *contactstate.State) { s.Parked.Records, s.Parked.Last = 2, pos(41) })},
		{"the head applied by a release that read past every parked record: released", parked, released(h, 41), verdictApplyHead, effect{out: outcomeApplied},
			contactstate.State{Newest: h.mark()}},
		{"the head applied by a release that read only up to an earlier record: still parked", parked, released(h, 40), verdictApplyHead, effect{out: outcomeApplied},
			with(parked, func(s *contactstate.State) { s.Newest = h.mark() })},
		{"the head applied by a routine replay, records parked behind it: still parked", parked, func() facts { f := h; f.Replayed = true; return f }(), verdictApplyHead, effect{out: outcomeApplied},
			with(parked, func(s *contactstate.State) { s.Newest = h.mark() })},
		{"the head dead-lettered again: still parked, its new kind, time and place", parked, released(h, 41), verdictApplyHead, effect{outcomeDeadLettered, record.KindPermanent, pos(42)},
			with(parked, func(s *contactstate.State) {
				s.Parked.HeadKind, s.Parked.Since, s.Parked.Last = "permanent", now, pos(42)
			})},
		{"the head discarded by a release past every record: released, remembered", parked, released(discardOf(h), 41), verdictDiscard, effect{out: outcomeDiscarded},
			contactstate.State{Newest: newest.Newest, Discarded: []contactstate.Mark{h.mark()}}},
		{"the head discarded by a release that missed a record: still parked, remembered", parked, released(discardOf(h), 40), verdictDiscard, effect{out: outcomeDiscarded},
			with(parked, func(s *contactstate.State) { s.Discarded = []contactstate.Mark{h.mark()} })},
		{"stale: unchanged", newest, fact("e1", "updated", "2025-05-17T17:00:00Z"), verdictStale, effect{out: outcomeStale}, newest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := next(tt.s, tt.f, tt.v, tt.r, now); !got.Equal(tt.want) {
				t.Errorf("next = %+v, want %+v", got, tt.want)
			}
		})
	}
}

var errTest = errors.New("unparseable")

// A discard without a value (the replay sends every discard so) is marked
// with the head's instant, known from the state, so the guard forgets the
// mark once the contact's newest passes it.
func TestNextDiscardWithoutValueTakesTheHeadsInstant(t *testing.T) {
	at := ts("2025-05-17T17:05:00Z")
	s := contactstate.State{Parked: contactstate.Parked{Head: contactstate.Mark{EventID: "h", At: at}, HeadKind: "permanent"}}
	f := facts{ID: "h", Replayed: true, Discard: true, Invalid: errors.New("unparseable event: no value")}
	v := decide(s, f)
	if v != verdictDiscard {
		t.Fatalf("verdict %v, want discard", v)
	}
	n := next(s, f, v, effect{out: outcomeDiscarded}, at.Add(time.Hour))
	if len(n.Discarded) != 1 || n.Discarded[0].EventID != "h" || !n.Discarded[0].At.Equal(at) {
		t.Errorf("discarded %+v, want h at the head's instant %v", n.Discarded, at)
	}
	if n.IsParked() {
		t.Errorf("still parked after the discard of its head: %+v", n.Parked)
	}
}

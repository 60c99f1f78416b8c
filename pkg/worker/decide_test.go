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
	tests := []struct {
		name  string
		s     contactstate.State
		f     facts
		guard bool
		want  verdict
	}{
		{"nothing known", contactstate.State{}, fact("e1", "updated", "2025-05-17T17:00:00Z"), true, verdictApply},
		{"newer", newest, fact("e3", "updated", "2025-05-17T17:04:00Z"), true, verdictApply},
		{"older: stale", newest, fact("e1", "updated", "2025-05-17T17:02:00Z"), true, verdictStale},
		{"older, guard off: applied in arrival order", newest, fact("e1", "updated", "2025-05-17T17:02:00Z"), false, verdictApply},
		{"same instant: partition order", newest, fact("e2b", "updated", "2025-05-17T17:03:00Z"), true, verdictApply},
		{"same instant in another offset", newest, fact("e2b", "updated", "2025-05-17T10:03:00-07:00"), true, verdictApply},
		{"an offset that sorts after as a string is older as an instant", newest, fact("e0", "updated", "2025-05-17T10:02:59-07:00"), true, verdictStale},
		{"a copy of the newest: same instant, applied again (idempotent)", newest, replayed(fact("e2", "updated", "2025-05-17T17:03:00Z")), true, verdictApply},
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
			if got := decide(tt.s, tt.f, tt.guard); got != tt.want {
				t.Errorf("decide = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestNext(t *testing.T) {
	now := ts("2026-11-29T12:00:00Z")
	newest := contactstate.State{Newest: contactstate.Mark{EventID: "e2", At: ts("2025-05-17T17:03:00Z")}}
	parked := contactstate.State{Newest: newest.Newest, Parked: contactstate.Parked{Head: contactstate.Mark{EventID: "h", At: ts("2025-05-17T17:05:00Z")}, HeadKind: "transient", Records: 1}}
	e3 := fact("e3", "updated", "2025-05-17T17:04:00Z")
	h := fact("h", "updated", "2025-05-17T17:05:00Z")
	del := fact("d", "deleted", "2025-05-17T17:06:00Z")
	tests := []struct {
		name  string
		s     contactstate.State
		f     facts
		v     verdict
		out   eventOutcome
		kind  record.Kind
		guard bool
		want  contactstate.State
	}{
		{"applied: the newest", newest, e3, verdictApply, outcomeApplied, "", true, contactstate.State{Newest: e3.mark()}},
		{"applied, guard off: nothing kept", newest, e3, verdictApply, outcomeApplied, "", false, newest},
		{"a delete applied", newest, del, verdictApply, outcomeApplied, "", true, contactstate.State{Newest: del.mark(), Deleted: true}},
		{"dead-lettered: parked behind it", newest, e3, verdictApply, outcomeDeadLettered, record.KindPermanent, true,
			contactstate.State{Newest: newest.Newest, Parked: contactstate.Parked{Head: e3.mark(), HeadKind: "permanent", Since: now}}},
		{"parked: counted", parked, e3, verdictPark, outcomeParked, "", true, func() contactstate.State { s := parked; s.Parked.Records = 2; return s }()},
		{"the head applied: released, the newest", parked, h, verdictApplyHead, outcomeApplied, "", true, contactstate.State{Newest: h.mark()}},
		{"the head dead-lettered again: still parked, its new kind and time", parked, h, verdictApplyHead, outcomeDeadLettered, record.KindPermanent, true,
			func() contactstate.State { s := parked; s.Parked.HeadKind, s.Parked.Since = "permanent", now; return s }()},
		{"the head discarded: released, remembered", parked, h, verdictDiscard, outcomeDiscarded, "", true,
			contactstate.State{Newest: newest.Newest, Discarded: []contactstate.Mark{h.mark()}}},
		{"stale: unchanged", newest, fact("e1", "updated", "2025-05-17T17:00:00Z"), verdictStale, outcomeStale, "", true, newest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := next(tt.s, tt.f, tt.v, tt.out, tt.kind, now, tt.guard); !got.Equal(tt.want) {
				t.Errorf("next = %+v, want %+v", got, tt.want)
			}
		})
	}
}

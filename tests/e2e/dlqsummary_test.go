package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/pkg/replay"
	"github.com/acmecrm/integration-service/pkg/worker"
)

// runSummary runs contact-worker --dlq-summary with args and returns its
// standard output.
func runSummary(t testing.TB, env map[string]string, args ...string) string {
	t.Helper()
	full := merge(map[string]string{"KAFKA_BROKERS": brokers}, env)
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := worker.Run(ctx, "test", append([]string{"--dlq-summary"}, args...), func(k string) string { return full[k] }, &stdout, &stderr); err != nil {
		t.Fatalf("dlq-summary %v: %v\nlogs:\n%s", args, err, stderr.String())
	}
	return stdout.String()
}

// The DLQ at a glance, against a DLQ of known content: one contact's
// rejected event and the two parked behind it, and a record that is not
// JSON.
func TestDLQSummary(t *testing.T) {
	_, _, topics, _, p := parkedSetup(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	for i := 1; i <= 3; i++ {
		publishEvent(t, p, topic, "contact.updated", fmt.Sprintf("evt_px_%d", i), "px", fmt.Sprintf("v%d", i))
	}
	publishRaw(t, p, topic, "broken", `{"event_type": "contact.created", "event_id": `)
	eventually(t, 30*time.Second, "4 dead letters", func() bool { return len(readAll(t, brokers, dlq)) == 4 })
	env := parkingEnv(topics, t)
	eventually(t, 10*time.Second, "px parked in the state topic", func() bool {
		lines, _ := runReplay(t, env, "--replay-list-parked")
		return len(lines) == 1
	})

	var s replay.DLQSummary
	out := runSummary(t, env, "--output", "json")
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	if s.Records != 4 || s.ByKind["permanent"] != 1 || s.ByKind["parked"] != 2 || s.ByKind["invalid"] != 1 {
		t.Errorf("records %d by kind %v, want 4: permanent 1, parked 2, invalid 1", s.Records, s.ByKind)
	}
	if s.ByEventType["contact.updated"] != 3 || s.ByEventType["unknown"] != 1 {
		t.Errorf("by event type %v, want contact.updated 3, unknown 1", s.ByEventType)
	}
	if len(s.TopErrors) != 3 || s.TopErrors[0].Records != 2 || !strings.Contains(s.TopErrors[0].Error, "parked behind evt_px_1") {
		t.Errorf("top errors %+v, want the parked one first (2), then two of 1", s.TopErrors)
	}
	if s.OldestFailedAt == nil || s.NewestFailedAt == nil || s.NewestFailedAt.Before(*s.OldestFailedAt) || time.Since(*s.OldestFailedAt) > time.Minute {
		t.Errorf("dead-lettered between %v and %v", s.OldestFailedAt, s.NewestFailedAt)
	}
	if s.ParkedContacts != 1 || s.OldestParked == nil || s.OldestParked.ContactID != "px" || s.OldestParked.Head != "evt_px_1" || s.OldestParked.ParkedRecords != 2 {
		t.Errorf("parked %d, oldest %+v; want px behind evt_px_1 with 2", s.ParkedContacts, s.OldestParked)
	}
	if s.WouldReplay != 4 || s.HeldLoopGuard != 0 || s.ReplayGroup != env["WORKER_REPLAY_GROUP_ID"] {
		t.Errorf("routine replay (%s) would replay %d, hold %d; want 4, 0", s.ReplayGroup, s.WouldReplay, s.HeldLoopGuard)
	}

	// A routine replay of the invalid kind only moves its group past every
	// record it read: nothing left for the next one.
	if _, sum := runReplay(t, merge(env, map[string]string{"WORKER_REPLAY_ERROR_KIND": "invalid"})); sum.Replayed != 1 {
		t.Fatalf("replay of the invalid record: %+v", sum)
	}
	eventually(t, 30*time.Second, "the invalid record dead-lettered again", func() bool { return len(readAll(t, brokers, dlq)) == 5 })
	if err := json.Unmarshal([]byte(runSummary(t, env, "--output", "json")), &s); err != nil {
		t.Fatal(err)
	}
	if s.Records != 5 || s.WouldReplay != 1 {
		t.Errorf("after the replay: %d records, would replay %d; want 5, 1 (the new dead letter)", s.Records, s.WouldReplay)
	}

	table := runSummary(t, env) // the default: a table
	for _, want := range []string{"5 records", "would replay 1", "parked contacts", "px behind evt_px_1", "permanent", "invalid"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/tests/standin"
)

// The stale-event guard on the real broker: an older AcmeCRM snapshot never
// overwrites a newer one, whatever order the events arrive in, across
// restarts, rebalances and replays; a stale event holds nothing back and
// is never dead-lettered.

// staleCount sums worker_events_total{outcome="stale"} of a worker.
func staleCount(t testing.TB, b *binary) float64 { return outcomes(t, b, "stale") }

// Swapped pairs while the worker runs; a late create after a delete; equal
// timestamps in partition order; RFC 3339 offsets compared as instants.
func TestGuardOrdersByTimestamp(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	wk := startWorker(t, workerEnv(topics, url, nil))
	p := newProducer(t)
	topic := topics["KAFKA_TOPIC"]

	publishAt(t, p, topic, "contact.updated", "evt_s_3", "s", "at-03", "2025-05-17T17:03:00Z")
	publishAt(t, p, topic, "contact.updated", "evt_s_2", "s", "at-02", "2025-05-17T17:02:00Z")

	publishAt(t, p, topic, "contact.deleted", "evt_d_del", "d", "", "2025-05-17T17:10:00Z")
	publishAt(t, p, topic, "contact.created", "evt_d_old", "d", "resurrected", "2025-05-17T17:05:00-00:00")

	publishAt(t, p, topic, "contact.updated", "evt_e_1", "e", "first", "2025-05-17T17:00:00Z")
	publishAt(t, p, topic, "contact.updated", "evt_e_2", "e", "second", "2025-05-17T17:00:00Z")

	// 01:00:05-07:00 is 08:00:05Z, newer than 08:00:04Z though it sorts first as a string.
	publishAt(t, p, topic, "contact.updated", "evt_i_new", "i", "newer", "2025-05-17T01:00:05-07:00")
	publishAt(t, p, topic, "contact.updated", "evt_i_old", "i", "older", "2025-05-17T08:00:04Z")
	publishAt(t, p, topic, "contact.updated", "evt_j_old", "j", "older", "2025-05-17T08:00:04Z")
	publishAt(t, p, topic, "contact.updated", "evt_j_new", "j", "newer", "2025-05-17T01:00:05-07:00")

	eventually(t, 30*time.Second, "the 3 stale events counted", func() bool { return staleCount(t, wk) >= 3 })
	eventually(t, 30*time.Second, "j's newer event applied", func() bool { return firstName(t, api, "j") == "newer" })
	for c, want := range map[string]string{"s": "at-03", "e": "second", "i": "newer", "j": "newer"} {
		if got := firstName(t, api, c); got != want {
			t.Errorf("%s holds %q, want %q", c, got, want)
		}
	}
	if _, ok := api.Contact("d"); ok {
		t.Error("d was re-created by a create older than its delete")
	}
	got := applied(api)
	for c, want := range map[string]string{"s": "evt_s_3", "d": "evt_d_del", "e": "evt_e_1,evt_e_2", "i": "evt_i_new", "j": "evt_j_old,evt_j_new"} {
		if strings.Join(got[c], ",") != want {
			t.Errorf("%s: calls %v, want %s", c, got[c], want)
		}
	}
	if n := staleCount(t, wk); n != 3 {
		t.Errorf("%v stale events, want 3 (s, d, i; none of e or j)", n)
	}
	if dl := readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"]); len(dl) != 0 {
		t.Errorf("%d dead letters, want none: a stale event is never dead-lettered", len(dl))
	}
}

// The guard remembers across a restart and a move of the partition to
// another member: the state topic holds each contact's newest.
func TestGuardSurvivesRestartAndRebalance(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	env := workerEnv(topics, url, nil)
	a := startWorker(t, env)
	p := newProducer(t)
	topic := topics["KAFKA_TOPIC"]
	publishAt(t, p, topic, "contact.updated", "evt_r_3", "r", "at-03", "2025-05-17T17:03:00Z")
	publishAt(t, p, topic, "contact.updated", "evt_m_3", "m", "at-03", "2025-05-17T17:03:00Z")
	eventually(t, 30*time.Second, "both applied", func() bool { return firstName(t, api, "r") == "at-03" && firstName(t, api, "m") == "at-03" })
	eventually(t, 10*time.Second, "their offsets committed", func() bool { return committedTotal(t, topics) == 2 })

	a.stop(t)
	a = startWorker(t, env) // restarted: rebuilds the states from Kafka
	publishAt(t, p, topic, "contact.updated", "evt_r_2", "r", "at-02", "2025-05-17T17:02:00Z")
	eventually(t, 30*time.Second, "r's older event found stale after the restart", func() bool { return staleCount(t, a) == 1 })

	b := startWorker(t, env)
	eventually(t, 30*time.Second, "both members holding partitions", func() bool { return holdsPartitions(a) && holdsPartitions(b) })
	a.stop(t) // b takes every partition
	eventually(t, 30*time.Second, "b holding every partition", func() bool {
		gs, err := newAdmin(t).DescribeConsumerGroups([]string{topics["WORKER_GROUP_ID"]})
		return err == nil && len(gs) == 1 && len(gs[0].Members) == 1 && gs[0].State == "Stable"
	})
	publishAt(t, p, topic, "contact.updated", "evt_m_2", "m", "at-02", "2025-05-17T17:02:00Z")
	publishAt(t, p, topic, "contact.updated", "evt_m_4", "m", "at-04", "2025-05-17T17:04:00Z")
	eventually(t, 30*time.Second, "m's newer event applied by the new owner", func() bool { return firstName(t, api, "m") == "at-04" })
	if got := staleCount(t, b); got != 1 {
		t.Errorf("the new owner counted %v stale events, want 1 (m's older one)", got)
	}
	for c, want := range map[string]string{"r": "evt_r_3", "m": "evt_m_3,evt_m_4"} {
		if got := strings.Join(applied(api)[c], ","); got != want {
			t.Errorf("%s: calls %s, want %s", c, got, want)
		}
	}
}

// An old DLQ copy replayed after newer events of its contact were applied
// is stale, where the release path once only knew its last 256 ids.
func TestGuardOldDLQCopyReplayedLater(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	wk := startWorker(t, workerEnv(topics, url, nil))
	p := newProducer(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	_ = api.Fail(standin.Failure{ContactID: "q", Status: 422, Count: 1})
	publishAt(t, p, topic, "contact.updated", "evt_q_1", "q", "v1", "2025-05-17T17:01:00Z")
	eventually(t, 30*time.Second, "E1 dead-lettered", func() bool { return len(dlqOf(t, dlq, "q")) == 1 })
	env := parkingEnv(topics, t)
	if _, sum := runReplay(t, env, "--replay-contact-id", "q"); sum.Released != 1 {
		t.Fatalf("release: %+v", sum)
	}
	eventually(t, 30*time.Second, "E1 applied by the release", func() bool { return firstName(t, api, "q") == "v1" })
	publishAt(t, p, topic, "contact.updated", "evt_q_2", "q", "v2", "2025-05-17T17:02:00Z")
	eventually(t, 30*time.Second, "E2 applied", func() bool { return firstName(t, api, "q") == "v2" })

	// A routine replay of the whole DLQ, days later: E1's copy comes back.
	if _, sum := runReplay(t, merge(env, map[string]string{"WORKER_REPLAY_GROUP_ID": uniqueName(t, "routine")})); sum.Replayed != 1 {
		t.Fatalf("routine replay: %+v, want E1's copy replayed", sum)
	}
	eventually(t, 30*time.Second, "E1's copy found stale", func() bool { return staleCount(t, wk) == 1 })
	if got := firstName(t, api, "q"); got != "v2" {
		t.Errorf("q holds %q, want v2: an older copy overwrote it", got)
	}
	if got := strings.Join(applied(api)["q"], ","); got != "evt_q_1,evt_q_2" {
		t.Errorf("q: calls %s, want evt_q_1,evt_q_2", got)
	}
	if got := len(dlqOf(t, dlq, "q")); got != 1 {
		t.Errorf("%d dead letters of q, want only E1's first one", got)
	}
}

// A stale event of a parked contact is neither applied nor parked, and a
// stale event never holds back the next one: it is applied at once.
func TestGuardStaleHoldsNothingBack(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	wk := startWorker(t, workerEnv(topics, url, nil))
	p := newProducer(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	publishAt(t, p, topic, "contact.updated", "evt_h_5", "h", "v5", "2025-05-17T17:05:00Z")
	eventually(t, 30*time.Second, "h's newest applied", func() bool { return firstName(t, api, "h") == "v5" })
	start := time.Now()
	publishAt(t, p, topic, "contact.updated", "evt_h_1", "h", "v1", "2025-05-17T17:01:00Z")
	publishAt(t, p, topic, "contact.updated", "evt_h_6", "h", "v6", "2025-05-17T17:06:00Z")
	eventually(t, 30*time.Second, "the next event applied", func() bool { return firstName(t, api, "h") == "v6" })
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the next event took %v", took)
	}
	if got := staleCount(t, wk); got != 1 {
		t.Errorf("%v stale, want 1", got)
	}
	for _, c := range api.Calls() {
		if c.IdempotencyKey == "evt_h_1" {
			t.Errorf("the stale event was sent to the Contacts API: %+v", c)
		}
	}

	// Parked: a newer event waits, an older one is stale, not parked.
	_ = api.Fail(standin.Failure{ContactID: "h", Status: 422, Count: 1})
	publishAt(t, p, topic, "contact.updated", "evt_h_7", "h", "v7", "2025-05-17T17:07:00Z")
	publishAt(t, p, topic, "contact.updated", "evt_h_8", "h", "v8", "2025-05-17T17:08:00Z")
	publishAt(t, p, topic, "contact.updated", "evt_h_2", "h", "v2", "2025-05-17T17:02:00Z")
	eventually(t, 30*time.Second, "the older event found stale", func() bool { return staleCount(t, wk) == 2 })
	if got := strings.Join(dlqOf(t, dlq, "h"), " "); got != "evt_h_7/permanent/ evt_h_8/parked/evt_h_7" {
		t.Errorf("dead letters of h: %s; want E7 and E8 parked behind it, nothing of the stale E2", got)
	}
}

// committedTotal sums the group's committed offsets over the events
// topic's partitions.
func committedTotal(t testing.TB, topics map[string]string) int64 {
	t.Helper()
	client := newClient(t, brokers)
	parts, err := client.Partitions(topics["KAFKA_TOPIC"])
	if err != nil {
		t.Fatal(err)
	}
	resp, err := newAdmin(t).ListConsumerGroupOffsets(topics["WORKER_GROUP_ID"], map[string][]int32{topics["KAFKA_TOPIC"]: parts})
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, p := range parts {
		if b := resp.GetBlock(topics["KAFKA_TOPIC"], p); b != nil && b.Offset > 0 {
			sum += b.Offset
		}
	}
	return sum
}

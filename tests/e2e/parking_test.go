package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/tests/standin"
)

// Order per contact through the DLQ: once a contact's event is
// dead-lettered, its later events are parked behind it (in the DLQ, in
// order, not applied) until a replay releases the contact.

// dlqOf returns the dead letters keyed contact, in DLQ order, as
// "event_id/kind/parked_behind".
func dlqOf(t testing.TB, topic, contact string) []string {
	t.Helper()
	var out []string
	for _, m := range readAll(t, brokers, topic) {
		if string(m.Key) == contact {
			h := headerMap(m)
			out = append(out, h["ce_id"]+"/"+h["dlq_error_kind"]+"/"+h["dlq_parked_behind"])
		}
	}
	return out
}

// parkedSetup starts the stand-in refusing contact px (422) and a worker,
// on topics of the test's own.
func parkedSetup(t testing.TB) (api *standin.Server, url string, topics map[string]string, wk *binary, p sarama.SyncProducer) {
	api, url = contactsAPI(t)
	topics = topicEnv(t)
	_ = api.Fail(standin.Failure{ContactID: "px", Status: 422})
	wk = startWorker(t, workerEnv(topics, url, nil))
	return api, url, topics, wk, newProducer(t)
}

func parkingEnv(topics map[string]string, t testing.TB) map[string]string {
	return merge(topics, map[string]string{"WORKER_REPLAY_GROUP_ID": uniqueName(t, "replay"), "WORKER_REPLAY_ACTOR": "sre-test"})
}

// The whole story: E1 rejected, E2 and E3 parked while another contact is
// applied; the worker restarted, E4 parked too; the cause fixed, a replay
// of the contact applies E1, E2, E3, E4 in that order and releases it; E5
// is applied at once; a second replay finds nothing.
func TestParkingScenario(t *testing.T) {
	api, url, topics, wk, p := parkedSetup(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	for i := 1; i <= 3; i++ {
		publishEvent(t, p, topic, "contact.updated", fmt.Sprintf("evt_px_%d", i), "px", fmt.Sprintf("v%d", i))
	}
	publishEvent(t, p, topic, "contact.updated", "evt_py_1", "py", "y1")
	eventually(t, 30*time.Second, "E1 dead-lettered, E2 and E3 parked", func() bool { return len(dlqOf(t, dlq, "px")) >= 3 })
	eventually(t, 30*time.Second, "the other contact applied", func() bool { return firstName(t, api, "py") == "y1" })
	want := []string{"evt_px_1/permanent/", "evt_px_2/parked/evt_px_1", "evt_px_3/parked/evt_px_1"}
	if got := dlqOf(t, dlq, "px"); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("dead letters of px %v, want %v", got, want)
	}
	if got := metric(t, wk, "worker_parked_contacts"); got != 1 {
		t.Errorf("worker_parked_contacts %v, want 1", got)
	}
	env := parkingEnv(topics, t)
	lines, sum := runReplay(t, env, "--replay-list-parked")
	if len(lines) != 1 || lines[0].ContactID != "px" || lines[0].Head != "evt_px_1" || lines[0].ParkedRecords != 2 || lines[0].HeadKind != "permanent" ||
		sum.ParkedContacts != 1 || sum.Action != "list_parked" || sum.Actor != "sre-test" || sum.At == "" {
		t.Errorf("list: %+v, summary %+v", lines, sum)
	}

	wk.stop(t)
	wk = startWorker(t, workerEnv(topics, url, nil)) // rebuilds the parked contacts from Kafka
	publishEvent(t, p, topic, "contact.updated", "evt_px_4", "px", "v4")
	eventually(t, 30*time.Second, "E4 parked after the restart", func() bool { return len(dlqOf(t, dlq, "px")) >= 4 })
	if got := dlqOf(t, dlq, "px")[3]; got != "evt_px_4/parked/evt_px_1" {
		t.Errorf("E4's dead letter %s, want parked behind evt_px_1", got)
	}
	if firstName(t, api, "px") != "" {
		t.Fatal("px applied while parked")
	}

	api.ClearFailures() // the cause fixed
	lines, sum = runReplay(t, env, "--replay-contact-id", "px")
	if sum.Action != "release" || sum.Released != 1 || sum.Replayed != 4 || ids(lines, "replayed") != "evt_px_1,evt_px_2,evt_px_3,evt_px_4" {
		t.Errorf("release: %+v, summary %+v", lines, sum)
	}
	eventually(t, 30*time.Second, "E1 to E4 applied", func() bool { return len(applied(api)["px"]) >= 4 })
	if got := strings.Join(applied(api)["px"], ","); got != "evt_px_1,evt_px_2,evt_px_3,evt_px_4" {
		t.Errorf("px applied %s, want E1, E2, E3, E4 in order", got)
	}
	if firstName(t, api, "px") != "v4" {
		t.Errorf("px holds %q, want v4", firstName(t, api, "px"))
	}
	eventually(t, 10*time.Second, "px released", func() bool { return metric(t, wk, "worker_parked_contacts") == 0 })

	publishEvent(t, p, topic, "contact.updated", "evt_px_5", "px", "v5")
	eventually(t, 30*time.Second, "E5 applied at once", func() bool { return firstName(t, api, "px") == "v5" })
	lines, sum = runReplay(t, env, "--replay-contact-id", "px")
	if sum.NotParked != 1 || sum.Replayed != 0 || len(lines) != 1 || lines[0].Action != "not_parked" {
		t.Errorf("second replay: %+v, summary %+v; want nothing to do", lines, sum)
	}
	if lines, _ := runReplay(t, env, "--replay-list-parked"); len(lines) != 0 {
		t.Errorf("still listed as parked: %+v", lines)
	}
}

// The head failing again on its replay: the contact stays parked, and its
// events are in the DLQ again, in order; the next replay, with the cause
// fixed, applies them in order.
func TestParkingHeadFailsAgainOnReplay(t *testing.T) {
	api, _, topics, _, p := parkedSetup(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	publishEvent(t, p, topic, "contact.updated", "evt_px_1", "px", "v1")
	publishEvent(t, p, topic, "contact.updated", "evt_px_2", "px", "v2")
	eventually(t, 30*time.Second, "E1 dead, E2 parked", func() bool { return len(dlqOf(t, dlq, "px")) >= 2 })
	env := parkingEnv(topics, t)
	if _, sum := runReplay(t, env, "--replay-contact-id", "px"); sum.Replayed != 2 {
		t.Fatalf("replayed %d, want 2", sum.Replayed)
	}
	eventually(t, 30*time.Second, "both back in the DLQ", func() bool { return len(dlqOf(t, dlq, "px")) >= 4 })
	want := "evt_px_1/permanent/ evt_px_2/parked/evt_px_1 evt_px_1/permanent/ evt_px_2/parked/evt_px_1"
	if got := strings.Join(dlqOf(t, dlq, "px"), " "); got != want {
		t.Errorf("dead letters %s, want %s", got, want)
	}
	lines, _ := runReplay(t, env, "--replay-list-parked")
	if len(lines) != 1 || lines[0].Head != "evt_px_1" || lines[0].ParkedRecords != 2 {
		t.Errorf("parked %+v, want px behind evt_px_1, evt_px_2 parked twice", lines)
	}
	if len(applied(api)["px"]) != 0 {
		t.Fatalf("applied %v while the head fails", applied(api)["px"])
	}

	api.ClearFailures()
	if _, sum := runReplay(t, env, "--replay-contact-id", "px"); sum.Replayed != 2 || sum.Released != 1 {
		t.Fatalf("second release: %+v", sum)
	}
	eventually(t, 30*time.Second, "both applied", func() bool { return len(applied(api)["px"]) >= 2 })
	if got := strings.Join(applied(api)["px"], ","); got != "evt_px_1,evt_px_2" {
		t.Errorf("applied %s, want evt_px_1,evt_px_2 (the latest copy of each, once)", got)
	}
}

// An SRE drops a head that must never be applied: what was parked behind it
// is applied in order, and a later replay of the whole DLQ does not apply
// the dropped event either.
// parkPx publishes evt_px_1 (refused by parkedSetup's stand-in), then
// evt_px_2 and evt_px_3, and waits until the first is dead-lettered and
// the others parked behind it.
func parkPx(t testing.TB, p sarama.SyncProducer, topics map[string]string) {
	t.Helper()
	for i := 1; i <= 3; i++ {
		publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.updated", fmt.Sprintf("evt_px_%d", i), "px", fmt.Sprintf("v%d", i))
	}
	eventually(t, 30*time.Second, "E1 dead, E2 and E3 parked", func() bool { return len(dlqOf(t, topics["KAFKA_DLQ_TOPIC"], "px")) >= 3 })
}

func TestParkingDiscardHead(t *testing.T) {
	api, _, topics, wk, p := parkedSetup(t)
	parkPx(t, p, topics)
	api.ClearFailures()
	env := parkingEnv(topics, t)
	if _, err := runReplayErr(t, env, "--replay-contact-id", "px", "--replay-discard-event-id", "evt_px_2"); err == nil || !strings.Contains(err.Error(), "only the head") {
		t.Errorf("discarding a non-head: %v, want refused", err)
	}
	lines, sum := runReplay(t, env, "--replay-contact-id", "px", "--replay-discard-event-id", "evt_px_1")
	if sum.Discarded != 1 || sum.Replayed != 2 || ids(lines, "discarded") != "evt_px_1" {
		t.Errorf("discard: %+v, summary %+v", lines, sum)
	}
	eventually(t, 30*time.Second, "E2, E3 applied", func() bool { return len(applied(api)["px"]) >= 2 })
	eventually(t, 10*time.Second, "px released", func() bool { return metric(t, wk, "worker_parked_contacts") == 0 })
	// A replay of the whole DLQ (every copy of every event) later on.
	if _, sum := runReplay(t, merge(env, map[string]string{"WORKER_REPLAY_GROUP_ID": uniqueName(t, "all")}), "--replay-from-beginning"); sum.Replayed != 3 {
		t.Fatalf("replayed %d, want the 3 dead letters", sum.Replayed)
	}
	eventually(t, 30*time.Second, "the whole-DLQ replay processed", func() bool {
		return outcomes(t, wk, "discarded") >= 2
	})
	if got := strings.Join(applied(api)["px"], ","); got != "evt_px_2,evt_px_3" {
		t.Errorf("applied %s, want evt_px_2,evt_px_3: evt_px_1 was discarded", got)
	}
	if firstName(t, api, "px") != "v3" {
		t.Errorf("px holds %q, want v3", firstName(t, api, "px"))
	}
}

// A contact parked longer than the DLQ's retention: its head's copy is
// gone (deleted here as retention would). A release cannot put it back
// and says so, leaving the contact parked; a discard needs no copy: it
// releases the contact and the events parked behind it are applied.
func TestParkingHeadCopyExpired(t *testing.T) {
	api, _, topics, wk, p := parkedSetup(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	parkPx(t, p, topics)
	eventually(t, 10*time.Second, "px parked in its state", func() bool { return metric(t, wk, "worker_parked_contacts") == 1 })
	api.ClearFailures()
	var head *sarama.ConsumerMessage
	for _, m := range readAll(t, brokers, dlq) {
		if headerMap(m)["ce_id"] == "evt_px_1" {
			head = m
		}
	}
	if head == nil {
		t.Fatal("no DLQ copy of the head")
	}
	// Retention passes over the head's copy (only it: the parked ones
	// come after it in the same partition).
	if err := newAdmin(t).DeleteRecords(dlq, map[int32]int64{head.Partition: head.Offset + 1}); err != nil {
		t.Fatal(err)
	}
	env := parkingEnv(topics, t)
	lines, sum := runReplay(t, env, "--replay-contact-id", "px")
	if sum.Missing != 1 || sum.Replayed != 0 || len(lines) != 1 || lines[0].Action != "missing" {
		t.Fatalf("release of a head whose copy expired: %+v, summary %+v; want missing, nothing put back", lines, sum)
	}
	time.Sleep(time.Second)
	if len(applied(api)["px"]) != 0 || metric(t, wk, "worker_parked_contacts") != 1 {
		t.Fatalf("after a release reported missing: applied %v, parked %v; want nothing applied, px parked", applied(api)["px"], metric(t, wk, "worker_parked_contacts"))
	}
	lines, sum = runReplay(t, env, "--replay-contact-id", "px", "--replay-discard-event-id", "evt_px_1")
	if sum.Discarded != 1 || sum.Replayed != 2 || sum.Missing != 0 || ids(lines, "discarded") != "evt_px_1" {
		t.Fatalf("discard of a head whose copy expired: %+v, summary %+v", lines, sum)
	}
	eventually(t, 30*time.Second, "E2, E3 applied", func() bool { return len(applied(api)["px"]) >= 2 })
	eventually(t, 10*time.Second, "px released", func() bool { return metric(t, wk, "worker_parked_contacts") == 0 })
	if got := strings.Join(applied(api)["px"], ","); got != "evt_px_2,evt_px_3" {
		t.Errorf("applied %s, want evt_px_2,evt_px_3", got)
	}
	publishEvent(t, p, topic, "contact.updated", "evt_px_4", "px", "v4")
	eventually(t, 30*time.Second, "E4 applied at once", func() bool { return firstName(t, api, "px") == "v4" })
}

// A contact parked behind thousands of events: its state record stays the
// head and a count (before, it listed every parked id and, at about 46,000,
// passed max.message.bytes and stalled its partition), and its release
// applies them all, in order.
func TestParkedStateStaysSmall(t *testing.T) {
	api, _, topics, wk, p := parkedSetup(t)
	topic, state := topics["KAFKA_TOPIC"], stateTopicOf(topics)
	const n = 3000
	msgs := make([]*sarama.ProducerMessage, 0, n)
	for i := range n {
		body := fmt.Sprintf(`{"event_type":"contact.updated","event_id":"evt_px_%05d","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"px","acme_first_name":"v%05d"}}`, i, i)
		ev, err := acmecrm.Parse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, record.NewEventMessage(topic, ev, []byte(body), fmt.Sprintf("msg_px_%05d", i), time.Now()))
	}
	if err := p.SendMessages(msgs); err != nil {
		t.Fatal(err)
	}
	var latest []byte
	eventually(t, 60*time.Second, "every event after the head parked, in the state", func() bool {
		for _, m := range readAll(t, brokers, state) {
			if string(m.Key) == "px" {
				latest = m.Value
			}
		}
		var v struct {
			Parked struct {
				Records int `json:"records"`
			} `json:"parked"`
		}
		return latest != nil && json.Unmarshal(latest, &v) == nil && v.Parked.Records == n-1
	})
	if len(latest) > 512 {
		t.Errorf("px's state record is %d bytes with %d events parked, want it small: %s", len(latest), n-1, latest)
	}
	api.ClearFailures()
	if _, sum := runReplay(t, parkingEnv(topics, t), "--replay-contact-id", "px"); sum.Replayed != n || sum.Released != 1 {
		t.Fatalf("release: %+v, want %d replayed", sum, n)
	}
	eventually(t, 60*time.Second, "all applied after the release", func() bool { return len(applied(api)["px"]) == n })
	eventually(t, 10*time.Second, "px released", func() bool { return metric(t, wk, "worker_parked_contacts") == 0 })
	for i, id := range applied(api)["px"] {
		if want := fmt.Sprintf("evt_px_%05d", i); id != want {
			t.Fatalf("applied %s as the %dth, want %s", id, i, want)
		}
	}
	t.Logf("state record with %d events parked: %d bytes", n-1, len(latest))
}

// A rebalance while a contact is parked: the member that takes its
// partition over rebuilds the parked contacts from Kafka before applying
// anything, and parks the contact's next event.
func TestParkingSurvivesRebalance(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{ContactID: "px", Status: 422})
	env := workerEnv(topics, url, nil)
	a := startWorker(t, env)
	p := newProducer(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	publishEvent(t, p, topic, "contact.updated", "evt_px_1", "px", "v1")
	eventually(t, 30*time.Second, "E1 dead-lettered", func() bool { return len(dlqOf(t, dlq, "px")) >= 1 })
	api.ClearFailures() // px is parked now whatever the API says
	b := startWorker(t, env)
	eventually(t, 30*time.Second, "both members holding partitions", func() bool { return holdsPartitions(a) && holdsPartitions(b) })
	a.stop(t) // b takes every partition, px's included
	eventually(t, 30*time.Second, "b holding every partition", func() bool {
		gs, err := newAdmin(t).DescribeConsumerGroups([]string{topics["WORKER_GROUP_ID"]})
		return err == nil && len(gs) == 1 && len(gs[0].Members) == 1 && gs[0].State == "Stable"
	})
	publishEvent(t, p, topic, "contact.updated", "evt_px_2", "px", "v2")
	eventually(t, 30*time.Second, "E2 parked by the new owner", func() bool { return len(dlqOf(t, dlq, "px")) >= 2 })
	if got := dlqOf(t, dlq, "px")[1]; got != "evt_px_2/parked/evt_px_1" {
		t.Errorf("E2's dead letter %s, want parked behind evt_px_1", got)
	}
	if len(applied(api)["px"]) != 0 {
		t.Errorf("applied %v while parked", applied(api)["px"])
	}
	if got := metric(t, b, "worker_parked_contacts"); got != 1 {
		t.Errorf("b's worker_parked_contacts %v, want 1", got)
	}
}

// stateTopicOf is the state topic a worker of topics uses: named after its
// owner, the group and the events topic.
func stateTopicOf(topics map[string]string) string {
	return topics["WORKER_GROUP_ID"] + "-" + topics["KAFKA_TOPIC"] + "-state"
}

// The state topic is named after its owner, has the events topic's
// partitions, and is compacted and deleted by age after the horizon.
func TestStateTopicProvisioned(t *testing.T) {
	_, url := contactsAPI(t)
	topics := topicEnv(t)
	createTopic(t, topics["KAFKA_TOPIC"], 5)
	startWorker(t, workerEnv(topics, url, nil))
	admin := newAdmin(t)
	var partitions int
	eventually(t, 10*time.Second, "the state topic's metadata", func() bool {
		meta, err := admin.DescribeTopics([]string{stateTopicOf(topics)})
		if err != nil || len(meta) != 1 || meta[0].Err != sarama.ErrNoError {
			return false
		}
		partitions = len(meta[0].Partitions)
		return true
	})
	if partitions != 5 {
		t.Fatalf("state topic has %d partitions, want 5 like the events topic", partitions)
	}
	cfg, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: stateTopicOf(topics)})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cleanup.policy": "compact,delete", "retention.ms": "2592000000", "segment.ms": "3600000"}
	for _, e := range cfg {
		if w, ok := want[e.Name]; ok {
			if e.Value != w {
				t.Errorf("%s %s, want %s", e.Name, e.Value, w)
			}
			delete(want, e.Name)
		}
	}
	if len(want) != 0 {
		t.Errorf("configs not found: %v", want)
	}
}

// Every contact id the gateway accepts can be released, commas and spaces
// included: --replay-contact-id splits on commas, the id file does not.
func TestParkingReleaseAnyContactID(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	const id = "acme, inc. #7"
	_ = api.Fail(standin.Failure{ContactID: id, Status: 422})
	startWorker(t, workerEnv(topics, url, nil))
	p := newProducer(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	publishEvent(t, p, topic, "contact.updated", "evt_odd_1", id, "v1")
	publishEvent(t, p, topic, "contact.updated", "evt_odd_2", id, "v2")
	eventually(t, 30*time.Second, "E1 dead, E2 parked", func() bool { return len(dlqOf(t, dlq, id)) == 2 })
	api.ClearFailures()
	file := filepath.Join(t.TempDir(), "ids")
	if err := os.WriteFile(file, []byte(id+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := merge(parkingEnv(topics, t), map[string]string{"WORKER_REPLAY_CONTACT_ID_FILE": file})
	eventually(t, 10*time.Second, "the contact parked in the state topic", func() bool {
		lines, _ := runReplay(t, parkingEnv(topics, t), "--replay-list-parked")
		return len(lines) == 1 && lines[0].ContactID == id
	})
	if _, sum := runReplay(t, env); sum.Released != 1 || sum.Replayed != 2 {
		t.Fatalf("release by file: %+v", sum)
	}
	eventually(t, 30*time.Second, "E1 and E2 applied", func() bool { return firstName(t, api, id) == "v2" })
}

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/tests/standin"
)

// contactsAPI starts the Contacts API stand-in for one test.
func contactsAPI(t testing.TB) (*standin.Server, string) {
	s := standin.New("test-token")
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func workerEnv(topics map[string]string, apiURL string, extra map[string]string) map[string]string {
	return merge(topics, map[string]string{
		"WORKER_CONTACTS_API_URL": apiURL, "WORKER_CONTACTS_API_TOKEN": "test-token",
		"KAFKA_TOPIC_PARTITIONS": "4", "WORKER_RETRY_INITIAL_INTERVAL": "50ms", "WORKER_RETRY_MAX_INTERVAL": "200ms",
	}, extra)
}

// producer publishes records straight to Kafka, as the gateway would (or
// as a broken producer would, for the invalid ones).
func newProducer(t testing.TB) sarama.SyncProducer {
	t.Helper()
	return syncProducer(t, nil)
}

// syncProducer is newProducer with its configuration changed by edit (a
// partitioner, compression, limits), when not nil.
func syncProducer(t testing.TB, edit func(*sarama.Config)) sarama.SyncProducer {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_9_0_0
	sc.Producer.Return.Successes = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	if edit != nil {
		edit(sc)
	}
	p, err := sarama.NewSyncProducer(strings.Split(brokers, ","), sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func publishEvent(t testing.TB, p sarama.SyncProducer, topic, typ, id, contact, firstName string) {
	t.Helper()
	publishAt(t, p, topic, typ, id, contact, firstName, "2025-05-17T17:06:39Z")
}

// publishAt publishes an event with the given AcmeCRM timestamp.
func publishAt(t testing.TB, p sarama.SyncProducer, topic, typ, id, contact, firstName, timestamp string) {
	t.Helper()
	body := fmt.Sprintf(`{"event_type":%q,"event_id":%q,"timestamp":%q,"data":{"contact_id":%q,"acme_first_name":%q}}`, typ, id, timestamp, contact, firstName)
	ev, err := acmecrm.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.SendMessage(record.NewEventMessage(topic, ev, []byte(body), "msg_"+id, time.Now())); err != nil {
		t.Fatal(err)
	}
}

func publishRaw(t testing.TB, p sarama.SyncProducer, topic, key, value string) {
	t.Helper()
	if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(key), Value: sarama.StringEncoder(value)}); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// applied returns, per contact, the event ids of the calls that changed
// something (not answered from the idempotency record), in call order.
func applied(s *standin.Server) map[string][]string {
	out := map[string][]string{}
	for _, c := range s.Calls() {
		if !c.Replayed && c.Status < 300 || c.Status == 404 && c.Method == "DELETE" && !c.Replayed {
			out[c.ContactID] = append(out[c.ContactID], c.IdempotencyKey)
		}
	}
	return out
}

func firstName(t testing.TB, s *standin.Server, id string) string {
	raw, ok := s.Contact(id)
	if !ok {
		return ""
	}
	var c struct {
		FirstName string `json:"first_name"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.FirstName
}

// The whole path: signed webhooks through the gateway, applied by the worker
// in order per contact, each call with its event id as Idempotency-Key.
func TestWorkerAppliesEventsInOrderPerContact(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, map[string]string{"KAFKA_TOPIC_PARTITIONS": "4"}))
	startWorker(t, workerEnv(topics, url, nil))
	s := newSender(t, gw)

	send := func(typ, id, contact, name string) {
		body := fmt.Sprintf(`{"event_type":%q,"event_id":%q,"timestamp":"2025-05-17T17:06:39-07:00","data":{"contact_id":%q,"acme_first_name":%q,"acme_last_name":"Doe","acme_email":"j@example.com","acme_phone":"555"}}`, typ, id, contact, name)
		if r := s.mustSend(body, nil); r.status != 202 {
			t.Fatalf("%s: %d %v", id, r.status, r.body)
		}
	}
	start := time.Now()
	send("contact.created", "evt_solo", "solo", "John")
	eventually(t, 10*time.Second, "the first event applied", func() bool { _, ok := api.Contact("solo"); return ok })
	t.Logf("one event, gateway 202 to applied: %v", time.Since(start))

	send("contact.updated", "evt_solo_2", "solo", "Johnny")
	send("contact.deleted", "evt_solo_3", "solo", "")
	want := map[string][]string{"solo": {"evt_solo", "evt_solo_2", "evt_solo_3"}}
	for i := 0; i < 30; i++ { // interleaved: c-0 … c-9, three events each
		c := fmt.Sprintf("c-%d", i%10)
		id := fmt.Sprintf("evt_%s_%d", c, i/10)
		typ := "contact.updated"
		if i < 10 {
			typ = "contact.created"
		}
		send(typ, id, c, fmt.Sprintf("v%d", i/10))
		want[c] = append(want[c], id)
	}
	eventually(t, 30*time.Second, "all 33 events applied", func() bool {
		n := 0
		for _, ids := range applied(api) {
			n += len(ids)
		}
		return n >= 33
	})
	got := applied(api)
	for c, ids := range want {
		if strings.Join(got[c], ",") != strings.Join(ids, ",") {
			t.Errorf("contact %s: applied %v, want %v in this order", c, got[c], ids)
		}
	}
	if _, ok := api.Contact("solo"); ok {
		t.Error("contact solo still exists after contact.deleted")
	}
	for i := 0; i < 10; i++ {
		if got := firstName(t, api, fmt.Sprintf("c-%d", i)); got != "v2" {
			t.Errorf("c-%d first_name %q, want v2 (the last update)", i, got)
		}
	}
	raw, _ := api.Contact("c-0")
	var c map[string]any
	_ = json.Unmarshal(raw, &c)
	wantFields := map[string]any{"acme_contact_id": "c-0", "first_name": "v2", "last_name": "Doe", "email": "j@example.com", "phone": "555", "source_updated_at": "2025-05-17T17:06:39-07:00"}
	for k, v := range wantFields {
		if c[k] != v {
			t.Errorf("stored c-0 %s = %v, want %v", k, c[k], v)
		}
	}
	if dl := readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"]); len(dl) != 0 {
		t.Errorf("%d events dead-lettered, want none", len(dl))
	}
}

// 503 twice then 200: applied after retries, not dead-lettered.
func TestWorkerRetriesTransientFailures(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	startWorker(t, workerEnv(topics, url, nil))
	_ = api.Fail(standin.Failure{ContactID: "flaky", Status: 503, Count: 2})
	p := newProducer(t)
	publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.created", "evt_flaky", "flaky", "Ann")
	eventually(t, 20*time.Second, "the flaky contact applied", func() bool { return firstName(t, api, "flaky") == "Ann" })
	var statuses []string
	for _, c := range api.Calls() {
		if c.ContactID == "flaky" {
			statuses = append(statuses, strconv.Itoa(c.Status))
			if c.IdempotencyKey != "evt_flaky" {
				t.Errorf("call with Idempotency-Key %q, want evt_flaky", c.IdempotencyKey)
			}
		}
	}
	if strings.Join(statuses, ",") != "503,503,200" {
		t.Errorf("calls answered %v, want 503,503,200", statuses)
	}
	if dl := readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"]); len(dl) != 0 {
		t.Errorf("%d dead-lettered, want none", len(dl))
	}
}

// What cannot be applied goes to the DLQ with the right headers, and the
// events after it are still applied.
func TestWorkerDeadLetters(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	topics["KAFKA_TOPIC_PARTITIONS"] = "1" // one partition: "after it" is well defined
	wk := startWorker(t, workerEnv(topics, url, map[string]string{"WORKER_RETRY_MAX_ELAPSED_TIME": "1s", "KAFKA_TOPIC_PARTITIONS": "1"}))
	_ = api.Fail(standin.Failure{ContactID: "down", Status: 503})
	_ = api.Fail(standin.Failure{ContactID: "rejected", Status: 400})
	p := newProducer(t)
	topic := topics["KAFKA_TOPIC"]
	publishEvent(t, p, topic, "contact.created", "evt_down", "down", "A")
	publishEvent(t, p, topic, "contact.created", "evt_rejected", "rejected", "B")
	publishRaw(t, p, topic, "broken", `{"event_type": "contact.created", "event_id": `)
	publishRaw(t, p, topic, "merged", `{"event_type":"contact.merged","event_id":"evt_merged","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"merged"}}`)
	// "down" is given up on only with evidence that the API works for
	// others: a call made after its first failure, answered (after's).
	eventually(t, 10*time.Second, "down's first 503", func() bool {
		for _, c := range api.Calls() {
			if c.ContactID == "down" && c.Status == 503 {
				return true
			}
		}
		return false
	})
	publishEvent(t, p, topic, "contact.created", "evt_after", "after", "C")
	eventually(t, 30*time.Second, "the event after the failures applied", func() bool { return firstName(t, api, "after") == "C" })

	var dl []*sarama.ConsumerMessage
	eventually(t, 10*time.Second, "4 dead letters", func() bool {
		dl = readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"])
		return len(dl) >= 4
	})
	if len(dl) != 4 {
		t.Fatalf("%d dead letters, want 4", len(dl))
	}
	byKey := map[string]*sarama.ConsumerMessage{}
	for _, m := range dl {
		byKey[string(m.Key)] = m
	}
	calls := 0
	for _, c := range api.Calls() {
		if c.ContactID == "down" {
			calls++
		}
	}
	tests := []struct {
		key, kind, attempts, value string
	}{
		{"down", "transient", strconv.Itoa(calls), ""},
		{"rejected", "permanent", "1", ""},
		{"broken", "invalid", "0", `{"event_type": "contact.created", "event_id": `},
		{"merged", "unsupported", "0", `{"event_type":"contact.merged","event_id":"evt_merged","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"merged"}}`},
	}
	for _, tt := range tests {
		m, ok := byKey[tt.key]
		if !ok {
			t.Errorf("no dead letter keyed %s", tt.key)
			continue
		}
		h := headerMap(m)
		if h["dlq_error_kind"] != tt.kind || h["dlq_attempts"] != tt.attempts {
			t.Errorf("%s: kind %s attempts %s, want %s %s", tt.key, h["dlq_error_kind"], h["dlq_attempts"], tt.kind, tt.attempts)
		}
		if h["dlq_original_topic"] != topic || h["dlq_original_partition"] != "0" || h["dlq_original_offset"] == "" ||
			h["dlq_error"] == "" || h["dlq_consumer_group"] != topics["WORKER_GROUP_ID"] {
			t.Errorf("%s: headers %v", tt.key, h)
		}
		if at, err := time.Parse(time.RFC3339Nano, h["dlq_failed_at"]); err != nil || time.Since(at) > time.Minute {
			t.Errorf("%s: dlq_failed_at %q", tt.key, h["dlq_failed_at"])
		}
		if tt.value != "" && string(m.Value) != tt.value {
			t.Errorf("%s: value %q, want the original %q", tt.key, m.Value, tt.value)
		}
		if strings.HasPrefix(tt.key, "down") || tt.key == "rejected" {
			if h["ce_id"] != "evt_"+tt.key || h["ce_type"] != "contact.created" || h["webhook_id"] == "" {
				t.Errorf("%s: original headers not kept: %v", tt.key, h)
			}
		}
	}
	if calls < 2 {
		t.Errorf("the transient failure was tried %d times, want retries", calls)
	}
	offsets := []string{headerMap(byKey["down"])["dlq_original_offset"], headerMap(byKey["rejected"])["dlq_original_offset"]}
	if offsets[0] != "0" || offsets[1] != "1" {
		t.Errorf("original offsets %v, want 0 and 1", offsets)
	}
	// Applied and dead-lettered events alike are committed: a clean stop
	// leaves the group's position after the last of the 5 records.
	wk.stop(t)
	if got := committed(t, topics["WORKER_GROUP_ID"], topic); got[0] != 5 {
		t.Errorf("committed offset %v, want 5", got)
	}
}

// Two members share the partitions and together apply every event; one
// stopped mid-stream loses nothing, and each contact's events stay in order.
func TestWorkerFleetSharesAndSurvivesAMemberStopping(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	env := workerEnv(topics, url, nil)
	a := startWorker(t, env)
	b := startWorker(t, env)
	eventually(t, 30*time.Second, "both members holding partitions", func() bool {
		return holdsPartitions(a) && holdsPartitions(b)
	})
	p := newProducer(t)
	const contactsN, perContact = 20, 15
	for round := 0; round < perContact; round++ {
		for c := 0; c < contactsN; c++ {
			publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.updated", fmt.Sprintf("evt_%02d_%02d", c, round), fmt.Sprintf("c-%02d", c), fmt.Sprintf("v%02d", round))
		}
		if round == perContact/2 {
			eventually(t, 30*time.Second, "both members applying", func() bool {
				return outcomes(t, a, "applied") > 0 && outcomes(t, b, "applied") > 0
			})
			a.stop(t) // mid-stream
		}
	}
	eventually(t, 60*time.Second, "every event applied", func() bool {
		got := applied(api)
		for c := 0; c < contactsN; c++ {
			if len(got[fmt.Sprintf("c-%02d", c)]) < perContact {
				return false
			}
		}
		return true
	})
	for c, ids := range applied(api) {
		if len(ids) != perContact {
			t.Errorf("%s: applied %d events, want %d (each once; redeliveries are answered from the idempotency record)", c, len(ids), perContact)
		}
		for i := 1; i < len(ids); i++ {
			if ids[i] <= ids[i-1] {
				t.Errorf("%s: applied out of order: %v", c, ids)
				break
			}
		}
		if got := firstName(t, api, c); got != fmt.Sprintf("v%02d", perContact-1) {
			t.Errorf("%s: final first_name %q, want the last update", c, got)
		}
	}
}

// committed returns the group's committed offset of each partition of topic.
func committed(t testing.TB, group, topic string) map[int32]int64 {
	t.Helper()
	resp, err := newAdmin(t).ListConsumerGroupOffsets(group, nil)
	if err != nil {
		t.Fatalf("offsets of %s: %v", group, err)
	}
	out := map[int32]int64{}
	for p, b := range resp.Blocks[topic] {
		out[p] = b.Offset
	}
	return out
}

// holdsPartitions reports whether the member's latest assignment is not empty.
func holdsPartitions(b *binary) bool {
	lines := strings.Split(b.logs.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], `"message":"partitions assigned"`) {
			return strings.Contains(lines[i], `":[`)
		}
	}
	return false
}

// createTopic makes a topic before any binary would provision it.
func createTopic(t testing.TB, name string, partitions int32) {
	t.Helper()
	if err := newAdmin(t).CreateTopic(name, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
		t.Fatalf("creating %s: %v", name, err)
	}
}

// A worker killed (SIGKILL) while an event is being retried, then
// restarted: the event is applied once the API recovers, and no committed
// offset skipped it.
func TestWorkerKilledWhileRetryingLosesNothing(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	topics["KAFKA_TOPIC_PARTITIONS"] = "1"
	env := workerEnv(topics, url, map[string]string{"KAFKA_TOPIC_PARTITIONS": "1", "WORKER_RETRY_MAX_ELAPSED_TIME": "10m"})
	_ = api.Fail(standin.Failure{ContactID: "stuck", Status: 503})
	createTopic(t, topics["KAFKA_TOPIC"], 1)
	p := newProducer(t)
	publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.created", "evt_before", "before", "A")
	publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.created", "evt_stuck", "stuck", "B")
	publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.created", "evt_after", "after", "C")

	addr := freeAddr(t)
	cmd := exec.Command(builtBinary(t, "contact-worker"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KAFKA_BROKERS=" + brokers, "WORKER_HTTP_ADDR=" + addr}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the stuck event being retried", func() bool {
		n := 0
		for _, c := range api.Calls() {
			if c.ContactID == "stuck" {
				n++
			}
		}
		return n >= 3
	})
	// The event before it is committed (autocommit, every second); the stuck
	// one never is, however long it is retried, and neither is the one after
	// it, although that other contact's event is applied meanwhile: the
	// committed offset is the watermark, the lowest unfinished offset.
	eventually(t, 10*time.Second, "the first event committed", func() bool {
		return committed(t, topics["WORKER_GROUP_ID"], topics["KAFKA_TOPIC"])[0] == 1
	})
	eventually(t, 10*time.Second, "the other contact's later event applied while the stuck one is retried", func() bool {
		return firstName(t, api, "after") == "C"
	})
	calls := api.CallCount()
	eventually(t, 10*time.Second, "more retries after that commit", func() bool { return api.CallCount() >= calls+3 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if firstName(t, api, "before") != "A" || firstName(t, api, "stuck") != "" {
		t.Fatalf("before the kill: want the stuck event not applied; calls %v", api.Calls())
	}

	// Killed mid-retry: the committed position is at the stuck event, not past it.
	if got := committed(t, topics["WORKER_GROUP_ID"], topics["KAFKA_TOPIC"]); got[0] != 1 {
		t.Errorf("committed offset after the kill %v, want 1 (the stuck event, not past it)", got)
	}
	api.ClearFailures()
	again := startWorker(t, env) // same group: resumes from the committed offset
	eventually(t, 60*time.Second, "the stuck and later events applied", func() bool {
		return firstName(t, api, "stuck") == "B" && firstName(t, api, "after") == "C"
	})
	if dl := readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"]); len(dl) != 0 {
		t.Errorf("%d dead-lettered, want none", len(dl))
	}
	order := applied(api) // "after" is delivered again past the watermark, and answered from its idempotency record
	if strings.Join(order["before"], ",") != "evt_before" || strings.Join(order["stuck"], ",") != "evt_stuck" || strings.Join(order["after"], ",") != "evt_after" {
		t.Errorf("applied %v, want each event once", order)
	}
	again.stop(t)
	if got := committed(t, topics["WORKER_GROUP_ID"], topics["KAFKA_TOPIC"]); got[0] != 3 {
		t.Errorf("committed offset after the restart %v, want 3", got)
	}
}

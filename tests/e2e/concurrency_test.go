package e2e

import (
	"bufio"
	"fmt"
	"net/http"
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

// The worker applies events of different contacts concurrently and each
// contact's events one after another in partition order. These tests check
// it on the real broker with the stand-in, which records every call's
// order and catches any two calls of one contact in progress at once.

// publishInterleaved publishes perContact events for each of contactsN
// contacts, round by round (c-000 … c-N, then again), in batches, and
// returns the event ids in publishing order.
func publishInterleaved(t testing.TB, topic string, contactsN, perContact int, prefix string) []string {
	t.Helper()
	msgs, ids := interleaved(t, topic, contactsN, perContact, prefix)
	sendAll(t, newProducer(t), msgs)
	return ids
}

// interleaved builds the records publishInterleaved sends.
func interleaved(t testing.TB, topic string, contactsN, perContact int, prefix string) ([]*sarama.ProducerMessage, []string) {
	t.Helper()
	var ids []string
	var msgs []*sarama.ProducerMessage
	for round := 0; round < perContact; round++ {
		for c := 0; c < contactsN; c++ {
			contact := fmt.Sprintf("%s-%03d", prefix, c)
			id := fmt.Sprintf("evt_%s_%04d", contact, round)
			body := fmt.Sprintf(`{"event_type":"contact.updated","event_id":%q,"timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":%q,"acme_first_name":"v%04d"}}`, id, contact, round)
			ev, err := acmecrm.Parse([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, record.NewEventMessage(topic, ev, []byte(body), "msg_"+id, time.Now()))
			ids = append(ids, id)
		}
	}
	return msgs, ids
}

func sendAll(t testing.TB, p sarama.SyncProducer, msgs []*sarama.ProducerMessage) {
	t.Helper()
	for len(msgs) > 0 {
		n := min(len(msgs), 500)
		if err := p.SendMessages(msgs[:n]); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[n:]
	}
}

// checkOrder fails the test unless every contact had exactly its perContact
// events applied once, in the order published, and no two calls of one
// contact overlapped.
func checkOrder(t testing.TB, api *standin.Server, prefix string, contactsN, perContact int) {
	t.Helper()
	got := applied(api)
	for c := 0; c < contactsN; c++ {
		contact := fmt.Sprintf("%s-%03d", prefix, c)
		ids := got[contact]
		if len(ids) != perContact {
			t.Errorf("%s: %d events applied, want %d", contact, len(ids), perContact)
			continue
		}
		for i, id := range ids {
			if want := fmt.Sprintf("evt_%s_%04d", contact, i); id != want {
				t.Errorf("%s: applied %s as event %d, want %s (partition order)", contact, id, i, want)
				break
			}
		}
	}
	if o := api.Overlaps(); len(o) != 0 {
		t.Errorf("%d calls started while another call of the same contact was in progress (first: %s)", len(o), o[0])
	}
}

func appliedCount(api *standin.Server) int {
	n := 0
	for _, ids := range applied(api) {
		n += len(ids)
	}
	return n
}

// scrape returns the lines of the binary's /metrics.
func scrape(t testing.TB, b *binary) []string {
	t.Helper()
	addr := b.addr
	if b.metricsAddr != "" {
		addr = b.metricsAddr
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// sample is the value of a /metrics line.
func sample(t testing.TB, line string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// metric reads one sample of the worker's /metrics: name with its labels,
// as written, e.g. `worker_contacts_api_outage`.
func metric(t testing.TB, b *binary, name string) float64 {
	t.Helper()
	for _, line := range scrape(t, b) {
		if strings.HasPrefix(line, name+" ") {
			return sample(t, line)
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// outcomes sums worker_events_total of one outcome, over the event types.
func outcomes(t testing.TB, b *binary, outcome string) float64 {
	t.Helper()
	var sum float64
	for _, line := range scrape(t, b) {
		if strings.HasPrefix(line, "worker_events_total{") && strings.Contains(line, `outcome="`+outcome+`"`) {
			sum += sample(t, line)
		}
	}
	return sum
}

// committedMetadata returns the metadata committed with partition 0's offset.
func committedMetadata(t testing.TB, group, topic string) string {
	t.Helper()
	resp, err := newAdmin(t).ListConsumerGroupOffsets(group, map[string][]int32{topic: {0}})
	if err != nil {
		t.Fatal(err)
	}
	if b := resp.GetBlock(topic, 0); b != nil {
		return b.Metadata
	}
	return ""
}

// One partition, many contacts: several contacts' events are in flight at
// once, each contact's strictly in order, and the committed offset reaches
// the end.
func TestWorkerAppliesContactsConcurrentlyInOrder(t *testing.T) {
	api, url := contactsAPI(t)
	api.SetLatency(2 * time.Millisecond)
	topics := topicEnv(t)
	createTopic(t, topics["KAFKA_TOPIC"], 1)
	const contactsN, perContact = 50, 20
	publishInterleaved(t, topics["KAFKA_TOPIC"], contactsN, perContact, "k")
	wk := startWorker(t, workerEnv(topics, url, map[string]string{"WORKER_MAX_IN_FLIGHT": "32"}))
	eventually(t, 60*time.Second, "every event applied", func() bool { return appliedCount(api) >= contactsN*perContact })
	checkOrder(t, api, "k", contactsN, perContact)
	if got := api.MaxConcurrent(); got < 2 || got > 32 {
		t.Errorf("at most %d calls at once from one partition, want several and no more than WORKER_MAX_IN_FLIGHT=32", got)
	}
	wk.stop(t)
	if got := committed(t, topics["WORKER_GROUP_ID"], topics["KAFKA_TOPIC"]); got[0] != contactsN*perContact {
		t.Errorf("committed %v, want %d", got, contactsN*perContact)
	}
}

// A contact whose calls keep failing holds back only itself: the other
// contacts of its partition are applied meanwhile, and the committed offset
// stays at the failing event (the watermark) until it is applied.
func TestWorkerFailingContactHoldsBackOnlyItself(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	createTopic(t, topics["KAFKA_TOPIC"], 1)
	_ = api.Fail(standin.Failure{ContactID: "stuck", Status: 503})
	p := newProducer(t)
	topic := topics["KAFKA_TOPIC"]
	publishEvent(t, p, topic, "contact.created", "evt_first", "first", "A")    // offset 0
	publishEvent(t, p, topic, "contact.created", "evt_stuck_1", "stuck", "S1") // offset 1
	publishInterleaved(t, topic, 20, 10, "o")                                  // offsets 2-201
	publishEvent(t, p, topic, "contact.updated", "evt_stuck_2", "stuck", "S2") // offset 202
	wk := startWorker(t, workerEnv(topics, url, map[string]string{"WORKER_RETRY_MAX_ELAPSED_TIME": "10m"}))

	eventually(t, 30*time.Second, "every other contact applied", func() bool { return appliedCount(api) >= 201 })
	checkOrder(t, api, "o", 20, 10)
	if firstName(t, api, "stuck") != "" {
		t.Fatal("the failing contact was applied")
	}
	// The watermark: offset 0 done, 1 not; the 200 done after it are not
	// committable yet. Autocommit runs every second.
	eventually(t, 10*time.Second, "offset 1 committed", func() bool { return committed(t, topics["WORKER_GROUP_ID"], topic)[0] == 1 })
	time.Sleep(1500 * time.Millisecond) // more than one autocommit interval
	if got := committed(t, topics["WORKER_GROUP_ID"], topic)[0]; got != 1 {
		t.Errorf("committed %d while offset 1 is still retried, want 1", got)
	}
	if got := metric(t, wk, `worker_watermark_lag{partition="0",topic="`+topic+`"}`); got != 202 {
		t.Errorf("watermark lag %v, want 202 (offsets 1 to 202 read, not committable)", got)
	}
	if got := metric(t, wk, `worker_partition_buffered_records{partition="0",topic="`+topic+`"}`); got != 2 {
		t.Errorf("buffered records %v, want 2 (the failing contact's two events)", got)
	}

	// A member taking the partition over (here: a restart) skips the 200
	// records finished above the committed offset (the commit's metadata
	// lists them) instead of applying them again.
	eventually(t, 10*time.Second, "the finished records committed in the metadata", func() bool {
		return committedMetadata(t, topics["WORKER_GROUP_ID"], topic) != ""
	})
	wk.stop(t)
	before := api.CallCount()
	api.ClearFailures()
	next := startWorker(t, workerEnv(topics, url, nil))
	eventually(t, 30*time.Second, "the failing contact applied", func() bool { return firstName(t, api, "stuck") == "S2" })
	for _, c := range api.Calls()[before:] {
		if c.ContactID != "stuck" {
			t.Errorf("%s (%s) called again after the restart, though finished and in the commit's metadata", c.IdempotencyKey, c.ContactID)
		}
	}
	if got := metric(t, next, "worker_events_skipped_total"); got != 200 {
		t.Errorf("skipped %v records on taking the partition over, want 200 (offsets 2-201)", got)
	}
	if got := strings.Join(applied(api)["stuck"], ","); got != "evt_stuck_1,evt_stuck_2" {
		t.Errorf("stuck contact applied %s, want evt_stuck_1,evt_stuck_2", got)
	}
	eventually(t, 10*time.Second, "everything committed", func() bool { return committed(t, topics["WORKER_GROUP_ID"], topic)[0] == 203 })
	if dl := readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"]); len(dl) != 0 {
		t.Errorf("%d dead-lettered, want none", len(dl))
	}
}

// The Contacts API down for everyone for longer than the retry budget is an
// outage, not hundreds of poison events: nothing is dead-lettered, and
// everything is applied in order once it is back.
func TestWorkerOutageDeadLettersNothing(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{Status: 503})
	wk := startWorker(t, workerEnv(topics, url, map[string]string{
		"WORKER_RETRY_MAX_ELAPSED_TIME": "1s", "WORKER_OUTAGE_MIN_CALLS": "10", "WORKER_OUTAGE_MIN_CONTACTS": "3",
		"WORKER_OUTAGE_PROBE_INTERVAL": "200ms",
	}))
	const contactsN, perContact = 15, 4
	publishInterleaved(t, topics["KAFKA_TOPIC"], contactsN, perContact, "u")
	eventually(t, 30*time.Second, "the outage detected", func() bool { return metric(t, wk, "worker_contacts_api_outage") == 1 })
	time.Sleep(4 * time.Second) // four retry budgets
	if dl := readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"]); len(dl) != 0 {
		t.Fatalf("%d dead-lettered during an outage, want none", len(dl))
	}
	calls := api.CallCount()
	time.Sleep(time.Second)
	if n := api.CallCount() - calls; n > 10 {
		t.Errorf("%d calls in one second of outage, want about one per probe interval (200ms)", n)
	}

	api.ClearFailures()
	eventually(t, 30*time.Second, "every event applied after the recovery", func() bool { return appliedCount(api) >= contactsN*perContact })
	checkOrder(t, api, "u", contactsN, perContact)
	if dl := readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"]); len(dl) != 0 {
		t.Errorf("%d dead-lettered, want none", len(dl))
	}
	if metric(t, wk, "worker_contacts_api_outage") != 0 || metric(t, wk, "worker_contacts_api_outages_total") != 1 {
		t.Error("outage metrics: want the gauge back at 0 and one outage counted")
	}
	for _, line := range []string{"contacts api fault: taking no new records", "contacts api fault over: resuming"} {
		if !strings.Contains(wk.logs.String(), line) {
			t.Errorf("no log line %q", line)
		}
	}
}

// One contact failing past the retry budget while the others succeed is no
// outage: it alone is dead-lettered.
func TestWorkerOneContactFailingIsDeadLetteredAlone(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{ContactID: "b-000", Status: 503})
	wk := startWorker(t, workerEnv(topics, url, map[string]string{
		"WORKER_RETRY_MAX_ELAPSED_TIME": "1s", "WORKER_OUTAGE_MIN_CALLS": "10", "WORKER_OUTAGE_MIN_CONTACTS": "3",
	}))
	publishInterleaved(t, topics["KAFKA_TOPIC"], 1, 1, "b")
	publishInterleaved(t, topics["KAFKA_TOPIC"], 20, 10, "g")
	var dl []*sarama.ConsumerMessage
	eventually(t, 30*time.Second, "the failing contact dead-lettered", func() bool {
		dl = readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"])
		return len(dl) > 0
	})
	eventually(t, 30*time.Second, "every other event applied", func() bool { return appliedCount(api) >= 200 })
	checkOrder(t, api, "g", 20, 10)
	dl = readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"])
	if len(dl) != 1 || string(dl[0].Key) != "b-000" || headerMap(dl[0])["dlq_error_kind"] != "transient" {
		t.Errorf("dead letters %d (first key %s), want only b-000's event, kind transient", len(dl), dl[0].Key)
	}
	if metric(t, wk, "worker_contacts_api_outages_total") != 0 {
		t.Error("an outage was detected for one failing contact")
	}
}

// A rebalance while events are in flight: a member joins, then
// the first one leaves. No contact ever has two calls in progress at once
// (the members hand partitions over only after their calls returned), and
// every event is applied once, in order.
func TestWorkerRebalanceWhileInFlight(t *testing.T) {
	api, url := contactsAPI(t)
	// Calls long enough that one still running at a hand-over would meet
	// the new owner's first calls.
	api.SetLatency(200 * time.Millisecond)
	topics := topicEnv(t)
	createTopic(t, topics["KAFKA_TOPIC"], 4)
	const contactsN, perContact = 200, 10 // at 64 in flight, about 6 s of work for one member
	publishInterleaved(t, topics["KAFKA_TOPIC"], contactsN, perContact, "r")
	env := workerEnv(topics, url, map[string]string{"WORKER_MAX_IN_FLIGHT": "64"})
	a := startWorker(t, env)
	eventually(t, 30*time.Second, "a applying", func() bool { return appliedCount(api) >= 200 })
	b := startWorker(t, env)
	eventually(t, 30*time.Second, "b holding partitions", func() bool { return holdsPartitions(b) })
	eventually(t, 30*time.Second, "b applying", func() bool { return outcomes(t, b, "applied") > 0 })
	a.stop(t)
	eventually(t, 90*time.Second, "every event applied", func() bool { return appliedCount(api) >= contactsN*perContact })
	checkOrder(t, api, "r", contactsN, perContact)
	// a has exited: its log is what is left of it to read.
	if !strings.Contains(a.logs.String(), "abandoned: stopping or partition revoked") {
		t.Error("no event was in flight at the rebalance: the test did not test it")
	}
}

// A worker SIGKILLed with many events in flight, then restarted: every
// offset it had committed was applied (nothing skipped), and after the
// restart every event is applied, in order.
func TestWorkerKilledMidFlightSkipsNothing(t *testing.T) {
	api, url := contactsAPI(t)
	api.SetLatency(10 * time.Millisecond)
	topics := topicEnv(t)
	topic := topics["KAFKA_TOPIC"]
	createTopic(t, topic, 1)
	const contactsN, perContact = 100, 20
	ids := publishInterleaved(t, topic, contactsN, perContact, "x") // one partition: ids[i] is at offset i
	env := workerEnv(topics, url, nil)

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
	eventually(t, 60*time.Second, "a third applied and committed", func() bool {
		return appliedCount(api) >= len(ids)/3 && committed(t, topics["WORKER_GROUP_ID"], topic)[0] > 0
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	at := committed(t, topics["WORKER_GROUP_ID"], topic)[0]
	done := map[string]bool{}
	for _, evs := range applied(api) {
		for _, id := range evs {
			done[id] = true
		}
	}
	for i := int64(0); i < at; i++ {
		if !done[ids[i]] {
			t.Fatalf("committed offset %d passes offset %d (%s), which was not applied", at, i, ids[i])
		}
	}
	t.Logf("killed with %d of %d applied, committed offset %d", len(done), len(ids), at)

	startWorker(t, env)
	eventually(t, 90*time.Second, "every event applied after the restart", func() bool { return appliedCount(api) >= len(ids) })
	checkOrder(t, api, "x", contactsN, perContact)
}

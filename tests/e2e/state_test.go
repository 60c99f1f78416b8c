package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/record"
)

// Upgrading from the workers that kept parked contacts in one shared
// parked topic: this deployment's parked contact stays parked (adopted into
// its state topic, its former record tombstoned); another deployment's
// parked contact of the same id on that topic parks nothing here.
func TestStateAdoptsTheFormerParkedTopic(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	legacy, dlq := topics["KAFKA_PARKED_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	admin := newAdmin(t)
	compact := "compact"
	if err := admin.CreateTopic(legacy, &sarama.TopicDetail{NumPartitions: 4, ReplicationFactor: 1, ConfigEntries: map[string]*string{"cleanup.policy": &compact}}, false); err != nil {
		t.Fatal(err)
	}
	createTopic(t, dlq, 3)
	p := newProducer(t)
	// The former release's records: contact "ours" parked behind evt_o_1,
	// which this group dead-lettered from this topic; contact "theirs"
	// parked behind evt_t_1, which another deployment dead-lettered.
	for _, c := range []struct{ contact, head, group, topic string }{
		{"ours", "evt_o_1", topics["WORKER_GROUP_ID"], topics["KAFKA_TOPIC"]},
		{"theirs", "evt_t_1", "staging-worker", "staging-contact-events"},
	} {
		body := fmt.Sprintf(`{"event_type":"contact.updated","event_id":%q,"timestamp":"2025-05-17T17:01:00Z","data":{"contact_id":%q}}`, c.head, c.contact)
		ev, _ := acmecrm.Parse([]byte(body))
		m := record.NewEventMessage(c.topic, ev, []byte(body), "msg", time.Now())
		orig := &sarama.ConsumerMessage{Topic: c.topic, Key: []byte(c.contact), Value: []byte(body)}
		for _, h := range m.Headers {
			orig.Headers = append(orig.Headers, &sarama.RecordHeader{Key: h.Key, Value: h.Value})
		}
		if _, _, err := p.SendMessage(record.DeadLetterMessage(dlq, orig, record.Failure{Err: fmt.Errorf("422"), Kind: record.KindPermanent, FailedAt: time.Now(), Group: c.group})); err != nil {
			t.Fatal(err)
		}
		legacyValue := fmt.Sprintf(`{"contact_id":%q,"events":[%q],"head_kind":"permanent","since":"2026-11-01T10:00:00Z"}`, c.contact, c.head)
		part := contactstate.Partition([]byte(c.contact), 4)
		if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: legacy, Partition: part, Key: sarama.StringEncoder(c.contact), Value: sarama.StringEncoder(legacyValue)}); err != nil {
			t.Fatal(err)
		}
	}

	wk := startWorker(t, workerEnv(topics, url, nil))
	topic := topics["KAFKA_TOPIC"]
	publishAt(t, p, topic, "contact.updated", "evt_o_2", "ours", "o2", "2025-05-17T17:02:00Z")
	publishAt(t, p, topic, "contact.updated", "evt_t_2", "theirs", "t2", "2025-05-17T17:02:00Z")
	eventually(t, 30*time.Second, "theirs applied", func() bool { return firstName(t, api, "theirs") == "t2" })
	eventually(t, 30*time.Second, "ours parked behind its former head", func() bool { return len(dlqOf(t, dlq, "ours")) == 2 })
	if got := dlqOf(t, dlq, "ours")[1]; got != "evt_o_2/parked/evt_o_1" {
		t.Errorf("ours' new event went to the DLQ as %s, want parked behind evt_o_1", got)
	}
	if firstName(t, api, "ours") != "" {
		t.Error("ours was applied while parked")
	}
	if got := metric(t, wk, "worker_parked_contacts"); got != 1 {
		t.Errorf("worker_parked_contacts %v, want 1", got)
	}
	// Its former record is a tombstone now; theirs is left alone.
	latest := map[string]bool{}
	for _, m := range readAll(t, brokers, legacy) {
		latest[string(m.Key)] = m.Value != nil
	}
	if latest["ours"] || !latest["theirs"] {
		t.Errorf("former topic: ours has a value %v (want tombstoned), theirs %v (want kept)", latest["ours"], latest["theirs"])
	}

	// The release works from the new state: the former head, then E2.
	api.ClearFailures()
	if _, sum := runReplay(t, parkingEnv(topics, t), "--replay-contact-id", "ours"); sum.Released != 1 || sum.Replayed != 2 {
		t.Fatalf("release: %+v", sum)
	}
	eventually(t, 30*time.Second, "ours released and its newest applied", func() bool { return firstName(t, api, "ours") == "o2" })
	if got := strings.Join(applied(api)["ours"], ","); got != "evt_o_1,evt_o_2" {
		t.Errorf("ours: calls %s, want evt_o_1,evt_o_2", got)
	}
}

// A record written to a partition its key does not belong to (a producer
// that hashes otherwise, or written before partitions were added) is
// forwarded to its own, and applied there once, in its contact's order.
func TestWorkerForwardsMisplacedRecords(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	topic := topics["KAFKA_TOPIC"]
	createTopic(t, topic, 4)
	wk := startWorker(t, workerEnv(topics, url, nil))
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_9_0_0
	sc.Producer.Return.Successes = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer([]string{brokers}, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	own := contactstate.Partition([]byte("mis"), 4)
	for i, at := range []string{"2025-05-17T17:01:00Z", "2025-05-17T17:02:00Z"} {
		body := fmt.Sprintf(`{"event_type":"contact.updated","event_id":"evt_mis_%d","timestamp":%q,"data":{"contact_id":"mis","acme_first_name":"v%d"}}`, i+1, at, i+1)
		ev, _ := acmecrm.Parse([]byte(body))
		m := record.NewEventMessage(topic, ev, []byte(body), "msg", time.Now())
		m.Partition = (own + 1) % 4 // never its own; one partition, so their order is kept
		if _, _, err := p.SendMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "both applied", func() bool { return len(applied(api)["mis"]) == 2 })
	if got := strings.Join(applied(api)["mis"], ","); got != "evt_mis_1,evt_mis_2" {
		t.Errorf("calls %s, want evt_mis_1,evt_mis_2", got)
	}
	if got := outcomes(t, wk, "forwarded"); got != 2 {
		t.Errorf("%v forwarded, want 2", got)
	}
	var inOwn int
	for _, m := range readAll(t, brokers, topic) {
		if m.Partition == own && string(m.Key) == "mis" {
			inOwn++
		}
	}
	if inOwn != 2 {
		t.Errorf("%d records of mis in its own partition %d, want the 2 forwarded", inOwn, own)
	}
}

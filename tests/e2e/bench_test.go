package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/record"
)

// The benchmarks run only with -bench (make bench), against the real broker.

// BenchmarkEventEndToEnd: one signed webhook at a time, from the request to
// the contact being stored by the Contacts API stand-in (gateway, Kafka
// acks=all, consumer group fetch, worker, HTTP PUT).
func BenchmarkEventEndToEnd(b *testing.B) {
	api, url := contactsAPI(b)
	topics := topicEnv(b)
	gw := startGateway(b, gatewayEnv(topics, map[string]string{"LOG_LEVEL": "warn"}))
	startWorker(b, workerEnv(topics, url, map[string]string{"LOG_LEVEL": "warn"}))
	s := newSender(b, gw)
	send := func(i int) {
		c := fmt.Sprintf("bench-%d-%d", b.N, i)
		body := fmt.Sprintf(`{"event_type":"contact.created","event_id":"evt_%s","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":%q,"acme_first_name":"J"}}`, c, c)
		if r := s.mustSend(body, nil); r.status != 202 {
			b.Fatalf("%d %v", r.status, r.body)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok := api.Contact(c); ok {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("event %d not applied within 10s", i)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	send(-1) // warm: the group joined, connections open
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		send(i)
	}
}

// BenchmarkWorkerThroughput: one worker, an instantly answering Contacts API
// stand-in, a backlog of events already in the topic; reports events/s from
// the first to the last call the stand-in answered.
func BenchmarkWorkerThroughput(b *testing.B) {
	const n, contactsN, partitions = 20000, 1000, 6
	for i := 0; i < b.N; i++ {
		b.StopTimer() // the backlog is set-up, not work
		api, url := contactsAPI(b)
		topics := topicEnv(b)
		createTopic(b, topics["KAFKA_TOPIC"], partitions)
		publishBacklog(b, topics["KAFKA_TOPIC"], n, contactsN)
		b.StartTimer()
		startWorker(b, workerEnv(topics, url, map[string]string{"LOG_LEVEL": "warn", "KAFKA_TOPIC_PARTITIONS": fmt.Sprint(partitions)}))
		deadline := time.Now().Add(5 * time.Minute)
		for api.CallCount() < n {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d applied in 5 minutes", api.CallCount(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.StopTimer()
		calls := api.Calls()
		span := calls[len(calls)-1].At.Sub(calls[0].At)
		b.ReportMetric(float64(n-1)/span.Seconds(), "events/s")
	}
}

func publishBacklog(b *testing.B, topic string, n, contactsN int) {
	p := newProducer(b)
	batch := make([]*sarama.ProducerMessage, 0, 1000)
	for i := 0; i < n; i++ {
		c := fmt.Sprintf("c-%d", i%contactsN)
		body := fmt.Sprintf(`{"event_type":"contact.updated","event_id":"evt_%d","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":%q,"acme_first_name":"v%d"}}`, i, c, i)
		ev, err := acmecrm.Parse([]byte(body))
		if err != nil {
			b.Fatal(err)
		}
		batch = append(batch, record.NewEventMessage(topic, ev, []byte(body), "msg", time.Now()))
		if len(batch) == cap(batch) || i == n-1 {
			if err := p.SendMessages(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

package e2e

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/kafka"
)

// BenchmarkStateRebuild: the time a member takes, on assignment, to rebuild
// the states of an events partition of 1,000,000 contacts from the state
// topic on the real broker (one record each: a 12-byte contact id, a
// 36-byte event id, as compaction leaves them), read with the worker's own
// client configuration; and the heap the rebuilt states hold.
func BenchmarkStateRebuild(b *testing.B) {
	const n = 1_000_000
	topic := uniqueName(b, "state")
	createTopic(b, topic, 1)
	owner := contactstate.Owner{Topic: "contact-events", Group: "contact-worker"}
	fillStateTopic(b, topic, owner, n)
	csc, err := kafka.NewConsumerConfig(config.Kafka{ClientID: "bench", Version: "3.9.0", DialTimeout: 5 * time.Second, RetryMax: 8, RetryBackoff: 100 * time.Millisecond, SecurityProtocol: config.ProtocolPlaintext})
	if err != nil {
		b.Fatal(err)
	}
	client, err := sarama.NewClient([]string{brokers}, csc)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	for range b.N {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		start := time.Now()
		part := contactstate.NewPartitionState()
		st, err := contactstate.Read(context.Background(), client, topic, []int32{0}, owner, func(c string, s contactstate.State, _ time.Time) { part.Put(c, s) })
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		if part.Len() != n || st.Records != n {
			b.Fatalf("rebuilt %d contacts from %d records, want %d", part.Len(), st.Records, n)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(took.Seconds(), "s-rebuild")
		b.ReportMetric(float64(n)/took.Seconds(), "contacts/s")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/contact")
		runtime.KeepAlive(part)
	}
}

// fillStateTopic writes n contacts' state records to partition 0 of topic.
func fillStateTopic(b *testing.B, topic string, owner contactstate.Owner, n int) {
	b.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_9_0_0
	sc.Producer.Return.Successes = false
	sc.Producer.Return.Errors = true
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	sc.Producer.Flush.Frequency = 5 * time.Millisecond
	sc.Producer.Flush.MaxMessages = 10000
	p, err := sarama.NewAsyncProducer([]string{brokers}, sc)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for err := range p.Errors() {
			b.Error(err)
		}
	}()
	for i := range n {
		p.Input() <- contactstate.Message(topic, 0, owner, fmt.Sprintf("c-%010d", i), contactstate.State{Newest: contactstate.Mark{
			EventID: fmt.Sprintf("evt_%08x-0000-4000-8000-%012x", i, i)[:36], At: time.Date(2026, 11, 29, 0, 0, i%86400, 0, time.UTC)}})
	}
	if err := p.Close(); err != nil {
		b.Fatal(err)
	}
}

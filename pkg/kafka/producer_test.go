package kafka

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acmecrm/integration-service/pkg/config"
)

func kfakeProducer(t *testing.T, cluster *kfake.Cluster) *Producer {
	t.Helper()
	sc, err := NewProducerConfig(config.Kafka{
		Brokers: cluster.ListenAddrs(), ClientID: "acme-integration", Version: "3.9.0",
		RetryBackoff: 10 * time.Millisecond, RetryMax: 8, DialTimeout: time.Second, MaxMessageBytes: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	ap, err := sarama.NewAsyncProducer(cluster.ListenAddrs(), sc)
	if err != nil {
		t.Fatal(err)
	}
	return NewProducer(ap)
}

// Each of many concurrent callers learns of its own record's acknowledgement,
// and every acknowledged record is in the topic once.
func TestProducerCorrelatesConcurrentCallers(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	p := kfakeProducer(t, cluster)

	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errs <- p.Enqueue(ctx, &sarama.ProducerMessage{Topic: "events", Key: sarama.StringEncoder(fmt.Sprint(i % 7)), Value: sarama.StringEncoder(fmt.Sprint(i))})
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("enqueue: %v", err)
		}
	}
	p.Close()
	if err := p.Enqueue(context.Background(), &sarama.ProducerMessage{Topic: "events"}); err != ErrProducerClosed {
		t.Errorf("after Close: got %v, want ErrProducerClosed", err)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(seen) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++ })
	}
	if len(seen) != n {
		t.Fatalf("topic holds %d distinct records, want %d", len(seen), n)
	}
	for v, c := range seen {
		if c != 1 {
			t.Errorf("record %s written %d times", v, c)
		}
	}
}

// A refused record is reported to its caller, not dropped silently.
func TestProducerReportsFailure(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	p := kfakeProducer(t, cluster)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	big := make([]byte, 2<<20) // over the producer's MaxMessageBytes
	if err := p.Enqueue(ctx, &sarama.ProducerMessage{Topic: "events", Value: sarama.ByteEncoder(big)}); err == nil {
		t.Fatal("got nil for an oversized record, want an error")
	}
}

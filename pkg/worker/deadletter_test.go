package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/record"
)

// flakyKafka refuses the first fail sends, then acknowledges.
type flakyKafka struct {
	mu    sync.Mutex
	fail  int
	tries int
	sent  []*sarama.ProducerMessage
}

func (f *flakyKafka) Enqueue(ctx context.Context, msg *sarama.ProducerMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tries++
	if f.tries <= f.fail {
		return errors.New("kafka: not enough in-sync replicas")
	}
	f.sent = append(f.sent, msg)
	return nil
}

// A dead letter Kafka refuses is sent again until acknowledged, each
// failure counted; nothing is skipped.
func TestDeadLetterPublishIsRetriedUntilAcknowledged(t *testing.T) {
	kafka := &flakyKafka{fail: 2}
	failures := prometheus.NewCounter(prometheus.CounterOpts{Name: "f"})
	p := &publisher{Producer: kafka, Topic: "contact-events-dlq", Failures: failures, Log: zerolog.Nop()}
	m := &sarama.ConsumerMessage{Topic: "contact-events", Key: []byte("c-1"), Value: []byte(`{}`), Headers: []*sarama.RecordHeader{{Key: []byte("ce_id"), Value: []byte("evt_1")}}}
	start := time.Now()
	if _, err := p.DeadLetter(context.Background(), m, record.Failure{Err: errors.New("422"), Kind: record.KindPermanent}); err != nil {
		t.Fatal(err)
	}
	if kafka.tries != 3 || len(kafka.sent) != 1 || testutil.ToFloat64(failures) != 2 {
		t.Errorf("%d tries, %d sent, %v failures counted; want 3, 1, 2", kafka.tries, len(kafka.sent), testutil.ToFloat64(failures))
	}
	if time.Since(start) < 200*time.Millisecond {
		t.Errorf("retried after %v: want a backoff between tries", time.Since(start))
	}
	if k, _ := kafka.sent[0].Key.Encode(); kafka.sent[0].Topic != "contact-events-dlq" || string(k) != "c-1" {
		t.Errorf("sent %s/%s", kafka.sent[0].Topic, k)
	}
}

// A stop ends the retries with ctx's error (the event is abandoned, not
// committed, and redelivered to the next owner).
func TestDeadLetterPublishStopsWithCtx(t *testing.T) {
	kafka := &flakyKafka{fail: 1 << 30}
	p := &publisher{Producer: kafka, Topic: "contact-events-dlq", Failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "f"}), Log: zerolog.Nop()}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := p.DeadLetter(ctx, &sarama.ConsumerMessage{Key: []byte("c-1")}, record.Failure{Err: errors.New("x"), Kind: record.KindPermanent})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's error", err)
	}
}

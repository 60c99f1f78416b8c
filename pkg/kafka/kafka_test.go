package kafka

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/acmecrm/integration-service/pkg/config"
)

func testKafka(brokers ...string) config.Kafka {
	return config.Kafka{
		Brokers: brokers, ClientID: "acme-integration", Version: "3.9.0",
		Topic: "contact-events", DLQTopic: "contact-events-dlq",
		TopicPartitions: 6, DLQPartitions: 3, ReplicationFactor: 1,
		TopicRetention: 7 * 24 * time.Hour, DLQRetention: 30 * 24 * time.Hour,
		RetryBackoff: 100 * time.Millisecond, RetryMax: 8, MaxMessageBytes: 1 << 20, DialTimeout: time.Second, HealthInterval: time.Second,
	}
}

func TestNewProducerConfig(t *testing.T) {
	sc, err := NewProducerConfig(testKafka("x:1"))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Producer.RequiredAcks != sarama.WaitForAll || !sc.Producer.Idempotent || sc.Net.MaxOpenRequests != 1 {
		t.Errorf("not durable: acks %v, idempotent %v, max open %d", sc.Producer.RequiredAcks, sc.Producer.Idempotent, sc.Net.MaxOpenRequests)
	}
	if sc.ClientID != "acme-integration" || sc.Producer.Retry.Max != 8 || sc.Producer.Retry.Backoff != 100*time.Millisecond {
		t.Errorf("got client %q, retries %d × %v, want acme-integration, 8 × 100ms", sc.ClientID, sc.Producer.Retry.Max, sc.Producer.Retry.Backoff)
	}
	if sc.Metadata.AllowAutoTopicCreation {
		t.Error("metadata requests may auto-create topics")
	}
}

func TestNewConfigVersion(t *testing.T) {
	tests := []struct {
		version string
		wantErr bool
	}{
		{"3.0.0", false},
		{"3.9.0", false},
		{"4.1.0", false},
		{"2.8.0", true},
		{"0.11.0", true},
		{"four", true},
	}
	for _, tt := range tests {
		k := testKafka("x:1")
		k.Version = tt.version
		_, err := newConfig(k)
		if (err != nil) != tt.wantErr {
			t.Errorf("version %s: got error %v, want error %v", tt.version, err, tt.wantErr)
		}
	}
}

func TestEnsureTopicsWithKfake(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "contact-events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	c := testKafka(cluster.ListenAddrs()...)
	sc, err := newConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := sarama.NewClusterAdmin(c.Brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	created, err := ensureTopics(admin, serviceTopics(c))
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 1 || created[0] != "contact-events-dlq" {
		t.Fatalf("created %v, want only the missing contact-events-dlq", created)
	}
	topics, err := admin.ListTopics()
	if err != nil {
		t.Fatal(err)
	}
	if got := topics["contact-events-dlq"].NumPartitions; got != 3 {
		t.Errorf("dlq partitions: got %d, want 3", got)
	}
	if got := topics["contact-events"].NumPartitions; got != 2 {
		t.Errorf("existing topic changed: got %d partitions, want 2", got)
	}
	// A second run (another replica starting) creates nothing and fails nothing.
	created, err = ensureTopics(admin, serviceTopics(c))
	if err != nil || len(created) != 0 {
		t.Errorf("second run: created %v, err %v; want nothing, nil", created, err)
	}
}

// raceAdmin reports a topic as missing, then finds it already created.
type raceAdmin struct{ created int }

func (r *raceAdmin) ListTopics() (map[string]sarama.TopicDetail, error) { return nil, nil }
func (r *raceAdmin) CreateTopic(string, *sarama.TopicDetail, bool) error {
	r.created++
	return sarama.ErrTopicAlreadyExists
}

func TestEnsureTopicsRace(t *testing.T) {
	r := &raceAdmin{}
	created, err := ensureTopics(r, serviceTopics(testKafka("x:1")))
	if err != nil || len(created) != 0 || r.created != 2 {
		t.Errorf("got created %v, err %v, %d attempts; want none, nil, 2", created, err, r.created)
	}
}

type failAdmin struct{ raceAdmin }

func (failAdmin) CreateTopic(string, *sarama.TopicDetail, bool) error {
	return sarama.ErrPolicyViolation
}

func TestEnsureTopicsFailure(t *testing.T) {
	_, err := ensureTopics(&failAdmin{}, serviceTopics(testKafka("x:1")))
	if !errors.Is(err, sarama.ErrPolicyViolation) {
		t.Errorf("got %v, want ErrPolicyViolation", err)
	}
}

func TestProbe(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "contact-events", "contact-events-dlq"))
	if err != nil {
		t.Fatal(err)
	}
	c := testKafka(cluster.ListenAddrs()...)
	sc, _ := newConfig(c)
	p := NewProbe(c, sc)
	if !errors.Is(p.Ready(), errNotChecked) {
		t.Errorf("before a check: got %v, want ErrNotChecked", p.Ready())
	}
	if err := p.check(); err != nil {
		t.Errorf("live cluster: got %v, want ready", err)
	}
	cluster.Close()
	if err := p.check(); err == nil {
		t.Error("closed cluster: got ready, want an error")
	}
}

func TestMinInSyncReplicas(t *testing.T) {
	for _, tt := range []struct {
		rf   int16
		want int
	}{{1, 1}, {2, 2}, {3, 2}, {5, 2}} {
		if got := minInSyncReplicas(tt.rf); got != tt.want {
			t.Errorf("replication factor %d: got %d, want %d", tt.rf, got, tt.want)
		}
	}
}

// A broker that accepts connections and never answers must not keep a
// stopping binary waiting: Connect returns as soon as ctx ends.
func TestConnectStopsWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	c := testKafka(ln.Addr().String())
	sc, _ := newConfig(c)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Connect(ctx, c.Brokers, sc, zerolog.Nop())
	if err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("got %v after %v, want an error soon after the context ended", err, time.Since(start))
	}
}

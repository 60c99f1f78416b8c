package kafka

import (
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/config"
)

// minVersion is the oldest protocol version allowed: Kafka 4 brokers dropped
// the request versions older clients speak.
var minVersion = sarama.V3_0_0_0 // a var: sarama.KafkaVersion is a struct

// newConfig returns the sarama configuration shared by every client of the
// service: client id, protocol version, timeouts and metadata retries.
func newConfig(c config.Kafka) (*sarama.Config, error) {
	v, err := sarama.ParseKafkaVersion(c.Version)
	if err != nil {
		return nil, fmt.Errorf("kafka version %q: %w", c.Version, err)
	}
	if !v.IsAtLeast(minVersion) {
		return nil, fmt.Errorf("kafka version %s is older than %s, which Kafka 4 brokers require", v, minVersion)
	}
	sc := sarama.NewConfig()
	sc.ClientID = c.ClientID
	sc.Version = v
	sc.Net.DialTimeout = c.DialTimeout
	sc.Metadata.Retry.Max = c.RetryMax
	sc.Metadata.Retry.Backoff = c.RetryBackoff
	// Topics are created deliberately, with their retention, never as a side
	// effect of asking for metadata (Kafka's auto.create.topics.enable).
	sc.Metadata.AllowAutoTopicCreation = false
	if err := secure(sc, c); err != nil {
		return nil, err
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	return sc, nil
}

// NewProducerConfig returns the configuration of a durable producer: every
// record is acknowledged by all in-sync replicas (acks=all), the producer is
// idempotent so its own retries cannot duplicate a record, and records are
// partitioned by key so that one contact's events stay in order.
func NewProducerConfig(c config.Kafka) (*sarama.Config, error) {
	sc, err := newConfig(c)
	if err != nil {
		return nil, err
	}
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	// Idempotence in sarama requires a single in-flight request per broker.
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Retry.Max = c.RetryMax
	sc.Producer.Retry.Backoff = c.RetryBackoff
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	sc.Producer.MaxMessageBytes = c.MaxMessageBytes
	sc.Producer.Flush.Frequency = c.Linger
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka producer config: %w", err)
	}
	return sc, nil
}

// NewConsumerConfig returns the configuration of a consumer-group member:
// a new group starts at the oldest record (nothing published before the
// first worker started is missed); offsets are committed only as marked,
// every second and when a session ends; partitions are assigned with the
// sticky strategy, so a rebalance moves as few partitions as it can.
func NewConsumerConfig(c config.Kafka) (*sarama.Config, error) {
	sc, err := newConfig(c)
	if err != nil {
		return nil, err
	}
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Offsets.AutoCommit.Interval = time.Second
	sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
	// How soon a member notices partitions added to its topic (sarama ends
	// the session then, and the group rebalances onto them): records the
	// worker forwards to a new partition wait for that.
	sc.Metadata.RefreshFrequency = time.Minute
	sc.Consumer.Return.Errors = true
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka consumer config: %w", err)
	}
	return sc, nil
}

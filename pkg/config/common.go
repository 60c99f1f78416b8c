package config

import (
	"strings"
	"time"
)

// Log holds the logging settings both binaries share.
type Log struct {
	// Level is the minimum level written: trace, debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is json (one JSON object per line) or console (for people).
	Format string `mapstructure:"format"`
}

// Kafka holds the Kafka settings both binaries share.
type Kafka struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string `mapstructure:"brokers"`
	// ClientID identifies the service to the brokers.
	ClientID string `mapstructure:"client_id"`
	// Version is the Kafka protocol version sarama speaks (3.0.0 or newer).
	Version string `mapstructure:"version"`
	// Topic receives every contact event.
	Topic string `mapstructure:"topic"`
	// DLQTopic receives the events that could not be processed.
	DLQTopic string `mapstructure:"dlq_topic"`
	// ParkedTopic (contact-worker only) is the compacted topic of the parked
	// contacts, co-partitioned with Topic.
	ParkedTopic string `mapstructure:"parked_topic"`
	// ProvisionTopics creates missing topics at start.
	ProvisionTopics bool `mapstructure:"provision_topics"`
	// TopicPartitions is the partition count of Topic when created.
	TopicPartitions int `mapstructure:"topic_partitions"`
	// DLQPartitions is the partition count of DLQTopic when created.
	DLQPartitions int `mapstructure:"dlq_partitions"`
	// ReplicationFactor of both topics when created.
	ReplicationFactor int `mapstructure:"replication_factor"`
	// TopicRetention is Topic's retention.ms when created.
	TopicRetention time.Duration `mapstructure:"topic_retention"`
	// DLQRetention is DLQTopic's retention.ms when created.
	DLQRetention time.Duration `mapstructure:"dlq_retention"`
	// MaxMessageBytes is the largest record the producers send, and the
	// max.message.bytes of topics created at start.
	MaxMessageBytes int `mapstructure:"max_message_bytes"`
	// RetryBackoff is the first wait between producer and metadata retries.
	RetryBackoff time.Duration `mapstructure:"retry_backoff"`
	// RetryMax is how many times a produce or metadata request is retried.
	RetryMax int `mapstructure:"retry_max"`
	// DialTimeout bounds connecting to a broker.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
	// HealthInterval is how often readiness re-checks the brokers.
	HealthInterval time.Duration `mapstructure:"health_interval"`
}

// commonSettings are declared by both binaries.
var commonSettings = Settings{
	{Key: "log.level", Kind: String, Usage: "minimum log level: trace, debug, info, warn, error"},
	{Key: "log.format", Kind: String, Usage: "log format: json or console"},
	{Key: "kafka.brokers", Kind: StringList, Usage: "Kafka bootstrap brokers, comma-separated host:port"},
	{Key: "kafka.client_id", Kind: String, Usage: "Kafka client id"},
	{Key: "kafka.version", Kind: String, Usage: "Kafka protocol version (3.0.0 or newer)"},
	{Key: "kafka.topic", Kind: String, Usage: "topic of contact events"},
	{Key: "kafka.dlq_topic", Kind: String, Usage: "dead-letter topic"},
	{Key: "kafka.provision_topics", Kind: Bool, Usage: "create missing topics at start"},
	{Key: "kafka.topic_partitions", Kind: Int, Usage: "partitions of the events topic when created"},
	{Key: "kafka.dlq_partitions", Kind: Int, Usage: "partitions of the dead-letter topic when created"},
	{Key: "kafka.replication_factor", Kind: Int, Usage: "replication factor of both topics when created"},
	{Key: "kafka.topic_retention", Kind: Duration, Usage: "retention of the events topic when created"},
	{Key: "kafka.dlq_retention", Kind: Duration, Usage: "retention of the dead-letter topic when created"},
	{Key: "kafka.max_message_bytes", Kind: Int, Usage: "largest record produced; max.message.bytes of created topics"},
	{Key: "kafka.retry_backoff", Kind: Duration, Usage: "first wait between Kafka retries"},
	{Key: "kafka.retry_max", Kind: Int, Usage: "Kafka produce and metadata retries"},
	{Key: "kafka.dial_timeout", Kind: Duration, Usage: "timeout connecting to a broker"},
	{Key: "kafka.health_interval", Kind: Duration, Usage: "how often readiness re-checks the brokers"},
}

// validate checks the shared settings; ss names them in errors.
func (l Log) validate(ss Settings) error {
	switch l.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		return ss.Invalid("log.level", "%q is not one of trace, debug, info, warn, error", l.Level)
	}
	if l.Format != "json" && l.Format != "console" {
		return ss.Invalid("log.format", "%q is not json or console", l.Format)
	}
	return nil
}

func (k Kafka) validate(ss Settings) error {
	if len(k.Brokers) == 0 {
		return ss.Required("kafka.brokers", true)
	}
	for _, b := range k.Brokers {
		if !strings.Contains(b, ":") {
			return ss.Invalid("kafka.brokers", "%q is not host:port", b)
		}
	}
	for key, val := range map[string]string{"kafka.client_id": k.ClientID, "kafka.topic": k.Topic, "kafka.dlq_topic": k.DLQTopic, "kafka.version": k.Version} {
		if err := ss.Required(key, val == ""); err != nil {
			return err
		}
	}
	if k.Topic == k.DLQTopic {
		return ss.Invalid("kafka.dlq_topic", "must differ from %s", ss.Lookup("kafka.topic").Env())
	}
	for key, n := range map[string]int{"kafka.topic_partitions": k.TopicPartitions, "kafka.dlq_partitions": k.DLQPartitions, "kafka.replication_factor": k.ReplicationFactor, "kafka.max_message_bytes": k.MaxMessageBytes} {
		if n < 1 {
			return ss.Invalid(key, "%d is less than 1", n)
		}
	}
	if err := positive(ss, map[string]time.Duration{"kafka.topic_retention": k.TopicRetention, "kafka.dlq_retention": k.DLQRetention, "kafka.dial_timeout": k.DialTimeout, "kafka.health_interval": k.HealthInterval}); err != nil {
		return err
	}
	if k.RetryMax < 0 {
		return ss.Invalid("kafka.retry_max", "%d is negative", k.RetryMax)
	}
	return nil
}

// positive returns an error naming the first setting whose duration is not positive.
func positive(ss Settings, durations map[string]time.Duration) error {
	for key, d := range durations {
		if d <= 0 {
			return ss.Invalid(key, "must be positive, got %v", d)
		}
	}
	return nil
}

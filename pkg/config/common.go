package config

import (
	"maps"
	"os"
	"slices"
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
	// StateTopic (contact-worker only) is the topic of the contacts' states
	// (newest event applied, parking), compacted and deleted by age; empty,
	// it is named after its owner: "<group id>-<Topic>-state".
	StateTopic string `mapstructure:"state_topic"`
	// ParkedTopic (contact-worker only) is the former parked-contacts topic,
	// whose parked contacts are moved into StateTopic when it is new.
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
	// Linger is how long the producer lets a batch fill before sending it
	// (Kafka's linger.ms, sarama's Producer.Flush.Frequency); 0 sends as
	// soon as the request before it was answered.
	Linger time.Duration `mapstructure:"linger"`
	// RetryMax is how many times a produce or metadata request is retried.
	RetryMax int `mapstructure:"retry_max"`
	// DialTimeout bounds connecting to a broker.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
	// HealthInterval is how often readiness re-checks the brokers.
	HealthInterval time.Duration `mapstructure:"health_interval"`
	// SecurityProtocol is Kafka's security.protocol: PLAINTEXT, SSL,
	// SASL_PLAINTEXT or SASL_SSL.
	SecurityProtocol string `mapstructure:"security_protocol"`
	// SASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* only).
	SASLMechanism string `mapstructure:"sasl_mechanism"`
	// SASLUsername and SASLPassword authenticate with SASL; the password
	// may instead be read from SASLPasswordFile (a mounted Secret).
	SASLUsername     string `mapstructure:"sasl_username"`
	SASLPassword     string `mapstructure:"sasl_password"`
	SASLPasswordFile string `mapstructure:"sasl_password_file"`
	// TLSCAFile is the PEM of the CAs trusted for the brokers' certificates
	// (the system's when empty); TLSCertFile and TLSKeyFile, the client
	// certificate and key (mTLS); TLSServerName overrides the name checked.
	TLSCAFile     string `mapstructure:"tls_ca_file"`
	TLSCertFile   string `mapstructure:"tls_cert_file"`
	TLSKeyFile    string `mapstructure:"tls_key_file"`
	TLSServerName string `mapstructure:"tls_server_name"`
	// TLSInsecureSkipVerify trusts any broker certificate (tests only).
	TLSInsecureSkipVerify bool `mapstructure:"tls_insecure_skip_verify"`
}

// The security protocols of Kafka.SecurityProtocol.
const (
	ProtocolPlaintext     = "PLAINTEXT"
	ProtocolSSL           = "SSL"
	ProtocolSASLPlaintext = "SASL_PLAINTEXT"
	ProtocolSASLSSL       = "SASL_SSL"
)

// UsesTLS reports whether the protocol encrypts with TLS.
func (k Kafka) UsesTLS() bool {
	return k.SecurityProtocol == ProtocolSSL || k.SecurityProtocol == ProtocolSASLSSL
}

// UsesSASL reports whether the protocol authenticates with SASL.
func (k Kafka) UsesSASL() bool {
	return k.SecurityProtocol == ProtocolSASLPlaintext || k.SecurityProtocol == ProtocolSASLSSL
}

// Password returns the SASL password: SASLPassword, or the content of
// SASLPasswordFile without its trailing newline.
func (k Kafka) Password() (string, error) {
	if k.SASLPasswordFile == "" {
		return k.SASLPassword, nil
	}
	b, err := os.ReadFile(k.SASLPasswordFile)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
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
	{Key: "kafka.linger", Kind: Duration, Usage: "how long the producer lets a batch fill (Kafka's linger.ms); 0: no wait"},
	{Key: "kafka.dial_timeout", Kind: Duration, Usage: "timeout connecting to a broker"},
	{Key: "kafka.health_interval", Kind: Duration, Usage: "how often readiness re-checks the brokers"},
	{Key: "kafka.security_protocol", Kind: String, Usage: "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"},
	{Key: "kafka.sasl_mechanism", Kind: String, Usage: "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"},
	{Key: "kafka.sasl_username", Kind: String, Usage: "SASL user name"},
	{Key: "kafka.sasl_password", Kind: String, Usage: "SASL password (prefer the _FILE form)"},
	{Key: "kafka.sasl_password_file", Kind: String, Usage: "file holding the SASL password (a mounted Secret)"},
	{Key: "kafka.tls_ca_file", Kind: String, Usage: "PEM file of the CAs that sign the brokers' certificates (system CAs when empty)"},
	{Key: "kafka.tls_cert_file", Kind: String, Usage: "PEM client certificate (mTLS), with kafka.tls_key_file"},
	{Key: "kafka.tls_key_file", Kind: String, Usage: "PEM private key of the client certificate"},
	{Key: "kafka.tls_server_name", Kind: String, Usage: "name to check in the brokers' certificates (default: the broker host)"},
	{Key: "kafka.tls_insecure_skip_verify", Kind: Bool, Usage: "trust any broker certificate: tests only, never production"},
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
	required := map[string]string{"kafka.client_id": k.ClientID, "kafka.topic": k.Topic, "kafka.dlq_topic": k.DLQTopic, "kafka.version": k.Version}
	for _, key := range sortedKeys(required) {
		if err := ss.Required(key, required[key] == ""); err != nil {
			return err
		}
	}
	if k.Topic == k.DLQTopic {
		return ss.Invalid("kafka.dlq_topic", "must differ from %s", ss.Lookup("kafka.topic").Env())
	}
	counts := map[string]int{"kafka.topic_partitions": k.TopicPartitions, "kafka.dlq_partitions": k.DLQPartitions, "kafka.replication_factor": k.ReplicationFactor, "kafka.max_message_bytes": k.MaxMessageBytes}
	for _, key := range sortedKeys(counts) {
		if n := counts[key]; n < 1 {
			return ss.Invalid(key, "%d is less than 1", n)
		}
	}
	if err := positive(ss, map[string]time.Duration{"kafka.topic_retention": k.TopicRetention, "kafka.dlq_retention": k.DLQRetention, "kafka.dial_timeout": k.DialTimeout, "kafka.health_interval": k.HealthInterval}); err != nil {
		return err
	}
	if k.RetryMax < 0 {
		return ss.Invalid("kafka.retry_max", "%d is negative", k.RetryMax)
	}
	if k.Linger < 0 {
		return ss.Invalid("kafka.linger", "%v is negative", k.Linger)
	}
	return k.validateSecurity(ss)
}

// validateSecurity checks the security settings. No message ever holds a
// password or a key: only the settings' names and file paths.
func (k Kafka) validateSecurity(ss Settings) error {
	switch k.SecurityProtocol {
	case ProtocolPlaintext, ProtocolSSL, ProtocolSASLPlaintext, ProtocolSASLSSL:
	default:
		return ss.Invalid("kafka.security_protocol", "%q is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", k.SecurityProtocol)
	}
	if !k.UsesSASL() {
		for _, key := range []string{"kafka.sasl_mechanism", "kafka.sasl_username", "kafka.sasl_password", "kafka.sasl_password_file"} {
			if k.sasl(key) != "" {
				return ss.Invalid(key, "is set but %s %s uses no SASL", ss.Lookup("kafka.security_protocol").Env(), k.SecurityProtocol)
			}
		}
	} else {
		switch k.SASLMechanism {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		case "":
			return ss.Required("kafka.sasl_mechanism", true)
		default:
			return ss.Invalid("kafka.sasl_mechanism", "%q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.SASLMechanism)
		}
		if err := ss.Required("kafka.sasl_username", k.SASLUsername == ""); err != nil {
			return err
		}
		if k.SASLPassword != "" && k.SASLPasswordFile != "" {
			return ss.Invalid("kafka.sasl_password_file", "is set beside %s: set one of them", ss.Lookup("kafka.sasl_password").Env())
		}
		if err := ss.Required("kafka.sasl_password", k.SASLPassword == "" && k.SASLPasswordFile == ""); err != nil {
			return err
		}
		if _, err := k.Password(); err != nil {
			return ss.Invalid("kafka.sasl_password_file", "cannot be read: %v", err)
		}
	}
	files := []struct{ key, path string }{{"kafka.tls_ca_file", k.TLSCAFile}, {"kafka.tls_cert_file", k.TLSCertFile}, {"kafka.tls_key_file", k.TLSKeyFile}}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if !k.UsesTLS() {
			return ss.Invalid(f.key, "is set but %s %s uses no TLS", ss.Lookup("kafka.security_protocol").Env(), k.SecurityProtocol)
		}
		if _, err := os.Stat(f.path); err != nil {
			return ss.Invalid(f.key, "cannot be read: %v", err)
		}
	}
	if (k.TLSCertFile == "") != (k.TLSKeyFile == "") {
		return ss.Invalid("kafka.tls_cert_file", "and %s go together (a client certificate and its key)", ss.Lookup("kafka.tls_key_file").Env())
	}
	if (k.TLSServerName != "" || k.TLSInsecureSkipVerify) && !k.UsesTLS() {
		return ss.Invalid("kafka.tls_server_name", "or %s is set but %s uses no TLS", ss.Lookup("kafka.tls_insecure_skip_verify").Env(), k.SecurityProtocol)
	}
	return nil
}

func (k Kafka) sasl(key string) string {
	switch key {
	case "kafka.sasl_mechanism":
		return k.SASLMechanism
	case "kafka.sasl_username":
		return k.SASLUsername
	case "kafka.sasl_password":
		return k.SASLPassword
	default:
		return k.SASLPasswordFile
	}
}

// positive returns an error naming the first setting, by key, whose
// duration is not positive.
func positive(ss Settings, durations map[string]time.Duration) error {
	for _, key := range sortedKeys(durations) {
		if d := durations[key]; d <= 0 {
			return ss.Invalid(key, "must be positive, got %v", d)
		}
	}
	return nil
}

// sortedKeys returns m's keys in order: with two bad settings, the same one
// is reported every time (a map's own order changes from run to run).
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

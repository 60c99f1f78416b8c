package config

import (
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/acmecrm/integration-service/configs"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestSettingNames(t *testing.T) {
	tests := []struct {
		key, env, flag string
	}{
		{"kafka.brokers", "KAFKA_BROKERS", "kafka-brokers"},
		{"log.level", "LOG_LEVEL", "log-level"},
		{"gateway.listen_addr", "GATEWAY_LISTEN_ADDR", "listen-addr"},
		{"gateway.webhook_secrets", "GATEWAY_WEBHOOK_SECRETS", "webhook-secrets"},
		{"worker.group_id", "WORKER_GROUP_ID", "group-id"},
		{"worker.contacts_api_url", "WORKER_CONTACTS_API_URL", "contacts-api-url"},
	}
	for _, tt := range tests {
		s := Setting{Key: tt.key}
		if got := s.Env(); got != tt.env {
			t.Errorf("Env(%s) = %q, want %q", tt.key, got, tt.env)
		}
		if got := s.Flag(); got != tt.flag {
			t.Errorf("Flag(%s) = %q, want %q", tt.key, got, tt.flag)
		}
	}
}

// Every key of a defaults file is a declared setting, and every setting has a
// default there: the YAML and the table cannot drift apart.
func TestDefaultsFilesMatchSettings(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml     []byte
		settings Settings
	}{
		"gateway.yaml": {configs.Gateway, GatewaySettings},
		"worker.yaml":  {configs.Worker, WorkerSettings},
	} {
		var doc map[string]any
		if err := yaml.Unmarshal(tc.yaml, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var keys []string
		var walk func(prefix string, m map[string]any)
		walk = func(prefix string, m map[string]any) {
			for k, v := range m {
				if sub, ok := v.(map[string]any); ok {
					walk(prefix+k+".", sub)
					continue
				}
				keys = append(keys, prefix+k)
			}
		}
		walk("", doc)
		declared := map[string]bool{}
		for _, s := range tc.settings {
			declared[s.Key] = true
		}
		for _, k := range keys {
			if !declared[k] {
				t.Errorf("%s: key %s is not a declared setting", name, k)
			}
			delete(declared, k)
		}
		for k := range declared {
			t.Errorf("%s: setting %s has no default", name, k)
		}
	}
}

func TestLoadGatewayLayers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(file, []byte("gateway:\n  listen_addr: \":7000\"\n  max_body_bytes: 2048\nkafka:\n  topic: from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c Gateway)
	}{
		{
			name: "defaults",
			env:  map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret},
			check: func(t *testing.T, c Gateway) {
				want := Gateway{
					Log:   Log{Level: "info", Format: "json"},
					Kafka: c.Kafka,
					Server: GatewayServer{
						ListenAddr: ":8080", WebhookPath: "/webhooks/acmecrm", WebhookSecrets: []string{testSecret},
						TimestampTolerance: 5 * time.Minute, MaxBodyBytes: 1 << 20, EnqueueTimeout: 10 * time.Second,
						RetryAfter: 5 * time.Second, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
						WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, ShutdownTimeout: 25 * time.Second, ShutdownDelay: 5 * time.Second, MaxInflightBytes: 32 << 20, MetricsAddr: ":9091",
					},
				}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got %+v, want %+v", c, want)
				}
				k := c.Kafka
				if !reflect.DeepEqual(k.Brokers, []string{"localhost:9092"}) || k.ClientID != "acme-integration" ||
					k.Topic != "contact-events" || k.DLQTopic != "contact-events-dlq" || k.RetryMax != 8 ||
					k.RetryBackoff != 100*time.Millisecond || k.TopicRetention != 7*24*time.Hour || k.DLQRetention != 30*24*time.Hour {
					t.Errorf("kafka defaults: got %+v", k)
				}
			},
		},
		{
			name: "env overrides defaults, lists are comma-separated",
			env: map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret + ", " + testSecret, "KAFKA_BROKERS": "a:1,b:2",
				"LOG_LEVEL": "debug", "GATEWAY_MAX_BODY_BYTES": "42", "GATEWAY_ENQUEUE_TIMEOUT": "3s"},
			check: func(t *testing.T, c Gateway) {
				if got := c.Kafka.Brokers; !reflect.DeepEqual(got, []string{"a:1", "b:2"}) {
					t.Errorf("brokers: got %v, want [a:1 b:2]", got)
				}
				if len(c.Server.WebhookSecrets) != 2 || c.Log.Level != "debug" || c.Server.MaxBodyBytes != 42 || c.Server.EnqueueTimeout != 3*time.Second {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "flags override env",
			args: []string{"--kafka-brokers", "f:1", "--max-body-bytes=7", "--listen-addr", ":1"},
			env:  map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret, "KAFKA_BROKERS": "e:1", "GATEWAY_MAX_BODY_BYTES": "42"},
			check: func(t *testing.T, c Gateway) {
				if !reflect.DeepEqual(c.Kafka.Brokers, []string{"f:1"}) || c.Server.MaxBodyBytes != 7 || c.Server.ListenAddr != ":1" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "file overrides defaults, env overrides file",
			args: []string{"--config", file},
			env:  map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret, "GATEWAY_MAX_BODY_BYTES": "99"},
			check: func(t *testing.T, c Gateway) {
				if c.Server.ListenAddr != ":7000" || c.Kafka.Topic != "from-file" || c.Server.MaxBodyBytes != 99 {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "file named by env",
			env:  map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret, GatewayConfigFileEnv: file},
			check: func(t *testing.T, c Gateway) {
				if c.Server.ListenAddr != ":7000" {
					t.Errorf("listen addr: got %q, want :7000", c.Server.ListenAddr)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadGateway(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("LoadGateway: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadErrorsNameTheSetting(t *testing.T) {
	gw := func(extra map[string]string) map[string]string {
		m := map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	wk := func(extra map[string]string) map[string]string {
		m := map[string]string{"WORKER_CONTACTS_API_URL": "http://contacts.local"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name    string
		worker  bool
		args    []string
		env     map[string]string
		wantErr []string
	}{
		{"gateway without secrets", false, nil, nil, []string{"missing required setting", "GATEWAY_WEBHOOK_SECRETS"}},
		{"secret without prefix", false, nil, map[string]string{"GATEWAY_WEBHOOK_SECRETS": "c2VjcmV0"}, []string{"GATEWAY_WEBHOOK_SECRETS", "whsec_"}},
		{"secret not base64", false, nil, map[string]string{"GATEWAY_WEBHOOK_SECRETS": "whsec_%%%"}, []string{"GATEWAY_WEBHOOK_SECRETS", "base64"}},
		{"malformed duration", false, nil, gw(map[string]string{"GATEWAY_TIMESTAMP_TOLERANCE": "soon"}), []string{"GATEWAY_TIMESTAMP_TOLERANCE", `invalid duration "soon"`}},
		{"malformed int", false, nil, gw(map[string]string{"GATEWAY_MAX_BODY_BYTES": "1MB"}), []string{"GATEWAY_MAX_BODY_BYTES"}},
		{"malformed bool", false, nil, gw(map[string]string{"KAFKA_PROVISION_TOPICS": "perhaps"}), []string{"KAFKA_PROVISION_TOPICS"}},
		{"bad log level", false, nil, gw(map[string]string{"LOG_LEVEL": "loud"}), []string{"LOG_LEVEL"}},
		{"broker without port", false, nil, gw(map[string]string{"KAFKA_BROKERS": "kafka"}), []string{"KAFKA_BROKERS", "host:port"}},
		{"same topics", false, nil, gw(map[string]string{"KAFKA_DLQ_TOPIC": "contact-events"}), []string{"KAFKA_DLQ_TOPIC"}},
		{"zero partitions", false, nil, gw(map[string]string{"KAFKA_TOPIC_PARTITIONS": "0"}), []string{"KAFKA_TOPIC_PARTITIONS"}},
		{"bad flag value", false, []string{"--enqueue-timeout", "x"}, gw(nil), []string{"enqueue-timeout"}},
		{"unknown flag", false, []string{"--nope"}, gw(nil), []string{"nope"}},
		{"missing config file", false, []string{"--config", "/nonexistent/x.yaml"}, gw(nil), []string{"/nonexistent/x.yaml"}},
		{"worker without contacts api", true, nil, nil, []string{"missing required setting", "WORKER_CONTACTS_API_URL"}},
		{"worker with bad url", true, nil, map[string]string{"WORKER_CONTACTS_API_URL": "contacts"}, []string{"WORKER_CONTACTS_API_URL"}},
		{"worker bad retry budget", true, nil, wk(map[string]string{"WORKER_RETRY_MAX_ELAPSED_TIME": "2 minutes"}), []string{"WORKER_RETRY_MAX_ELAPSED_TIME"}},
		{"worker shrinking backoff", true, nil, wk(map[string]string{"WORKER_RETRY_MULTIPLIER": "0.5"}), []string{"WORKER_RETRY_MULTIPLIER"}},
		{"replay rate too high", true, []string{"--replay-dlq", "--replay-rate", "2e9"}, nil, []string{"WORKER_REPLAY_RATE"}},
		{"replay bad since", true, []string{"--replay-dlq", "--replay-since", "yesterday"}, nil, []string{"WORKER_REPLAY_SINCE", "RFC 3339"}},
		{"replay window backwards", true, []string{"--replay-dlq", "--replay-since", "2026-11-26T10:00:00Z", "--replay-until", "2026-11-26T09:00:00Z"}, nil, []string{"WORKER_REPLAY_UNTIL"}},
		{"replay bad kind", true, []string{"--replay-dlq", "--replay-error-kind", "fatal"}, nil, []string{"WORKER_REPLAY_ERROR_KIND"}},
		{"replay guard off", true, []string{"--replay-dlq", "--replay-max-count", "0"}, nil, []string{"WORKER_REPLAY_MAX_COUNT"}},
		{"enqueue outlasts write timeout", false, nil, gw(map[string]string{"GATEWAY_ENQUEUE_TIMEOUT": "30s"}), []string{"GATEWAY_ENQUEUE_TIMEOUT", "GATEWAY_WRITE_TIMEOUT"}},
		{"pprof on the webhook port", false, nil, gw(map[string]string{"GATEWAY_PPROF_ADDR": ":8080"}), []string{"GATEWAY_PPROF_ADDR", "port of its own"}},
		{"body does not fit a record", false, nil, gw(map[string]string{"GATEWAY_MAX_BODY_BYTES": "2000000"}), []string{"KAFKA_MAX_MESSAGE_BYTES", "GATEWAY_MAX_BODY_BYTES"}},
		{"worker empty group", true, []string{"--group-id="}, wk(nil), []string{"WORKER_GROUP_ID"}},
		{"unknown security protocol", false, nil, gw(map[string]string{"KAFKA_SECURITY_PROTOCOL": "TLS"}), []string{"KAFKA_SECURITY_PROTOCOL"}},
		{"mechanism without SASL", false, nil, gw(map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN"}), []string{"KAFKA_SASL_MECHANISM", "uses no SASL"}},
		{"SASL without mechanism", false, nil, gw(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "hunter2-secret"}), []string{"KAFKA_SASL_MECHANISM"}},
		{"unknown mechanism", false, nil, gw(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "hunter2-secret"}), []string{"KAFKA_SASL_MECHANISM"}},
		{"SASL without password", false, nil, gw(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "u"}), []string{"KAFKA_SASL_PASSWORD"}},
		{"password twice", false, nil, gw(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "hunter2-secret", "KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"}), []string{"KAFKA_SASL_PASSWORD_FILE"}},
		{"unreadable password file", false, nil, gw(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password"}), []string{"KAFKA_SASL_PASSWORD_FILE", "/nonexistent/password"}},
		{"CA file without TLS", false, nil, gw(map[string]string{"KAFKA_TLS_CA_FILE": "/etc/hostname"}), []string{"KAFKA_TLS_CA_FILE", "uses no TLS"}},
		{"unreadable CA file", false, nil, gw(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_TLS_CA_FILE": "/nonexistent/ca.crt"}), []string{"KAFKA_TLS_CA_FILE"}},
		{"cert without key", false, nil, gw(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_TLS_CERT_FILE": "/etc/hostname"}), []string{"KAFKA_TLS_CERT_FILE", "KAFKA_TLS_KEY_FILE"}},
		{"skip verify without TLS", false, nil, gw(map[string]string{"KAFKA_TLS_INSECURE_SKIP_VERIFY": "true"}), []string{"KAFKA_TLS_INSECURE_SKIP_VERIFY"}},
		{"worker no in-flight slot", true, []string{"--max-in-flight", "0"}, wk(nil), []string{"WORKER_MAX_IN_FLIGHT", "--max-in-flight"}},
		{"worker no partition buffer", true, nil, wk(map[string]string{"WORKER_PARTITION_BUFFER": "0"}), []string{"WORKER_PARTITION_BUFFER"}},
		{"worker unknown ordering", true, nil, wk(map[string]string{"WORKER_ORDERING": "none"}), []string{"WORKER_ORDERING", "key or partition"}},
		{"worker outage ratio over 1", true, nil, wk(map[string]string{"WORKER_OUTAGE_FAILURE_RATIO": "1.5"}), []string{"WORKER_OUTAGE_FAILURE_RATIO"}},
		{"worker outage without contacts", true, nil, wk(map[string]string{"WORKER_OUTAGE_MIN_CONTACTS": "0"}), []string{"WORKER_OUTAGE_MIN_CONTACTS"}},
		{"worker outage zero probe interval", true, nil, wk(map[string]string{"WORKER_OUTAGE_PROBE_INTERVAL": "0s"}), []string{"WORKER_OUTAGE_PROBE_INTERVAL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.worker {
				_, err = LoadWorker(tt.args, env(tt.env), io.Discard)
			} else {
				_, err = LoadGateway(tt.args, env(tt.env), io.Discard)
			}
			if err == nil {
				t.Fatalf("got no error, want one naming %v", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got %q, want it to contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "hunter2-secret") {
				t.Errorf("the error shows the password: %q", err)
			}
			if strings.Contains(err.Error(), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") {
				t.Errorf("error %q reveals a secret", err)
			}
		})
	}
}

// In replay mode the Contacts API is never called, so its URL is not required.
func TestReplayModeNeedsNoContactsAPI(t *testing.T) {
	c, err := LoadWorker([]string{"--replay-dlq", "--replay-event-type", "contact.created,contact.updated", "--replay-event-type", "contact.deleted"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Fleet.Replay.DLQ || len(c.Fleet.Replay.EventTypes) != 3 || c.Fleet.Replay.MaxCount != 3 || c.Fleet.Replay.GroupID != "contact-worker-dlq-replay" {
		t.Errorf("got %+v", c.Fleet.Replay)
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, err := LoadWorker([]string{"--help"}, env(nil), &out)
	if !IsHelp(err) {
		t.Fatalf("got %v, want ErrHelp", err)
	}
	for _, want := range []string{"--contacts-api-url", "--kafka-brokers", "--config"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %s:\n%s", want, out.String())
		}
	}
}

func TestEnvVarsIncludeSpecNames(t *testing.T) {
	all := strings.Join(append(GatewaySettings.EnvVars(GatewayConfigFileEnv), WorkerSettings.EnvVars(WorkerConfigFileEnv)...), " ")
	for _, name := range []string{"KAFKA_BROKERS", "KAFKA_TOPIC", "KAFKA_DLQ_TOPIC", "LOG_LEVEL", "GATEWAY_LISTEN_ADDR",
		"GATEWAY_WEBHOOK_SECRETS", "GATEWAY_MAX_BODY_BYTES", "WORKER_GROUP_ID", "WORKER_CONTACTS_API_URL",
		"WORKER_CONTACTS_API_TOKEN", "WORKER_HTTP_ADDR", "WORKER_RETRY_MAX_ELAPSED_TIME"} {
		if !strings.Contains(" "+all+" ", " "+name+" ") {
			t.Errorf("%s is not read by either binary", name)
		}
	}
}

// --help shows defaults, never a password given by environment or file.
func TestHelpNeverShowsSecrets(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/c.yaml"
	if err := os.WriteFile(file, []byte("kafka:\n  sasl_password: from-a-file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	_, err := LoadWorker([]string{"--config", file, "--help"}, env(map[string]string{"KAFKA_SASL_PASSWORD": "hunter2-secret"}), &out)
	if !IsHelp(err) {
		t.Fatalf("got %v, want help", err)
	}
	if strings.Contains(out.String(), "hunter2-secret") || strings.Contains(out.String(), "from-a-file-secret") || !strings.Contains(out.String(), "--kafka-sasl-password") {
		t.Errorf("help shows a secret, or lacks the flag:\n%s", out.String())
	}
}

// With several bad settings, the same one is reported every time: the
// first by key, whatever order Go's maps iterate in.
func TestLoadErrorsAreDeterministic(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"KAFKA_TOPIC_PARTITIONS": "0", "KAFKA_DLQ_PARTITIONS": "0", "KAFKA_REPLICATION_FACTOR": "0"}, "KAFKA_DLQ_PARTITIONS"},
		{map[string]string{"KAFKA_HEALTH_INTERVAL": "0s", "KAFKA_DIAL_TIMEOUT": "0s"}, "KAFKA_DIAL_TIMEOUT"},
		{map[string]string{"GATEWAY_RETRY_AFTER": "0s", "GATEWAY_IDLE_TIMEOUT": "0s", "GATEWAY_READ_TIMEOUT": "0s"}, "GATEWAY_IDLE_TIMEOUT"},
	} {
		e := map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret}
		maps.Copy(e, tc.env)
		for range 20 {
			_, err := LoadGateway(nil, env(e), io.Discard)
			if err == nil || !strings.Contains(err.Error(), "setting "+tc.want+" ") {
				t.Fatalf("%v: got %v, want %s named", tc.env, err, tc.want)
			}
		}
	}
}

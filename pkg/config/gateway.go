package config

import (
	"io"
	"strings"
	"time"

	"github.com/acmecrm/integration-service/configs"
	"github.com/acmecrm/integration-service/pkg/webhook"
)

// Gateway is the configuration of webhook-gateway.
type Gateway struct {
	Log    Log           `mapstructure:"log"`
	Kafka  Kafka         `mapstructure:"kafka"`
	Server GatewayServer `mapstructure:"gateway"`
}

// GatewayServer holds the HTTP side of webhook-gateway.
type GatewayServer struct {
	// ListenAddr is the address the HTTP server listens on.
	ListenAddr string `mapstructure:"listen_addr"`
	// WebhookPath is the path AcmeCRM posts to.
	WebhookPath string `mapstructure:"webhook_path"`
	// WebhookSecrets are the accepted whsec_ signing secrets (rotation: any passes).
	WebhookSecrets []string `mapstructure:"webhook_secrets"`
	// TimestampTolerance is how far webhook-timestamp may be from now, either way.
	TimestampTolerance time.Duration `mapstructure:"timestamp_tolerance"`
	// MaxBodyBytes is the largest body accepted; larger ones get 413.
	MaxBodyBytes int `mapstructure:"max_body_bytes"`
	// EnqueueTimeout bounds the wait for Kafka's acknowledgement before 503.
	EnqueueTimeout time.Duration `mapstructure:"enqueue_timeout"`
	// RetryAfter is the Retry-After sent with a 503.
	RetryAfter time.Duration `mapstructure:"retry_after"`
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are the
	// HTTP server's, so slow clients cannot pin connections.
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
	ReadTimeout       time.Duration `mapstructure:"read_timeout"`
	WriteTimeout      time.Duration `mapstructure:"write_timeout"`
	IdleTimeout       time.Duration `mapstructure:"idle_timeout"`
	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// ShutdownDelay is the lame-duck phase after SIGTERM: /readyz answers
	// 503 and requests are still served (with Connection: close) while the
	// load balancer stops sending new ones; then the drain starts.
	ShutdownDelay time.Duration `mapstructure:"shutdown_delay"`
	// MaxInflightBytes bounds the bytes of bodies being read, verified and
	// enqueued at once; a request that would pass it gets 503 at once.
	MaxInflightBytes int64 `mapstructure:"max_inflight_bytes"`
	// PprofAddr, when set, serves Go's profiling endpoints on a listener of
	// its own (never the webhook port). Off by default.
	PprofAddr string `mapstructure:"pprof_addr"`
	// MetricsAddr serves /metrics on a listener of its own, so that what
	// may reach the webhook port (a NetworkPolicy cannot filter paths)
	// cannot scrape it; empty serves /metrics on the webhook port.
	MetricsAddr string `mapstructure:"metrics_addr"`
	// StrictEventTypes refuses (422) an event whose event_type is not one
	// the worker knows. Off by default: an authentic event of a type
	// AcmeCRM adds is accepted and kept (most senders take a 4xx as final).
	StrictEventTypes bool `mapstructure:"strict_event_types"`
}

// RecordOverheadBytes is the room kept in a record beside the body for the
// key, headers and batch framing (all of which are far smaller).
const RecordOverheadBytes = 16 << 10

// GatewayConfigFileEnv names a YAML file overriding the gateway's defaults.
const GatewayConfigFileEnv = "GATEWAY_CONFIG_FILE"

// GatewaySettings are the settings webhook-gateway reads.
var GatewaySettings = append(append(Settings{}, commonSettings...),
	Setting{Key: "gateway.listen_addr", Kind: String, Usage: "HTTP listen address"},
	Setting{Key: "gateway.webhook_path", Kind: String, Usage: "path AcmeCRM posts webhooks to"},
	Setting{Key: "gateway.webhook_secrets", Kind: StringList, Usage: "comma-separated whsec_ signing secrets (required)"},
	Setting{Key: "gateway.timestamp_tolerance", Kind: Duration, Usage: "allowed skew of webhook-timestamp, either way"},
	Setting{Key: "gateway.max_body_bytes", Kind: Int, Usage: "largest accepted body in bytes"},
	Setting{Key: "gateway.max_inflight_bytes", Kind: Int, Usage: "bytes of bodies handled at once; beyond, 503 with Retry-After (bounds memory under bursts)"},
	Setting{Key: "gateway.shutdown_delay", Kind: Duration, Usage: "lame-duck phase after SIGTERM: not ready, still serving, before the drain"},
	Setting{Key: "gateway.enqueue_timeout", Kind: Duration, Usage: "wait for Kafka's ack before answering 503"},
	Setting{Key: "gateway.retry_after", Kind: Duration, Usage: "Retry-After sent with 503"},
	Setting{Key: "gateway.read_header_timeout", Kind: Duration, Usage: "HTTP read-header timeout"},
	Setting{Key: "gateway.read_timeout", Kind: Duration, Usage: "HTTP read timeout"},
	Setting{Key: "gateway.write_timeout", Kind: Duration, Usage: "HTTP write timeout"},
	Setting{Key: "gateway.idle_timeout", Kind: Duration, Usage: "HTTP keep-alive idle timeout"},
	Setting{Key: "gateway.shutdown_timeout", Kind: Duration, Usage: "bounded drain on SIGTERM"},
	Setting{Key: "gateway.strict_event_types", Kind: Bool, Usage: "refuse (422) events of a type the worker does not know, instead of accepting them for a later release"},
	Setting{Key: "gateway.metrics_addr", Kind: String, Usage: "listen address of /metrics, a port of its own (empty: on the webhook port)"},
	Setting{Key: "gateway.pprof_addr", Kind: String, Usage: "listen address of Go's /debug/pprof endpoints, on their own port (empty: off)"},
)

// LoadGateway loads and validates the gateway's configuration from args (the
// command line without the program name) and getenv; usage receives --help.
func LoadGateway(args []string, getenv func(string) string, usage io.Writer) (Gateway, error) {
	var c Gateway
	src := source{binary: "webhook-gateway", file: "gateway.yaml", defaults: configs.Gateway, settings: GatewaySettings, configFileEnv: GatewayConfigFileEnv}
	if err := src.load(args, getenv, usage, &c); err != nil {
		return c, err
	}
	return c, c.validate()
}

func (c Gateway) validate() error {
	ss := GatewaySettings
	if err := c.Log.validate(ss); err != nil {
		return err
	}
	if err := c.Kafka.validate(ss); err != nil {
		return err
	}
	g := c.Server
	if err := ss.Required("gateway.webhook_secrets", len(g.WebhookSecrets) == 0); err != nil {
		return err
	}
	for i, s := range g.WebhookSecrets {
		// Never echo the secret itself: say which one is wrong.
		if _, err := webhook.DecodeSecret(s); err != nil {
			return ss.Invalid("gateway.webhook_secrets", "secret #%d: %v", i+1, err)
		}
	}
	if err := ss.Required("gateway.listen_addr", g.ListenAddr == ""); err != nil {
		return err
	}
	if g.MetricsAddr != "" && (g.MetricsAddr == g.ListenAddr || g.MetricsAddr == g.PprofAddr) {
		return ss.Invalid("gateway.metrics_addr", "%q is the webhook or pprof listen address; metrics need a port of their own", g.MetricsAddr)
	}
	if g.PprofAddr != "" && g.PprofAddr == g.ListenAddr {
		return ss.Invalid("gateway.pprof_addr", "%q is the webhook listen address; profiling needs a port of its own", g.PprofAddr)
	}
	if !strings.HasPrefix(g.WebhookPath, "/") {
		return ss.Invalid("gateway.webhook_path", "%q does not start with /", g.WebhookPath)
	}
	if g.MaxInflightBytes < int64(g.MaxBodyBytes) {
		return ss.Invalid("gateway.max_inflight_bytes", "%d is less than %s %d: a body of the largest size could never pass", g.MaxInflightBytes, ss.Lookup("gateway.max_body_bytes").Env(), g.MaxBodyBytes)
	}
	if g.ShutdownDelay < 0 {
		return ss.Invalid("gateway.shutdown_delay", "%v is negative", g.ShutdownDelay)
	}
	if g.MaxBodyBytes < 1 {
		return ss.Invalid("gateway.max_body_bytes", "%d is less than 1", g.MaxBodyBytes)
	}
	// A body the gateway accepts must fit in a record Kafka accepts, or it
	// would be answered 503 forever instead of 413.
	if need := g.MaxBodyBytes + RecordOverheadBytes; c.Kafka.MaxMessageBytes < need {
		return ss.Invalid("kafka.max_message_bytes", "%d cannot hold a body of %s=%d plus %d bytes of key and headers",
			c.Kafka.MaxMessageBytes, ss.Lookup("gateway.max_body_bytes").Env(), g.MaxBodyBytes, RecordOverheadBytes)
	}
	// The 202 must still be writable when Kafka answers at the last moment.
	if g.EnqueueTimeout >= g.WriteTimeout {
		return ss.Invalid("gateway.enqueue_timeout", "%v must be shorter than %s (%v)", g.EnqueueTimeout, ss.Lookup("gateway.write_timeout").Env(), g.WriteTimeout)
	}
	return positive(ss, map[string]time.Duration{
		"gateway.timestamp_tolerance": g.TimestampTolerance, "gateway.enqueue_timeout": g.EnqueueTimeout,
		"gateway.retry_after": g.RetryAfter, "gateway.read_header_timeout": g.ReadHeaderTimeout,
		"gateway.read_timeout": g.ReadTimeout, "gateway.write_timeout": g.WriteTimeout,
		"gateway.idle_timeout": g.IdleTimeout, "gateway.shutdown_timeout": g.ShutdownTimeout,
	})
}

package config

import (
	"io"
	"net/url"
	"time"

	"github.com/acmecrm/integration-service/configs"
)

// Worker is the configuration of contact-worker.
type Worker struct {
	Log    Log         `mapstructure:"log"`
	Kafka  Kafka       `mapstructure:"kafka"`
	Worker WorkerFleet `mapstructure:"worker"`
}

// WorkerFleet holds the consumer side of contact-worker.
type WorkerFleet struct {
	// GroupID is the consumer group the fleet shares.
	GroupID string `mapstructure:"group_id"`
	// ContactsAPIURL is the base URL of the Contacts API events are applied to.
	ContactsAPIURL string `mapstructure:"contacts_api_url"`
	// ContactsAPIToken is the bearer token sent to the Contacts API (optional).
	ContactsAPIToken string `mapstructure:"contacts_api_token"`
	// ContactsAPITimeout bounds one call to the Contacts API.
	ContactsAPITimeout time.Duration `mapstructure:"contacts_api_timeout"`
	// Retry is the backoff of transient Contacts API failures.
	Retry Retry `mapstructure:"retry"`
	// HTTPAddr serves /healthz, /readyz and /metrics.
	HTTPAddr string `mapstructure:"http_addr"`
	// ShutdownTimeout bounds the stop on SIGTERM.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
}

// Retry is an exponential backoff with jitter (cenkalti/backoff).
type Retry struct {
	// InitialInterval is the first wait.
	InitialInterval time.Duration `mapstructure:"initial_interval"`
	// Multiplier grows the wait after each attempt.
	Multiplier float64 `mapstructure:"multiplier"`
	// MaxInterval caps one wait.
	MaxInterval time.Duration `mapstructure:"max_interval"`
	// MaxElapsedTime is the whole budget; past it the event is dead-lettered.
	MaxElapsedTime time.Duration `mapstructure:"max_elapsed_time"`
}

// WorkerConfigFileEnv names a YAML file overriding the worker's defaults.
const WorkerConfigFileEnv = "WORKER_CONFIG_FILE"

// WorkerSettings are the settings contact-worker reads.
var WorkerSettings = append(append(Settings{}, commonSettings...),
	Setting{Key: "worker.group_id", Kind: String, Usage: "consumer group id of the fleet"},
	Setting{Key: "worker.contacts_api_url", Kind: String, Usage: "base URL of the Contacts API (required)"},
	Setting{Key: "worker.contacts_api_token", Kind: String, Usage: "bearer token for the Contacts API"},
	Setting{Key: "worker.contacts_api_timeout", Kind: Duration, Usage: "timeout of one Contacts API call"},
	Setting{Key: "worker.retry.initial_interval", Kind: Duration, Usage: "first wait before retrying a transient failure"},
	Setting{Key: "worker.retry.multiplier", Kind: Float, Usage: "growth of the wait after each attempt (1 or more)"},
	Setting{Key: "worker.retry.max_interval", Kind: Duration, Usage: "longest single wait between attempts"},
	Setting{Key: "worker.retry.max_elapsed_time", Kind: Duration, Usage: "retry budget of one event before it is dead-lettered"},
	Setting{Key: "worker.http_addr", Kind: String, Usage: "address of /healthz, /readyz and /metrics"},
	Setting{Key: "worker.shutdown_timeout", Kind: Duration, Usage: "bounded stop on SIGTERM"},
)

// LoadWorker loads and validates the worker's configuration from args (the
// command line without the program name) and getenv; usage receives --help.
func LoadWorker(args []string, getenv func(string) string, usage io.Writer) (Worker, error) {
	var c Worker
	src := source{binary: "contact-worker", file: "worker.yaml", defaults: configs.Worker, settings: WorkerSettings, configFileEnv: WorkerConfigFileEnv}
	if err := src.load(args, getenv, usage, &c); err != nil {
		return c, err
	}
	return c, c.validate()
}

func (c Worker) validate() error {
	ss := WorkerSettings
	if err := c.Log.validate(ss); err != nil {
		return err
	}
	if err := c.Kafka.validate(ss); err != nil {
		return err
	}
	w := c.Worker
	if err := ss.Required("worker.group_id", w.GroupID == ""); err != nil {
		return err
	}
	if err := ss.Required("worker.contacts_api_url", w.ContactsAPIURL == ""); err != nil {
		return err
	}
	if u, err := url.Parse(w.ContactsAPIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ss.Invalid("worker.contacts_api_url", "%q is not an http(s) URL", w.ContactsAPIURL)
	}
	if err := ss.Required("worker.http_addr", w.HTTPAddr == ""); err != nil {
		return err
	}
	if w.Retry.Multiplier < 1 {
		return ss.Invalid("worker.retry.multiplier", "%v is less than 1", w.Retry.Multiplier)
	}
	if w.Retry.MaxInterval < w.Retry.InitialInterval {
		return ss.Invalid("worker.retry.max_interval", "%v is shorter than the initial interval %v", w.Retry.MaxInterval, w.Retry.InitialInterval)
	}
	return positive(ss, map[string]time.Duration{
		"worker.shutdown_timeout": w.ShutdownTimeout, "worker.contacts_api_timeout": w.ContactsAPITimeout,
		"worker.retry.initial_interval": w.Retry.InitialInterval,
		"worker.retry.max_interval":     w.Retry.MaxInterval, "worker.retry.max_elapsed_time": w.Retry.MaxElapsedTime,
	})
}

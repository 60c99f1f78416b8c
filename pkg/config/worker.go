package config

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/acmecrm/integration-service/configs"
)

// Worker is the configuration of contact-worker.
type Worker struct {
	Log   Log         `mapstructure:"log"`
	Kafka Kafka       `mapstructure:"kafka"`
	Fleet WorkerFleet `mapstructure:"worker"`
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
	// MaxInFlight bounds the events being applied at once by this process,
	// across every partition it holds.
	MaxInFlight int `mapstructure:"max_in_flight"`
	// PartitionBuffer bounds the records of one partition read but not yet
	// finished (waiting for their contact, or being applied); at the bound
	// the partition is not read further (back-pressure).
	PartitionBuffer int `mapstructure:"partition_buffer"`
	// PartitionBufferBytes bounds the same records' size (keys, values,
	// headers): whichever bound is reached first stops the reading, so a
	// worker's memory is at most partitions held × this.
	PartitionBufferBytes int `mapstructure:"partition_buffer_bytes"`
	// MaxCallsPerSecond caps the calls to the Contacts API this process
	// makes per second (0: no cap).
	MaxCallsPerSecond float64 `mapstructure:"max_calls_per_second"`
	// RateLimit is what the worker does when the API asks it to slow down.
	RateLimit RateLimit `mapstructure:"rate_limit"`
	// Ordering is what must be applied one after another: "key" (each
	// contact's events, different contacts concurrently) or "partition"
	// (every event of a partition, one at a time).
	Ordering string `mapstructure:"ordering"`
	// Outage detects a Contacts API that fails for everyone.
	Outage Outage `mapstructure:"outage"`
	// StaleGuard keeps older AcmeCRM snapshots from overwriting newer ones.
	StaleGuard StaleGuard `mapstructure:"stale_guard"`
	// Replay holds the DLQ replay mode's settings.
	Replay Replay `mapstructure:"replay"`
	// DLQSummary prints a summary of the DLQ (counts per kind, event type
	// and error, its age, the parked contacts, what a routine replay would
	// read) and exits; it changes nothing.
	DLQSummary bool `mapstructure:"dlq_summary"`
	// Output is the format of DLQSummary: json or table.
	Output string `mapstructure:"output"`
	// HTTPAddr serves /healthz, /readyz and /metrics.
	HTTPAddr string `mapstructure:"http_addr"`
	// PprofAddr, when set, serves Go's profiling endpoints on a listener of
	// its own (never the metrics port). Off by default.
	PprofAddr string `mapstructure:"pprof_addr"`
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

// The orderings of WorkerFleet.Ordering.
const (
	OrderingKey       = "key"
	OrderingPartition = "partition"
)

// RateLimit is how the worker slows down when the Contacts API asks
// (429, or 503 with Retry-After).
type RateLimit struct {
	// MaxPause caps the pause of every call a Retry-After asks for.
	MaxPause time.Duration `mapstructure:"max_pause"`
}

// Outage decides when failures are a fault of the Contacts API as a whole
// (or of this service's configuration) rather than of some contacts:
// among the contacts called within Window (their latest answer each, so
// the retries of a few weigh like one each), at least MinContacts failed
// in a way such a fault produces (no answer, 5xx, 429, 401/403, a
// redirect, a 404 to a PUT) and they are at least FailureRatio of them.
// During a fault no new records are taken, nothing is dead-lettered, and
// one call per ProbeInterval tests the API; the first one answered as
// working ends it.
type Outage struct {
	// Window is how far back contacts' answers are counted.
	Window time.Duration `mapstructure:"window"`
	// FailureRatio is the share of failing contacts (0 to 1) that makes one.
	FailureRatio float64 `mapstructure:"failure_ratio"`
	// MinContacts is the fewest distinct failing contacts that make one.
	MinContacts int `mapstructure:"min_contacts"`
	// ProbeInterval spaces the calls made while the API is out.
	ProbeInterval time.Duration `mapstructure:"probe_interval"`
}

// StaleGuard is the stale-event guard: the worker keeps each contact's
// newest AcmeCRM event applied (in the state topic) and never applies an
// older one (outcome stale), however late it arrives — a late AcmeCRM
// retry, a reordered delivery, a DLQ copy replayed days later.
type StaleGuard struct {
	// Horizon is how long a contact's state is kept after it last changed:
	// the retention.ms of the state topic the worker creates. An event
	// arriving later than that after its contact's newest is judged without
	// it. At least the DLQ's retention, so a replayed DLQ copy is always
	// judged.
	Horizon time.Duration `mapstructure:"horizon"`
	// MaxClockSkew is how far an event's timestamp may be ahead of its
	// arrival (received_at); beyond it the event is dead-lettered as
	// invalid, since as its contact's newest it would make every later
	// event stale.
	MaxClockSkew time.Duration `mapstructure:"max_clock_skew"`
}

// StateTopic returns the state topic's name: StateTopic, or the one derived
// from its owner (Kafka Streams names its state topics after the
// application id the same way), so two deployments on one cluster never
// share one.
func (c Worker) StateTopic() string {
	if c.Kafka.StateTopic != "" {
		return c.Kafka.StateTopic
	}
	return c.Fleet.GroupID + "-" + c.Kafka.Topic + "-state"
}

// Replay selects and paces the dead-lettered records a replay republishes.
type Replay struct {
	// DLQ runs the binary in replay mode instead of consuming.
	DLQ bool `mapstructure:"dlq"`
	// GroupID is the consumer group that remembers the replay position.
	GroupID string `mapstructure:"group_id"`
	// FromBeginning ignores the remembered position.
	FromBeginning bool `mapstructure:"from_beginning"`
	// EventTypes, EventIDs and ErrorKinds keep only matching records (any, when empty).
	EventTypes []string `mapstructure:"event_type"`
	EventIDs   []string `mapstructure:"event_id"`
	ErrorKinds []string `mapstructure:"error_kind"`
	// Since and Until bound dlq_failed_at (RFC 3339; empty: unbounded).
	Since string `mapstructure:"since"`
	Until string `mapstructure:"until"`
	// ContactIDs are parked contacts to release: each one's head and parked
	// events are replayed in their order (latest copy of each).
	ContactIDs []string `mapstructure:"contact_id"`
	// ContactIDFile names a file of contact ids to release, one a line:
	// any id the gateway accepts, commas included (the flag splits on them).
	ContactIDFile string `mapstructure:"contact_id_file"`
	// DiscardEventID, with one ContactID, is a head event never to apply.
	DiscardEventID string `mapstructure:"discard_event_id"`
	// AcceptLost lets a release go on when records of a contact cannot be
	// put back because their value is gone (a dead letter without its
	// value whose original passed its topic's retention): they are
	// reported lost, and the rest is put back. Without it the contact is
	// held parked.
	AcceptLost bool `mapstructure:"accept_lost"`
	// ListParked lists the parked contacts instead of replaying.
	ListParked bool `mapstructure:"list_parked"`
	// Actor names who runs the replay, for the summary line.
	Actor string `mapstructure:"actor"`
	// Limit caps the records replayed in one run (0: none).
	Limit int `mapstructure:"limit"`
	// DryRun prints what would be replayed and changes nothing.
	DryRun bool `mapstructure:"dry_run"`
	// MaxCount is the loop guard: records replayed this many times are held.
	MaxCount int `mapstructure:"max_count"`
	// Rate caps records replayed per second (0: none).
	Rate float64 `mapstructure:"rate"`
}

// WorkerConfigFileEnv names a YAML file overriding the worker's defaults.
const WorkerConfigFileEnv = "WORKER_CONFIG_FILE"

// WorkerSettings are the settings contact-worker reads.
var WorkerSettings = append(append(Settings{}, commonSettings...),
	Setting{Key: "kafka.state_topic", Kind: String, Usage: "topic of the contacts' states (newest event applied, parking); empty: <group id>-<topic>-state"},
	Setting{Key: "kafka.parked_topic", Kind: String, Usage: "former parked-contacts topic: its parked contacts move into the state topic when that is new"},
	Setting{Key: "worker.group_id", Kind: String, Usage: "consumer group id of the fleet"},
	Setting{Key: "worker.contacts_api_url", Kind: String, Usage: "base URL of the Contacts API (required)"},
	Setting{Key: "worker.contacts_api_token", Kind: String, Usage: "bearer token for the Contacts API"},
	Setting{Key: "worker.contacts_api_timeout", Kind: Duration, Usage: "timeout of one Contacts API call"},
	Setting{Key: "worker.retry.initial_interval", Kind: Duration, Usage: "first wait before retrying a transient failure"},
	Setting{Key: "worker.retry.multiplier", Kind: Float, Usage: "growth of the wait after each attempt (1 or more)"},
	Setting{Key: "worker.retry.max_interval", Kind: Duration, Usage: "longest single wait between attempts"},
	Setting{Key: "worker.retry.max_elapsed_time", Kind: Duration, Usage: "retry budget of one event before it is dead-lettered"},
	Setting{Key: "worker.max_in_flight", Kind: Int, Usage: "events applied at once by this process, across its partitions"},
	Setting{Key: "worker.partition_buffer", Kind: Int, Usage: "records of one partition read but not finished before it is no longer read (back-pressure)"},
	Setting{Key: "worker.partition_buffer_bytes", Kind: Int, Usage: "bytes of those records (keys, values, headers) before it is no longer read"},
	Setting{Key: "worker.max_calls_per_second", Kind: Float, Usage: "calls to the Contacts API per second at most, this process (0: no cap)"},
	Setting{Key: "worker.rate_limit.max_pause", Kind: Duration, Usage: "longest pause of every call a Retry-After (429, 503) asks for"},
	Setting{Key: "worker.ordering", Kind: String, Usage: "what is applied one at a time: key (each contact; contacts concurrently) or partition"},
	Setting{Key: "worker.outage.window", Kind: Duration, Usage: "API fault detection: how far back the contacts' answers are counted"},
	Setting{Key: "worker.outage.failure_ratio", Kind: Float, Usage: "API fault detection: share of the contacts called (0-1) failing that makes a fault of the API"},
	Setting{Key: "worker.outage.min_contacts", Kind: Int, Usage: "API fault detection: fewest distinct failing contacts that make a fault of the API"},
	Setting{Key: "worker.outage.probe_interval", Kind: Duration, Usage: "during an outage, one Contacts API call per this interval tests it"},
	Setting{Key: "worker.stale_guard.horizon", Kind: Duration, Usage: "how long a contact's state is kept after its last change (the state topic's retention.ms); at least the DLQ's retention"},
	Setting{Key: "worker.stale_guard.max_clock_skew", Kind: Duration, Usage: "how far an event's timestamp may be ahead of its arrival; beyond, it is invalid"},
	Setting{Key: "worker.replay.dlq", Kind: Bool, Usage: "replay dead-lettered events to the events topic, then exit"},
	Setting{Key: "worker.dlq_summary", Kind: Bool, Usage: "print a summary of the DLQ (per kind, event type and error; age; parked contacts; what a routine replay would read), then exit; read only"},
	Setting{Key: "worker.output", Kind: String, Usage: "format of --dlq-summary: json or table"},
	Setting{Key: "worker.replay.group_id", Kind: String, Usage: "consumer group remembering the replay position"},
	Setting{Key: "worker.replay.from_beginning", Kind: Bool, Usage: "replay: ignore the remembered position, read the whole DLQ"},
	Setting{Key: "worker.replay.event_type", Kind: StringList, Usage: "replay: only these event types (repeatable or comma-separated)"},
	Setting{Key: "worker.replay.event_id", Kind: StringList, Usage: "replay: only these event ids (repeatable or comma-separated)"},
	Setting{Key: "worker.replay.error_kind", Kind: StringList, Usage: "replay: only these kinds: transient, permanent, invalid, parked, unsupported"},
	Setting{Key: "worker.replay.since", Kind: String, Usage: "replay: only records dead-lettered at or after this RFC 3339 time"},
	Setting{Key: "worker.replay.until", Kind: String, Usage: "replay: only records dead-lettered before this RFC 3339 time"},
	Setting{Key: "worker.replay.contact_id", Kind: StringList, Usage: "replay: release these parked contacts: replay each one's dead-lettered head and parked events, in order"},
	Setting{Key: "worker.replay.contact_id_file", Kind: String, Usage: "replay: release the parked contacts listed in this file, one id a line (any id, commas included; - reads standard input)"},
	Setting{Key: "worker.replay.discard_event_id", Kind: String, Usage: "replay with --replay-contact-id: never apply this head event; release what follows it"},
	Setting{Key: "worker.replay.accept_lost", Kind: Bool, Usage: "replay with --replay-contact-id: release even when records of the contact whose value is gone (value_gone) cannot be put back; they are reported lost"},
	Setting{Key: "worker.replay.list_parked", Kind: Bool, Usage: "replay: list the parked contacts (head event, count) and exit"},
	Setting{Key: "worker.replay.actor", Kind: String, Usage: "replay: who runs it, for the summary line (default: $USER@host)"},
	Setting{Key: "worker.replay.limit", Kind: Int, Usage: "replay: at most this many records (0: no limit)"},
	Setting{Key: "worker.replay.dry_run", Kind: Bool, Usage: "replay: print what would be replayed, move and commit nothing"},
	Setting{Key: "worker.replay.max_count", Kind: Int, Usage: "replay loop guard: hold records already replayed this many times"},
	Setting{Key: "worker.replay.rate", Kind: Float, Usage: "replay: records per second at most (0: no limit)"},
	Setting{Key: "worker.http_addr", Kind: String, Usage: "address of /healthz, /readyz and /metrics"},
	Setting{Key: "worker.pprof_addr", Kind: String, Usage: "listen address of Go's /debug/pprof endpoints, on their own port (empty: off)"},
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
	w := c.Fleet
	if err := ss.Required("worker.group_id", w.GroupID == ""); err != nil {
		return err
	}
	if st := c.StateTopic(); st == c.Kafka.Topic || st == c.Kafka.DLQTopic || st == c.Kafka.ParkedTopic {
		return ss.Invalid("kafka.state_topic", "%q must differ from the events, dead-letter and former parked topics", st)
	}
	if len(c.StateTopic()) > 249 {
		return ss.Invalid("kafka.state_topic", "%q is longer than Kafka's 249 characters: name it", c.StateTopic())
	}
	if c.Kafka.ParkedTopic == c.Kafka.Topic || c.Kafka.ParkedTopic == c.Kafka.DLQTopic {
		return ss.Invalid("kafka.parked_topic", "must differ from the events and dead-letter topics")
	}
	if w.Output != "json" && w.Output != "table" {
		return ss.Invalid("worker.output", "%q is not json or table", w.Output)
	}
	if w.Replay.DLQ || w.DLQSummary {
		return w.Replay.validate(ss) // a replay never calls the Contacts API
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
	if w.MaxInFlight < 1 || w.MaxInFlight > 100000 {
		return ss.Invalid("worker.max_in_flight", "%d is not between 1 and 100000", w.MaxInFlight)
	}
	if w.PartitionBuffer < 1 || w.PartitionBuffer > 1000000 {
		return ss.Invalid("worker.partition_buffer", "%d is not between 1 and 1000000", w.PartitionBuffer)
	}
	if w.PartitionBufferBytes < 1<<20 {
		return ss.Invalid("worker.partition_buffer_bytes", "%d is less than 1 MiB", w.PartitionBufferBytes)
	}
	if w.MaxCallsPerSecond < 0 {
		return ss.Invalid("worker.max_calls_per_second", "%v is negative", w.MaxCallsPerSecond)
	}
	if w.Ordering != OrderingKey && w.Ordering != OrderingPartition {
		return ss.Invalid("worker.ordering", "%q is not %s or %s", w.Ordering, OrderingKey, OrderingPartition)
	}
	if w.Outage.MinContacts < 1 {
		return ss.Invalid("worker.outage.min_contacts", "%d is less than 1", w.Outage.MinContacts)
	}
	if w.Outage.FailureRatio <= 0 || w.Outage.FailureRatio > 1 {
		return ss.Invalid("worker.outage.failure_ratio", "%v is not in (0, 1]", w.Outage.FailureRatio)
	}
	if w.StaleGuard.Horizon < c.Kafka.DLQRetention {
		return ss.Invalid("worker.stale_guard.horizon", "%v is shorter than %s %v: a DLQ copy replayed after its contact's state expired would overwrite newer data", w.StaleGuard.Horizon, ss.Lookup("kafka.dlq_retention").Env(), c.Kafka.DLQRetention)
	}
	return positive(ss, map[string]time.Duration{
		"worker.stale_guard.horizon": w.StaleGuard.Horizon, "worker.stale_guard.max_clock_skew": w.StaleGuard.MaxClockSkew,
		"worker.shutdown_timeout": w.ShutdownTimeout, "worker.contacts_api_timeout": w.ContactsAPITimeout,
		"worker.retry.initial_interval": w.Retry.InitialInterval,
		"worker.retry.max_interval":     w.Retry.MaxInterval, "worker.retry.max_elapsed_time": w.Retry.MaxElapsedTime,
		"worker.outage.window": w.Outage.Window, "worker.outage.probe_interval": w.Outage.ProbeInterval,
		"worker.rate_limit.max_pause": w.RateLimit.MaxPause,
	})
}

func (r Replay) validate(ss Settings) error {
	if err := ss.Required("worker.replay.group_id", r.GroupID == ""); err != nil {
		return err
	}
	for _, k := range r.ErrorKinds {
		if k != "transient" && k != "permanent" && k != "invalid" && k != "parked" && k != "unsupported" {
			return ss.Invalid("worker.replay.error_kind", "%q is not transient, permanent, invalid, parked or unsupported", k)
		}
	}
	if r.DiscardEventID != "" && len(r.ContactIDs) != 1 {
		return ss.Invalid("worker.replay.discard_event_id", "needs exactly one contact (--replay-contact-id), whose head it is")
	}
	since, until, err := r.Window()
	var we windowError
	if errors.As(err, &we) {
		return ss.Invalid(we.key, "%v", err)
	}
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		return ss.Invalid("worker.replay.until", "%s is not after %s", r.Until, r.Since)
	}
	if r.Limit < 0 {
		return ss.Invalid("worker.replay.limit", "%d is negative", r.Limit)
	}
	if r.MaxCount < 1 {
		return ss.Invalid("worker.replay.max_count", "%d is less than 1", r.MaxCount)
	}
	if r.Rate < 0 || r.Rate > 1e6 {
		return ss.Invalid("worker.replay.rate", "%v is not between 0 and 1000000 records per second", r.Rate)
	}
	return nil
}

// windowError names the bound of the replay window that does not parse.
type windowError struct {
	key, raw string
}

func (e windowError) Error() string { return fmt.Sprintf("%q is not an RFC 3339 time", e.raw) }

// Window returns Since and Until parsed; a zero time is an open bound.
func (r Replay) Window() (since, until time.Time, err error) {
	parse := func(key, raw string) (time.Time, error) {
		if raw == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339Nano, raw)
		if err != nil {
			return time.Time{}, windowError{key: key, raw: raw}
		}
		return t, nil
	}
	if since, err = parse("worker.replay.since", r.Since); err != nil {
		return
	}
	until, err = parse("worker.replay.until", r.Until)
	return
}

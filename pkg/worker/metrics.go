package worker

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/acmecrm/integration-service/pkg/contacts"
)

// Metrics are the worker's Prometheus metrics.
type Metrics struct {
	events             *prometheus.CounterVec
	retries            *prometheus.CounterVec
	deadLettered       *prometheus.CounterVec
	applyDuration      *prometheus.HistogramVec
	lag                *prometheus.GaugeVec
	dlqPublishFailures prometheus.Counter
	inFlight           prometheus.Gauge
	buffered           *prometheus.GaugeVec
	watermarkLag       *prometheus.GaugeVec
	outage             prometheus.Gauge
	outages            prometheus.Counter
	skipped            prometheus.Counter
	parked             prometheus.Gauge
	parkedEvents       prometheus.Counter
	stateWriteFailures prometheus.Counter
	forwardFailures    prometheus.Counter
	replayed           prometheus.Counter
	dlqRecords         prometheus.Gauge
	dlqUnreplayed      prometheus.Gauge
	eventAge           *prometheus.HistogramVec
	oldestUnfinished   *prometheus.GaugeVec
	contacts           prometheus.Gauge
	stateLoad          prometheus.Histogram
	stateSkipped       *prometheus.CounterVec
	fault              *prometheus.GaugeVec
	calls              *prometheus.CounterVec
	concurrencyLimit   prometheus.Gauge
	pace               prometheus.Gauge
	pauses             prometheus.Counter
	// paused returns the seconds calls are still paused for: the call
	// gate's, once it exists.
	paused atomic.Pointer[func() float64]
	// oldestParked returns when the contact parked the longest was
	// parked: the state store's, once it exists.
	oldestParked atomic.Pointer[func() time.Time]
}

// NewMetrics registers the worker's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "worker_events_total", Help: "Events processed, by event type and outcome (applied, dead_lettered, parked, stale, discarded, forwarded, abandoned).",
		}, []string{"event_type", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "worker_retries_total", Help: "Retries of transient Contacts API failures, by event type.",
		}, []string{"event_type"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "worker_dead_lettered_total", Help: "Events dead-lettered, by kind (transient, permanent, invalid, parked).",
		}, []string{"kind"}),
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "worker_apply_duration_seconds", Help: "Time to apply an event to the Contacts API, retries included, by event type.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 15, 60, 180},
		}, []string{"event_type"}),
		eventAge: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "worker_event_age_seconds", Help: "Age of an event when it was finished (applied, dead-lettered, parked, stale, discarded): from the gateway's received_at (else the record's timestamp), by event type and outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400},
		}, []string{"event_type", "outcome"}),
		oldestUnfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "worker_oldest_unfinished_age_seconds", Help: "Age of the oldest record of the partition read but not finished (from the record's timestamp, which the gateway sets when it enqueues), 0 when none; per partition this member holds, set every 500 ms. It grows while the Contacts API holds events (an outage) or reading waits.",
		}, []string{"topic", "partition"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "worker_consumer_lag", Help: "Records between the partition's watermark (the offset committed next) and its high-water mark, per partition this member holds.",
		}, []string{"topic", "partition"}),
		dlqPublishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_dlq_publish_failures_total", Help: "Failed attempts to publish a dead-letter record (each is retried).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_events_in_flight", Help: "Calls to the Contacts API in flight now in this process (at most worker_contacts_api_concurrency_limit, itself at most WORKER_MAX_IN_FLIGHT); an event waiting between retries holds none.",
		}),
		buffered: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "worker_partition_buffered_records", Help: "Records read and not yet finished (waiting for their contact or being applied), per partition held (at most WORKER_PARTITION_BUFFER).",
		}, []string{"topic", "partition"}),
		watermarkLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "worker_watermark_lag", Help: "Records read but not yet committable: from the partition's watermark (lowest unfinished offset) to the next offset to read.",
		}, []string{"topic", "partition"}),
		outage: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_contacts_api_outage", Help: "1 during a fault of the Contacts API as a whole (no new records taken, one probe per interval, nothing dead-lettered), else 0; worker_contacts_api_fault names its cause.",
		}),
		outages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_contacts_api_outages_total", Help: "Faults of the Contacts API as a whole detected.",
		}),
		fault: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "worker_contacts_api_fault", Help: "1 for the cause of the current fault of the Contacts API as a whole (unavailable, credentials_refused, redirected, not_found), 0 for the others.",
		}, []string{"cause"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "worker_contacts_api_calls_total", Help: "Calls to the Contacts API by result: ok, gone (a DELETE answered 404 or 410), or the failure's cause (unavailable, rate_limited, credentials_refused, redirected, not_found, rejected).",
		}, []string{"result"}),
		concurrencyLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_contacts_api_concurrency_limit", Help: "Calls to the Contacts API this process allows in flight now: cut on 429s, grown with successes, between 1 and WORKER_MAX_IN_FLIGHT.",
		}),
		pace: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_contacts_api_pace_per_second", Help: "Calls per second this process paces its calls to the Contacts API at since the API slowed it down (0: not paced).",
		}),
		pauses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_contacts_api_pauses_total", Help: "Pauses of every call the Contacts API asked for (Retry-After on a 429 or 503).",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_events_skipped_total", Help: "Records not applied again on taking a partition over, because the commit's metadata says they were finished.",
		}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_parked_contacts", Help: "Contacts parked behind a dead-lettered event, in the partitions this member holds.",
		}),
		parkedEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_parked_events_total", Help: "Events written to the DLQ behind their contact's unresolved dead-lettered event, not applied.",
		}),
		stateWriteFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_state_write_failures_total", Help: "Failed writes of contacts' states to the state topic (each is retried).",
		}),
		forwardFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_forward_failures_total", Help: "Failed attempts to forward a record to the partition its key belongs to (each is retried).",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_replayed_events_total", Help: "Records processed that a DLQ replay put back (dlq_replay_count above 0).",
		}),
		dlqRecords: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_dlq_records", Help: "Records the dead-letter topic retains (newest minus oldest offset, all partitions), read every 30 s.",
		}),
		dlqUnreplayed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_dlq_unreplayed_records", Help: "Records of the dead-letter topic the routine replay group (WORKER_REPLAY_GROUP_ID) has not read yet: what a routine --replay-dlq would read now, all partitions, read every 30 s.",
		}),
		contacts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_state_contacts", Help: "Contacts whose state (newest event applied, parking) this member holds in memory, in the partitions it holds.",
		}),
		stateLoad: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "worker_state_load_duration_seconds", Help: "Time to rebuild an assigned partition's contact states from the state topic.",
			Buckets: []float64{.01, .05, .1, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		stateSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "worker_state_records_skipped_total", Help: "State records skipped while rebuilding: unreadable, or foreign (another events topic or consumer group).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.events, m.retries, m.deadLettered, m.applyDuration, m.lag, m.dlqPublishFailures,
		m.inFlight, m.buffered, m.watermarkLag, m.outage, m.outages, m.skipped, m.parked, m.parkedEvents, m.stateWriteFailures, m.forwardFailures,
		m.replayed, m.dlqRecords, m.dlqUnreplayed, m.eventAge, m.oldestUnfinished, m.contacts, m.stateLoad, m.stateSkipped, m.fault, m.calls, m.concurrencyLimit, m.pace, m.pauses,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "worker_contacts_api_pause_seconds", Help: "Seconds every call to the Contacts API is still paused for, as the API asked (Retry-After, capped by WORKER_RATE_LIMIT_MAX_PAUSE); 0 when not paused.",
		}, func() float64 {
			if f := m.paused.Load(); f != nil {
				return (*f)()
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "worker_parked_oldest_age_seconds", Help: "Seconds since the contact parked the longest (in the partitions this member holds) was parked; 0 when none is. Its head's DLQ copy expires with the DLQ's retention: release or discard it before.",
		}, func() float64 {
			if f := m.oldestParked.Load(); f != nil {
				if at := (*f)(); !at.IsZero() {
					return max(0, time.Since(at).Seconds())
				}
			}
			return 0
		}))
	for _, c := range contacts.Causes {
		m.calls.WithLabelValues(string(c))
		if apiWide(c) {
			m.fault.WithLabelValues(string(c))
		}
	}
	m.calls.WithLabelValues("ok")
	m.calls.WithLabelValues("gone")
	for _, reason := range []string{"unreadable", "foreign"} {
		m.stateSkipped.WithLabelValues(reason) // exported at 0 from the start
	}
	return m
}

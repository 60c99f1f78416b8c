package worker

import "github.com/prometheus/client_golang/prometheus"

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
	contacts           prometheus.Gauge
	stateLoad          prometheus.Histogram
	stateSkipped       *prometheus.CounterVec
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
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "worker_consumer_lag", Help: "Records between the partition's watermark (the offset committed next) and its high-water mark, per partition this member holds.",
		}, []string{"topic", "partition"}),
		dlqPublishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_dlq_publish_failures_total", Help: "Failed attempts to publish a dead-letter record (each is retried).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_events_in_flight", Help: "Events being applied now by this process (at most WORKER_MAX_IN_FLIGHT).",
		}),
		buffered: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "worker_partition_buffered_records", Help: "Records read and not yet finished (waiting for their contact or being applied), per partition held (at most WORKER_PARTITION_BUFFER).",
		}, []string{"topic", "partition"}),
		watermarkLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "worker_watermark_lag", Help: "Records read but not yet committable: from the partition's watermark (lowest unfinished offset) to the next offset to read.",
		}, []string{"topic", "partition"}),
		outage: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "worker_contacts_api_outage", Help: "1 while the Contacts API is taken to be out for everyone (no new records taken, nothing dead-lettered by elapsed time), else 0.",
		}),
		outages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_contacts_api_outages_total", Help: "Outages of the Contacts API detected.",
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
		m.replayed, m.dlqRecords, m.contacts, m.stateLoad, m.stateSkipped)
	for _, reason := range []string{"unreadable", "foreign"} {
		m.stateSkipped.WithLabelValues(reason) // exported at 0 from the start
	}
	return m
}

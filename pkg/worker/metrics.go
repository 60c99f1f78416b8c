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
}

// NewMetrics registers the worker's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "worker_events_total", Help: "Events processed, by event type and outcome (applied, dead_lettered, abandoned).",
		}, []string{"event_type", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "worker_retries_total", Help: "Retries of transient Contacts API failures, by event type.",
		}, []string{"event_type"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "worker_dead_lettered_total", Help: "Events dead-lettered, by kind (transient, permanent, invalid).",
		}, []string{"kind"}),
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "worker_apply_duration_seconds", Help: "Time to apply an event to the Contacts API, retries included, by event type.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 15, 60, 180},
		}, []string{"event_type"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "worker_consumer_lag", Help: "Records behind the high-water mark, per partition this member holds.",
		}, []string{"topic", "partition"}),
		dlqPublishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "worker_dlq_publish_failures_total", Help: "Failed attempts to publish a dead-letter record (each is retried).",
		}),
	}
	reg.MustRegister(m.events, m.retries, m.deadLettered, m.applyDuration, m.lag, m.dlqPublishFailures)
	return m
}

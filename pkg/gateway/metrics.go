package gateway

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/ops"
	"github.com/acmecrm/integration-service/pkg/telemetry"
)

// latencyBuckets span a loopback acknowledgement (about a millisecond) to
// the enqueue timeout.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics are the gateway's Prometheus metrics.
type Metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	inFlight       prometheus.Gauge
	enqueue        *prometheus.HistogramVec
	producerErrors prometheus.Counter
	accepted       *prometheus.CounterVec
	rejections     *prometheus.CounterVec
	overloaded     prometheus.Counter
	inflightBytes  prometheus.Gauge

	// The children of requests and duration by their labels, looked up
	// once: WithLabelValues hashes the labels and locks on every call.
	mu     sync.RWMutex
	series map[seriesKey]series
	// acked and failed are the children of enqueue.
	acked, failed prometheus.Observer
}

type seriesKey struct {
	route, method string
	status        int
}

type series struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// seriesOf returns the request metrics of route, method and status.
func (m *Metrics) seriesOf(route, method string, status int) series {
	k := seriesKey{route, method, status}
	m.mu.RLock()
	s, ok := m.series[k]
	m.mu.RUnlock()
	if ok {
		return s
	}
	s = series{m.requests.WithLabelValues(route, method, strconv.Itoa(status)), m.duration.WithLabelValues(route)}
	m.mu.Lock()
	m.series[k] = s
	m.mu.Unlock()
	return s
}

// methodLabel is method when it is a standard one, else "other": a
// sender choosing methods must not choose how many series there are.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

// NewMetrics registers the gateway's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gateway_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: latencyBuckets,
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_http_requests_in_flight", Help: "HTTP requests being served.",
		}),
		enqueue: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gateway_enqueue_duration_seconds", Help: "Time from handing a record to the producer to Kafka's acks=all answer, by outcome.",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_events_accepted_total", Help: "Events enqueued (answered 202), by event_type: types the worker does not know yet show here first.",
		}, []string{"event_type"}),
		producerErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_producer_errors_total", Help: "Records Kafka did not acknowledge in time or refused (answered 503).",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_webhook_auth_failures_total", Help: "Webhooks rejected with 401, by reason.",
		}, []string{"reason"}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_overloaded_total", Help: "Webhooks answered 503 because the bodies in flight filled GATEWAY_MAX_INFLIGHT_BYTES.",
		}),
		inflightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_inflight_body_bytes", Help: "Bytes of bodies reserved by the requests being served (at most GATEWAY_MAX_INFLIGHT_BYTES).",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inFlight, m.enqueue, m.producerErrors, m.accepted, m.rejections, m.overloaded, m.inflightBytes)
	m.series = map[seriesKey]series{}
	m.acked, m.failed = m.enqueue.WithLabelValues("acked"), m.enqueue.WithLabelValues("failed")
	return m
}

func (m *Metrics) enqueued(d time.Duration, err error) {
	if err != nil {
		m.producerErrors.Inc()
		m.failed.Observe(d.Seconds())
		return
	}
	m.acked.Observe(d.Seconds())
}

func (m *Metrics) rejected(reason string) { m.rejections.WithLabelValues(reason).Inc() }

// Observe is middleware that traces (requestSpan), counts and times every
// request and writes one access-log line with the request id, the trace id
// and, once known, the event id.
func (m *Metrics) Observe(log zerolog.Logger, tracing telemetry.Tracing) echo.MiddlewareFunc {
	tracer := tracing.Tracer("github.com/acmecrm/integration-service/pkg/gateway")
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			m.inFlight.Inc()
			defer m.inFlight.Dec()
			start := time.Now()
			span := requestSpan(c, tracing, tracer)
			err := next(c)
			if err != nil {
				c.Error(err) // render it now so the status below is the one sent
			}
			defer endRequestSpan(span, c.Response().Status)
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			status := c.Response().Status
			elapsed := time.Since(start)
			series := m.seriesOf(route, methodLabel(c.Request().Method), status)
			series.requests.Inc()
			series.duration.Observe(elapsed.Seconds())

			if route == ops.HealthPath || route == ops.ReadyPath || route == ops.MetricsPath {
				return nil // probes and scrapes would drown the log
			}
			ev := log.Info()
			if status >= 500 {
				ev = log.Error()
			} else if status >= 400 {
				ev = log.Warn()
			}
			ev = ev.Str("request_id", c.Response().Header().Get(echo.HeaderXRequestID)).
				Str("method", c.Request().Method).Str("path", c.Request().URL.Path).
				Int("status", status).Dur("latency", elapsed).Str("remote", c.RealIP())
			if id, ok := c.Get(ctxEventID).(string); ok && id != "" {
				ev = ev.Str("event_id", id)
			}
			if traceID, spanID := telemetry.IDs(c.Request().Context()); traceID != "" {
				ev = ev.Str("trace_id", traceID).Str("span_id", spanID)
			}
			if reason, ok := c.Get(ctxReason).(string); ok {
				ev = ev.Str("reason", reason)
			}
			if e, ok := c.Get(ctxError).(error); ok {
				ev = ev.AnErr("kafka_error", e)
			}
			ev.Msg("request")
			return nil
		}
	}
}

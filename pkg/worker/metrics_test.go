package worker

import (
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/acmecrm/integration-service/tests/metricsdoc"
)

// docs/worker.md lists the worker's metrics: exactly those it registers.
func TestMetricsAreTheDocumentedOnes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	// Vectors appear once they have a child.
	m.events.WithLabelValues("t", "o")
	m.retries.WithLabelValues("t")
	m.deadLettered.WithLabelValues("k")
	m.applyDuration.WithLabelValues("t")
	m.lag.WithLabelValues("t", "0")
	m.buffered.WithLabelValues("t", "0")
	m.watermarkLag.WithLabelValues("t", "0")
	m.eventAge.WithLabelValues("t", "o")
	m.oldestUnfinished.WithLabelValues("t", "0")
	metricsdoc.Check(t, "../../docs/worker.md", regexp.MustCompile("(?m)^\\| `(worker_[a-z_]+)"), reg)
}

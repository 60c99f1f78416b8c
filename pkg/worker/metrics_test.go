package worker

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// docs/worker.md lists the worker's metrics: exactly those it registers.
func TestMetricsAreTheDocumentedOnes(t *testing.T) {
	doc, err := os.ReadFile("../../docs/worker.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(worker_[a-z_]+)").FindAllSubmatch(doc, -1) {
		documented = append(documented, string(m[1]))
	}
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
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var registered []string
	for _, f := range families {
		registered = append(registered, f.GetName())
	}
	slices.Sort(documented)
	slices.Sort(registered)
	if !slices.Equal(documented, registered) {
		t.Errorf("docs/worker.md lists %v,\nthe worker registers %v", documented, registered)
	}
}

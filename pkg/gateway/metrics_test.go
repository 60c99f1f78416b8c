package gateway

import (
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/acmecrm/integration-service/tests/metricsdoc"
)

// docs/gateway.md names the gateway's metrics: exactly those it registers.
func TestMetricsAreTheDocumentedOnes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	// Vectors appear once they have a child.
	m.seriesOf("/webhooks/acmecrm", "POST", 202)
	m.rejected("signature_mismatch")
	m.accepted.WithLabelValues("contact.created")
	metricsdoc.Check(t, "../../docs/gateway.md", regexp.MustCompile("`(gateway_[a-z_]+)"), reg)
}

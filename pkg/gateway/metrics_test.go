package gateway

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// docs/gateway.md names the gateway's metrics: exactly those it registers.
func TestMetricsAreTheDocumentedOnes(t *testing.T) {
	doc, err := os.ReadFile("../../docs/gateway.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("`(gateway_[a-z_]+)").FindAllSubmatch(doc, -1) {
		if !slices.Contains(documented, string(m[1])) {
			documented = append(documented, string(m[1]))
		}
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	// Vectors appear once they have a child.
	m.seriesOf("/webhooks/acmecrm", "POST", 202)
	m.rejected("signature_mismatch")
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
		t.Errorf("docs/gateway.md names %v,\nthe gateway registers %v", documented, registered)
	}
}

// Package metricsdoc is for tests: it checks that a document names exactly
// the metrics a registry holds, so that what the docs promise is what the
// binaries export.
package metricsdoc

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Check fails t unless the names name matches in the file doc (its first
// group) are exactly the metric families reg gathers. Vectors must have a
// child to be gathered.
func Check(t testing.TB, doc string, name *regexp.Regexp, reg *prometheus.Registry) {
	t.Helper()
	text, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range name.FindAllSubmatch(text, -1) {
		if !slices.Contains(documented, string(m[1])) {
			documented = append(documented, string(m[1]))
		}
	}
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
		t.Errorf("%s names %v,\nthe binary registers %v", doc, documented, registered)
	}
}

package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/acmecrm/integration-service/pkg/gateway"
	"github.com/acmecrm/integration-service/pkg/worker"
)

func withObservability() map[string]any {
	return with(map[string]any{"metrics": map[string]any{
		"grafanaDashboard": map[string]any{"enabled": true, "annotations": map[string]any{"grafana_folder": "Contacts"}},
		"prometheusRule":   map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
	}})
}

// descRecorder is a Registerer that records the names of what is
// registered, series or not.
type descRecorder map[string]bool

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 32)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r[m[1]] = true
		}
	}
	return nil
}

func (r descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r descRecorder) Unregister(prometheus.Collector) bool { return false }

// exported are the metric names the binaries export (a histogram's
// _bucket, _sum and _count series too), and the ones of other exporters
// the dashboard and the rules may use.
func exported() map[string]bool {
	names := descRecorder{}
	gateway.NewMetrics(names)
	worker.NewMetrics(names)
	for n := range names {
		if strings.HasSuffix(n, "_seconds") {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[n+s] = true
			}
		}
	}
	for _, n := range []string{"kube_deployment_status_replicas_available", "kube_deployment_spec_replicas", "kube_job_status_failed"} {
		names[n] = true // kube-state-metrics
	}
	names["up"] = true // Prometheus, per scrape target
	return names
}

var (
	selector = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)
	ours     = regexp.MustCompile(`\b((?:gateway|worker)_[a-z_]+)`)
)

// checkMetricNames fails for a metric in expr the binaries do not export.
func checkMetricNames(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	found := 0
	for _, m := range append(selector.FindAllStringSubmatch(expr, -1), ours.FindAllStringSubmatch(expr, -1)...) {
		if m[1] == "job" || m[1] == "gateway_job" || m[1] == "worker_job" {
			continue
		}
		found++
		if !known[m[1]] {
			t.Errorf("%s: %s is not a metric the binaries (or kube-state-metrics) export: %s", where, m[1], expr)
		}
	}
	if found == 0 {
		t.Errorf("%s: no metric in %s", where, expr)
	}
}

func TestGrafanaDashboard(t *testing.T) {
	m := mustRender(t, withObservability())
	cm := m.configMaps["dashboard"]
	if cm == nil {
		t.Fatal("no dashboard ConfigMap")
	}
	if cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "Contacts" {
		t.Errorf("labels %v, annotations %v: want the sidecar's grafana_dashboard: \"1\" and the folder annotation", cm.Labels, cm.Annotations)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["acme-integration.json"]), &dash); err != nil || dash.UID == "" {
		t.Fatalf("the dashboard is not JSON with a uid: %v", err)
	}
	known := exported()
	var titles []string
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkMetricNames(t, "panel "+p.Title, tg.Expr, known)
		}
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{"Webhooks answered, by status", "Rejected webhooks (401), by reason", "Enqueue latency (acks=all)", "503s, by cause",
		"Events, by type and outcome", "Retries, by type", "Dead-lettered, by kind", "Apply latency, by type", "Consumer lag, per partition",
		"DLQ and replays", "Pods ready"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q", want)
		}
	}
}

// runbookAnchors are the GitHub anchors of docs/runbook.md's headings.
func runbookAnchors(t *testing.T) map[string]bool {
	doc, err := os.ReadFile("../../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			h = strings.ToLower(strings.TrimSpace(strings.TrimLeft(h, "#")))
			h = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(h, "")
			anchors[strings.ReplaceAll(h, " ", "-")] = true
		}
	}
	return anchors
}

func TestPrometheusRule(t *testing.T) {
	m := mustRender(t, withObservability())
	if len(m.rules) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(m.rules))
	}
	rule := m.rules[0]
	if rule.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("labels %v lack the selector label given", rule.Labels)
	}
	known, anchors := exported(), runbookAnchors(t)
	var alerts []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			checkMetricNames(t, r.Alert, r.Expr.String(), known)
			url, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "#")
			if !strings.HasSuffix(url, "docs/runbook.md") || !anchors[anchor] {
				t.Errorf("%s: runbook_url %q is not a section of docs/runbook.md", r.Alert, r.Annotations["runbook_url"])
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: no severity, summary or description", r.Alert)
			}
			if !strings.Contains(r.Expr.String(), `namespace="contacts"`) {
				t.Errorf("%s: not limited to the release's namespace: %s", r.Alert, r.Expr.String())
			}
		}
	}
	want := []string{"AcmeGatewayNotReady", "AcmeGateway503Ratio", "AcmeWebhookSignatureFailures", "AcmeWorkerNotReady",
		"AcmeConsumerLagGrowing", "AcmeDataStale", "AcmeDLQNotReplayed", "AcmeWorkerWriteFailures", "AcmeParkedContacts", "AcmeParkedNearDLQRetention", "AcmeContactsAPIOutage",
		"AcmeContactsAPICredentialsRefused", "AcmeContactsAPIMisconfigured", "AcmeWorkerNotConsuming", "AcmeScrapeTargetDown", "AcmeKubeStateMetricsAbsent"}
	if !slices.Equal(alerts, want) {
		t.Errorf("alerts %v, want %v", alerts, want)
	}

	// A component turned off has no alerts.
	off := mustRender(t, with(map[string]any{"gateway": map[string]any{"enabled": false}, "metrics": map[string]any{"prometheusRule": map[string]any{"enabled": true}}}))
	for _, g := range off.rules[0].Spec.Groups {
		if strings.Contains(g.Name, "gateway") {
			t.Errorf("gateway disabled, yet group %s", g.Name)
		}
	}

	if testing.Short() {
		return
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: make test installs it (Debian package prometheus)")
	}
	dir := t.TempDir()
	groups, err := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, groups, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	// The unit tests check when each alert fires (promtool would compare
	// the annotations too: they are checked above, not repeated there).
	bare := rule.Spec.DeepCopy()
	for i := range bare.Groups {
		for j := range bare.Groups[i].Rules {
			bare.Groups[i].Rules[j].Annotations = nil
		}
	}
	if groups, err = yaml.Marshal(map[string]any{"groups": bare.Groups}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yaml"), groups, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := filepath.Join(dir, "rules_test.yaml")
	if err := os.WriteFile(tests, []byte(alertTests), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", tests).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// alertTests are promtool unit tests of the rules as rendered for release
// acme in namespace contacts: each alert fires on the series it is about,
// and not on healthy ones.
var alertTests = fmt.Sprintf(`rule_files: [alerts.yaml]
evaluation_interval: 1m
tests:
  # The gateway: 10%% of webhooks answered 503; signature failures at 20%%.
  - interval: 1m
    input_series:
      - series: 'gateway_http_requests_total{%[1]s,route="/webhooks/acmecrm",status="202"}'
        values: '0+540x20'
      - series: 'gateway_http_requests_total{%[1]s,route="/webhooks/acmecrm",status="503"}'
        values: '0+60x20'
      - series: 'gateway_webhook_auth_failures_total{%[1]s,reason="signature_mismatch"}'
        values: '0+120x20'
      - series: 'kube_deployment_status_replicas_available{namespace="contacts",deployment="acme-acme-integration-gateway"}'
        values: '2x5 0x10'
      - series: 'kube_deployment_spec_replicas{namespace="contacts",deployment="acme-acme-integration-gateway"}'
        values: '2x20'
    alert_rule_test:
      - {eval_time: 4m, alertname: AcmeGateway503Ratio}
      - eval_time: 12m
        alertname: AcmeGateway503Ratio
        exp_alerts:
          - exp_labels: {severity: warning}
      - eval_time: 20m
        alertname: AcmeWebhookSignatureFailures
        exp_alerts:
          - exp_labels: {severity: warning}
      - {eval_time: 6m, alertname: AcmeGatewayNotReady}
      - eval_time: 10m
        alertname: AcmeGatewayNotReady
        exp_alerts:
          - exp_labels: {severity: critical}
  # The worker: lag above 1000 and growing; a dead letter; an outage.
  - interval: 1m
    input_series:
      - series: 'worker_consumer_lag{%[2]s,topic="contact-events",partition="0"}'
        values: '500+100x30'
      - series: 'worker_dlq_unreplayed_records{%[2]s}'
        values: '0x10 1x20 0x5'
      - series: 'worker_oldest_unfinished_age_seconds{%[2]s,topic="contact-events",partition="0"}'
        values: '0.2x5 0+60x20 0.1x10'
      - series: 'worker_contacts_api_outage{%[2]s}'
        values: '0x5 1x20'
      - series: 'worker_parked_contacts{%[2]s}'
        values: '0x100'
      - series: 'worker_parked_oldest_age_seconds{%[2]s}'
        values: '1814000+60x40'
      - series: 'kube_deployment_status_replicas_available{namespace="contacts",deployment="acme-acme-integration-worker"}'
        values: '3x30'
      - series: 'kube_deployment_spec_replicas{namespace="contacts",deployment="acme-acme-integration-worker"}'
        values: '3x30'
    alert_rule_test:
      - {eval_time: 8m, alertname: AcmeConsumerLagGrowing}
      - eval_time: 25m
        alertname: AcmeConsumerLagGrowing
        exp_alerts:
          - exp_labels: {severity: warning}
      - {eval_time: 15m, alertname: AcmeDataStale}
      - eval_time: 19m
        alertname: AcmeDataStale
        exp_alerts:
          - exp_labels: {severity: warning}
      - {eval_time: 30m, alertname: AcmeDataStale}
      - {eval_time: 20m, alertname: AcmeDLQNotReplayed}
      - eval_time: 27m
        alertname: AcmeDLQNotReplayed
        exp_alerts:
          - exp_labels: {severity: warning}
      - {eval_time: 33m, alertname: AcmeDLQNotReplayed}
      - eval_time: 15m
        alertname: AcmeContactsAPIOutage
        exp_alerts:
          - exp_labels: {severity: critical}
      - {eval_time: 90m, alertname: AcmeParkedContacts}
      - {eval_time: 12m, alertname: AcmeParkedNearDLQRetention}
      - eval_time: 20m
        alertname: AcmeParkedNearDLQRetention
        exp_alerts:
          - exp_labels: {severity: critical}
      - {eval_time: 20m, alertname: AcmeWorkerNotReady}
      - {eval_time: 20m, alertname: AcmeContactsAPICredentialsRefused}
  # A token refused at night: one call a minute, each refused, no fault
  # declared (too few contacts); a wrong base URL by day: a fault declared.
  - interval: 1m
    input_series:
      - series: 'worker_contacts_api_calls_total{%[2]s,result="credentials_refused"}'
        values: '0x5 1+1x20'
      - series: 'worker_contacts_api_calls_total{%[2]s,result="ok"}'
        values: '100x30'
      - series: 'worker_contacts_api_fault{%[2]s,cause="not_found"}'
        values: '0x5 1x10 0x10'
      - series: 'kube_deployment_spec_replicas{namespace="contacts",deployment="acme-acme-integration-worker"}'
        values: '2x30'
      - series: 'kube_deployment_status_replicas_available{namespace="contacts",deployment="acme-acme-integration-worker"}'
        values: '2x5 0x25'
    alert_rule_test:
      - {eval_time: 6m, alertname: AcmeWorkerNotReady}
      - eval_time: 10m
        alertname: AcmeWorkerNotReady
        exp_alerts:
          - exp_labels: {severity: critical}
      - {eval_time: 5m, alertname: AcmeContactsAPICredentialsRefused}
      - eval_time: 10m
        alertname: AcmeContactsAPICredentialsRefused
        exp_alerts:
          - exp_labels: {severity: critical}
      - {eval_time: 6m, alertname: AcmeContactsAPIMisconfigured}
      - eval_time: 10m
        alertname: AcmeContactsAPIMisconfigured
        exp_alerts:
          - exp_labels: {severity: critical}
      - {eval_time: 25m, alertname: AcmeContactsAPIMisconfigured}
  # KEDA scales the worker to zero (nothing to do): not an outage. Later
  # webhooks are accepted and no member processes them; a worker pod is
  # not scraped; state writes keep failing.
  - interval: 1m
    input_series:
      - series: 'kube_deployment_spec_replicas{namespace="contacts",deployment="acme-acme-integration-worker"}'
        values: '0x40'
      - series: 'kube_deployment_status_replicas_available{namespace="contacts",deployment="acme-acme-integration-worker"}'
        values: '0x40'
      - series: 'gateway_http_requests_total{%[1]s,route="/webhooks/acmecrm",status="202"}'
        values: '0x10 0+60x30'
      - series: 'worker_events_total{%[2]s,event_type="contact.updated",outcome="applied"}'
        values: '500x40'
      - series: 'up{%[2]s,instance="10.0.0.7:9090"}'
        values: '1x10 0x10 1x20'
      - series: 'worker_state_write_failures_total{%[2]s}'
        values: '0x10 0+1x30'
      - series: 'worker_dlq_publish_failures_total{%[2]s}'
        values: '0x40'
    alert_rule_test:
      - {eval_time: 30m, alertname: AcmeWorkerNotReady}
      - {eval_time: 20m, alertname: AcmeWorkerNotConsuming}
      - eval_time: 30m
        alertname: AcmeWorkerNotConsuming
        exp_alerts:
          - exp_labels: {severity: critical}
      - {eval_time: 14m, alertname: AcmeScrapeTargetDown}
      - eval_time: 17m
        alertname: AcmeScrapeTargetDown
        exp_alerts:
          - exp_labels: {severity: warning, job: acme-acme-integration-worker}
      - {eval_time: 25m, alertname: AcmeScrapeTargetDown}
      - {eval_time: 15m, alertname: AcmeWorkerWriteFailures}
      - eval_time: 25m
        alertname: AcmeWorkerWriteFailures
        exp_alerts:
          - exp_labels: {severity: warning}
`, `namespace="contacts",job="acme-acme-integration-gateway"`, `namespace="contacts",job="acme-acme-integration-worker"`)

// Package deploy checks what the platform team installs. The Helm chart in
// helm/acme-integration is linted and rendered with Helm's own library (the
// version pinned in go.mod), and the manifests are decoded strictly into
// typed Kubernetes objects; the Dockerfiles are read against the Makefile.
package deploy

import (
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/ops"
)

const chartDir = "../../helm/acme-integration"

// required are the values an install must give.
func required() map[string]any {
	return map[string]any{
		"secrets": map[string]any{"webhookSecrets": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		"worker":  map[string]any{"contactsApiUrl": "https://contacts.internal/api"},
	}
}

// with deep-merges overrides into required values.
func with(overrides map[string]any) map[string]any {
	out := required()
	merge(out, overrides)
	return out
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if d, ok := dst[k].(map[string]any); ok {
				merge(d, sub)
				continue
			}
		}
		dst[k] = v
	}
}

// manifests are the rendered objects, decoded by kind.
type manifests struct {
	deployments map[string]*appsv1.Deployment // by component
	configMaps  map[string]*corev1.ConfigMap  // by component
	services    map[string]*corev1.Service
	pdbs        map[string]*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	jobs        []*batchv1.Job
	secrets     []*corev1.Secret
	accounts    []*corev1.ServiceAccount
	monitors    []map[string]any
	rules       []*monitoringv1.PrometheusRule
	ingresses   []*networkingv1.Ingress
	routes      []*gatewayv1.HTTPRoute
	policies    map[string]*networkingv1.NetworkPolicy // by component
	scaled      []*kedav1alpha1.ScaledObject
	triggerAuth []*kedav1alpha1.TriggerAuthentication
	all         []metav1.Object
	notes       string
}

func render(t *testing.T, vals map[string]any) (*manifests, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: "v1.30.0", Major: "1", Minor: "30"}
	rv, err := chartutil.ToRenderValues(chrt, vals, chartutil.ReleaseOptions{Name: "acme", Namespace: "contacts", Revision: 1, IsInstall: true}, caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(chrt, rv)
	if err != nil {
		return nil, err
	}
	m := &manifests{deployments: map[string]*appsv1.Deployment{}, configMaps: map[string]*corev1.ConfigMap{},
		services: map[string]*corev1.Service{}, pdbs: map[string]*policyv1.PodDisruptionBudget{}, policies: map[string]*networkingv1.NetworkPolicy{}}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			m.notes = files[name]
			continue
		}
		for _, doc := range strings.Split(files[name], "\n---") {
			if strings.TrimSpace(strings.ReplaceAll(doc, "---", "")) == "" {
				continue
			}
			m.decode(t, name, []byte(doc))
		}
	}
	return m, nil
}

// decode reads one document strictly: a misspelt field fails the test.
func (m *manifests) decode(t *testing.T, file string, doc []byte) {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	strict := func(into any) {
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			t.Fatalf("%s: %s does not decode strictly: %v\n%s", file, tm.Kind, err, doc)
		}
	}
	component := func(o metav1.Object) string { return o.GetLabels()["app.kubernetes.io/component"] }
	var obj metav1.Object
	switch tm.Kind {
	case "Deployment":
		o := decodeAs[appsv1.Deployment](strict)
		m.deployments[component(o)], obj = o, o
	case "ConfigMap":
		o := decodeAs[corev1.ConfigMap](strict)
		m.configMaps[component(o)], obj = o, o
	case "Service":
		o := decodeAs[corev1.Service](strict)
		m.services[component(o)], obj = o, o
	case "PodDisruptionBudget":
		o := decodeAs[policyv1.PodDisruptionBudget](strict)
		m.pdbs[component(o)], obj = o, o
	case "HorizontalPodAutoscaler":
		o := decodeAs[autoscalingv2.HorizontalPodAutoscaler](strict)
		m.hpas, obj = append(m.hpas, o), o
	case "Job":
		o := decodeAs[batchv1.Job](strict)
		m.jobs, obj = append(m.jobs, o), o
	case "Secret":
		o := decodeAs[corev1.Secret](strict)
		m.secrets, obj = append(m.secrets, o), o
	case "ServiceAccount":
		o := decodeAs[corev1.ServiceAccount](strict)
		m.accounts, obj = append(m.accounts, o), o
	case "ServiceMonitor":
		var o map[string]any
		strict(&o)
		m.monitors = append(m.monitors, o)
	case "PrometheusRule":
		o := decodeAs[monitoringv1.PrometheusRule](strict)
		m.rules, obj = append(m.rules, o), o
	case "Ingress":
		o := decodeAs[networkingv1.Ingress](strict)
		m.ingresses, obj = append(m.ingresses, o), o
	case "HTTPRoute":
		o := decodeAs[gatewayv1.HTTPRoute](strict)
		m.routes, obj = append(m.routes, o), o
	case "NetworkPolicy":
		o := decodeAs[networkingv1.NetworkPolicy](strict)
		m.policies[component(o)], obj = o, o
	case "ScaledObject":
		o := decodeAs[kedav1alpha1.ScaledObject](strict)
		m.scaled, obj = append(m.scaled, o), o
	case "TriggerAuthentication":
		o := decodeAs[kedav1alpha1.TriggerAuthentication](strict)
		m.triggerAuth, obj = append(m.triggerAuth, o), o
	default:
		t.Fatalf("%s: unexpected kind %q", file, tm.Kind)
	}
	if obj != nil {
		m.all = append(m.all, obj)
	}
}

// decodeAs decodes strictly into a new T.
func decodeAs[T any, PT interface {
	*T
	metav1.Object
}](strict func(any)) PT {
	o := PT(new(T))
	strict(o)
	return o
}

func mustRender(t *testing.T, vals map[string]any) *manifests {
	t.Helper()
	m, err := render(t, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return m
}

func TestLint(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"defaults": required(),
		"overrides": with(map[string]any{"replay": map[string]any{"enabled": true, "id": "test"}, "serviceMonitor": map[string]any{"enabled": true},
			"metrics": map[string]any{"grafanaDashboard": map[string]any{"enabled": true}, "prometheusRule": map[string]any{"enabled": true}}}),
	} {
		caps := chartutil.KubeVersion{Version: "v1.30.0", Major: "1", Minor: "30"}
		res := lint.AllWithKubeVersion(chartDir, vals, "contacts", &caps)
		for _, msg := range res.Messages {
			if msg.Severity >= support.WarningSev {
				t.Errorf("%s: helm lint: %s", name, msg)
			}
		}
	}
}

func TestDefaultValuesRenderEveryPart(t *testing.T) {
	m := mustRender(t, required())
	for _, c := range []string{"gateway", "worker"} {
		if m.deployments[c] == nil || m.configMaps[c] == nil || m.services[c] == nil || m.pdbs[c] == nil {
			t.Errorf("%s: missing Deployment, ConfigMap, Service or PodDisruptionBudget", c)
		}
	}
	if len(m.hpas) != 1 || len(m.secrets) != 1 || len(m.accounts) != 1 {
		t.Errorf("got %d HPAs, %d Secrets, %d ServiceAccounts; want 1 each", len(m.hpas), len(m.secrets), len(m.accounts))
	}
	if len(m.jobs) != 0 || len(m.monitors) != 0 || len(m.rules) != 0 || m.configMaps["dashboard"] != nil ||
		len(m.ingresses) != 0 || len(m.routes) != 0 || len(m.policies) != 0 || len(m.scaled) != 0 || len(m.triggerAuth) != 0 {
		t.Errorf("replay Job, ServiceMonitor, PrometheusRule, dashboard, Ingress, HTTPRoute, NetworkPolicy or KEDA objects rendered by default")
	}
	if got := *m.deployments["worker"].Spec.Replicas; got != 3 {
		t.Errorf("worker replicas %d, want 3", got)
	}
	if m.deployments["gateway"].Spec.Replicas != nil {
		t.Error("gateway replicas set while its autoscaler manages them")
	}
	hpa := m.hpas[0]
	if hpa.Spec.ScaleTargetRef.Name != m.deployments["gateway"].Name || hpa.Spec.MaxReplicas != 10 || *hpa.Spec.MinReplicas != 2 {
		t.Errorf("HPA %+v does not scale the gateway 2..10", hpa.Spec)
	}
	for _, o := range m.all {
		l := o.GetLabels()
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "app.kubernetes.io/version", "helm.sh/chart"} {
			if l[k] == "" {
				t.Errorf("%s lacks label %s", o.GetName(), k)
			}
		}
	}
	if !strings.Contains(m.notes, "/webhooks/acmecrm") {
		t.Errorf("NOTES.txt does not say where to post webhooks:\n%s", m.notes)
	}
}

func TestOverriddenValues(t *testing.T) {
	m := mustRender(t, with(map[string]any{
		"worker":  map[string]any{"replicaCount": 5, "maxInFlight": 64, "partitionBuffer": 200},
		"secrets": map[string]any{"existingSecret": "acme-prod-secrets"},
		"replay": map[string]any{"enabled": true, "id": "incident-42", "dryRun": true, "eventTypes": []any{"contact.updated", "contact.created"}, "contactIds": []any{"c-1"}, "actor": "sre-on-call",
			"errorKinds": []any{"transient"}, "since": "2026-11-26T10:00:00Z", "limit": 500, "rate": 50},
		"serviceMonitor": map[string]any{"enabled": true},
	}))
	if got := *m.deployments["worker"].Spec.Replicas; got != 5 {
		t.Errorf("worker replicas %d, want 5", got)
	}
	wcfg, err := config.LoadWorker(nil, envOf(t, m, m.deployments["worker"].Spec.Template.Spec.Containers[0]), io.Discard)
	if err != nil {
		t.Fatalf("the worker's environment does not load: %v", err)
	}
	if wcfg.Fleet.MaxInFlight != 64 || wcfg.Fleet.PartitionBuffer != 200 {
		t.Errorf("worker max in flight %d, partition buffer %d; want 64, 200", wcfg.Fleet.MaxInFlight, wcfg.Fleet.PartitionBuffer)
	}
	if len(m.secrets) != 0 {
		t.Errorf("rendered %d Secrets with an existing one named", len(m.secrets))
	}
	for c, d := range m.deployments {
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef.Name != "acme-prod-secrets" {
				t.Errorf("%s: %s from Secret %q, want acme-prod-secrets", c, e.Name, e.ValueFrom.SecretKeyRef.Name)
			}
		}
	}
	if len(m.jobs) != 1 {
		t.Fatalf("%d replay Jobs, want 1", len(m.jobs))
	}
	job := m.jobs[0]
	env := map[string]string{}
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	want := map[string]string{"WORKER_REPLAY_DLQ": "true", "WORKER_REPLAY_DRY_RUN": "true", "WORKER_REPLAY_EVENT_TYPE": "contact.updated,contact.created",
		"WORKER_REPLAY_ERROR_KIND": "transient", "WORKER_REPLAY_SINCE": "2026-11-26T10:00:00Z", "WORKER_REPLAY_LIMIT": "500", "WORKER_REPLAY_RATE": "50", "WORKER_REPLAY_MAX_COUNT": "3"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("replay Job %s = %q, want %q", k, env[k], v)
		}
	}
	if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever || *job.Spec.BackoffLimit != 0 {
		t.Errorf("replay Job retries on its own: restart %s, backoffLimit %d", job.Spec.Template.Spec.RestartPolicy, *job.Spec.BackoffLimit)
	}
	if len(m.monitors) != 2 {
		t.Errorf("%d ServiceMonitors, want 2", len(m.monitors))
	}
	// The replay Job's settings load in the real binary's configuration code.
	getenv := envOf(t, m, job.Spec.Template.Spec.Containers[0])
	cfg, err := config.LoadWorker(nil, getenv, io.Discard)
	if err != nil {
		t.Fatalf("the replay Job's environment does not load: %v", err)
	}
	if !cfg.Fleet.Replay.DLQ || !cfg.Fleet.Replay.DryRun || cfg.Fleet.Replay.Limit != 500 || len(cfg.Fleet.Replay.EventTypes) != 2 ||
		len(cfg.Fleet.Replay.ContactIDs) != 1 || cfg.Fleet.Replay.Actor != "sre-on-call" || cfg.Kafka.ParkedTopic != "contact-events-parked" {
		t.Errorf("replay Job configures %+v", cfg.Fleet.Replay)
	}
}

// envOf resolves a container's environment as the binary would see it:
// its ConfigMap (envFrom) plus its own entries, secrets given dummy values.
func envOf(t *testing.T, m *manifests, c corev1.Container) func(string) string {
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		found := false
		for _, cm := range m.configMaps {
			if cm.Name == from.ConfigMapRef.Name {
				for k, v := range cm.Data {
					env[k] = v
				}
				found = true
			}
		}
		if !found {
			t.Errorf("container %s: envFrom ConfigMap %s is not rendered", c.Name, from.ConfigMapRef.Name)
		}
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil {
			env[e.Name] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		}
	}
	return func(k string) string { return env[k] }
}

// Every environment variable the chart sets is one the binary in that
// container reads (the list comes from the configuration code), and the
// whole environment loads there without error.
func TestEnvironmentIsWhatTheBinariesRead(t *testing.T) {
	reads := map[string]map[string]bool{"webhook-gateway": {}, "contact-worker": {}, "dlq-replay": {}}
	for _, n := range config.GatewaySettings.EnvVars(config.GatewayConfigFileEnv) {
		reads["webhook-gateway"][n] = true
	}
	for _, c := range reads { // the Go runtime's own
		c["GOMEMLIMIT"] = true
	}
	for _, n := range config.WorkerSettings.EnvVars(config.WorkerConfigFileEnv) {
		reads["contact-worker"][n] = true
		reads["dlq-replay"][n] = true
	}
	for _, vals := range []map[string]any{required(), with(map[string]any{"replay": map[string]any{"enabled": true, "id": "test"}, "worker": map[string]any{"env": map[string]any{"WORKER_CONTACTS_API_TIMEOUT": "5s"}}})} {
		m := mustRender(t, vals)
		var containers []corev1.Container
		for _, d := range m.deployments {
			containers = append(containers, d.Spec.Template.Spec.Containers...)
		}
		for _, j := range m.jobs {
			containers = append(containers, j.Spec.Template.Spec.Containers...)
		}
		for _, c := range containers {
			names := map[string]bool{}
			for _, e := range c.Env {
				names[e.Name] = true
			}
			for _, from := range c.EnvFrom {
				for _, cm := range m.configMaps {
					if cm.Name == from.ConfigMapRef.Name {
						for k := range cm.Data {
							names[k] = true
						}
					}
				}
			}
			for n := range names {
				if !reads[c.Name][n] {
					t.Errorf("container %s: %s is not a setting its binary reads", c.Name, n)
				}
			}
			getenv := envOf(t, m, c)
			var err error
			if c.Name == "webhook-gateway" {
				_, err = config.LoadGateway(nil, getenv, io.Discard)
			} else {
				_, err = config.LoadWorker(nil, getenv, io.Discard)
			}
			if err != nil {
				t.Errorf("container %s: its environment does not load: %v", c.Name, err)
			}
		}
	}
}

// Probes hit the paths the binaries serve, on the ports they listen on by
// default; grace periods outlast the binaries' shutdown budgets.
func TestProbesPortsAndGracePeriods(t *testing.T) {
	m := mustRender(t, required())
	gw, err := config.LoadGateway(nil, func(k string) string {
		return map[string]string{"GATEWAY_WEBHOOK_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}[k]
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wk, err := config.LoadWorker(nil, func(k string) string {
		return map[string]string{"WORKER_CONTACTS_API_URL": "http://x"}[k]
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for component, addr := range map[string]string{"gateway": gw.Server.ListenAddr, "worker": wk.Fleet.HTTPAddr} {
		_, port, _ := net.SplitHostPort(addr)
		wantPort, _ := strconv.Atoi(port)
		c := m.deployments[component].Spec.Template.Spec.Containers[0]
		if len(c.Ports) == 0 || int(c.Ports[0].ContainerPort) != wantPort || c.Ports[0].Name != "http" {
			t.Errorf("%s: ports %+v, want http on %d (the binary's default %s)", component, c.Ports, wantPort, addr)
		}
		// The gateway's /metrics has a port of its own; the worker's is on http.
		wantPorts := 1
		if component == "gateway" {
			wantPorts = 2
			_, mport, _ := net.SplitHostPort(gw.Server.MetricsAddr)
			if mp, _ := strconv.Atoi(mport); len(c.Ports) != 2 || c.Ports[1].Name != "metrics" || int(c.Ports[1].ContainerPort) != mp {
				t.Errorf("gateway: ports %+v, want metrics on %d (the binary's default %s)", c.Ports, mp, gw.Server.MetricsAddr)
			}
		}
		if len(c.Ports) != wantPorts {
			t.Errorf("%s: %d ports, want %d", component, len(c.Ports), wantPorts)
		}
		if p := c.LivenessProbe.HTTPGet; p == nil || p.Path != ops.HealthPath || p.Port.String() != "http" {
			t.Errorf("%s: liveness probe %+v, want %s on http", component, c.LivenessProbe, ops.HealthPath)
		}
		if p := c.ReadinessProbe.HTTPGet; p == nil || p.Path != ops.ReadyPath || p.Port.String() != "http" {
			t.Errorf("%s: readiness probe %+v, want %s on http", component, c.ReadinessProbe, ops.ReadyPath)
		}
		if svc := m.services[component]; svc.Spec.Ports[0].TargetPort.String() != "http" {
			t.Errorf("%s: Service targets %s", component, svc.Spec.Ports[0].TargetPort.String())
		}
	}
	for component, key := range map[string]string{"gateway": "GATEWAY_SHUTDOWN_TIMEOUT", "worker": "WORKER_SHUTDOWN_TIMEOUT"} {
		budget, err := time.ParseDuration(m.configMaps[component].Data[key])
		if err != nil {
			t.Fatalf("%s: %s: %v", component, key, err)
		}
		if delay := m.configMaps[component].Data["GATEWAY_SHUTDOWN_DELAY"]; delay != "" {
			d, err := time.ParseDuration(delay)
			if err != nil {
				t.Fatal(err)
			}
			budget += d // the lame duck comes first
		}
		if got := m.configMaps[component].Data["GOMEMLIMIT"]; got != "230MiB" {
			t.Errorf("%s: GOMEMLIMIT %q, want 230MiB (90 %% of the 256Mi limit)", component, got)
		}
		grace := time.Duration(*m.deployments[component].Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		if grace <= budget {
			t.Errorf("%s: terminationGracePeriodSeconds %v is not longer than %s %v", component, grace, key, budget)
		}
	}
	if _, err := render(t, with(map[string]any{"worker": map[string]any{"shutdownTimeout": "1m", "terminationGracePeriodSeconds": 30}})); err == nil {
		t.Error("a grace period shorter than the worker's shutdown budget rendered")
	}
}

func TestSecurityContexts(t *testing.T) {
	m := mustRender(t, with(map[string]any{"replay": map[string]any{"enabled": true, "id": "test"}}))
	var pods []corev1.PodSpec
	for _, d := range m.deployments {
		pods = append(pods, d.Spec.Template.Spec)
	}
	for _, j := range m.jobs {
		pods = append(pods, j.Spec.Template.Spec)
	}
	if len(pods) != 3 {
		t.Fatalf("%d pod templates, want 3", len(pods))
	}
	for _, p := range pods {
		psc := p.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("pod security context %+v: want non-root and RuntimeDefault seccomp", psc)
		}
		if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
			t.Error("the service account token is mounted; nothing here talks to the Kubernetes API")
		}
		for _, c := range p.Containers {
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.Capabilities == nil || fmt.Sprint(sc.Capabilities.Drop) != "[ALL]" || len(sc.Capabilities.Add) != 0 {
				t.Errorf("container %s security context %+v: want read-only root, no privilege escalation, non-root, all capabilities dropped", c.Name, sc)
			}
			if c.Resources.Limits.Memory().IsZero() {
				t.Errorf("container %s has no memory limit", c.Name)
			}
		}
	}
}

func TestImagesArePinned(t *testing.T) {
	m := mustRender(t, with(map[string]any{"replay": map[string]any{"enabled": true, "id": "test"}}))
	for _, o := range []struct {
		name  string
		image string
	}{
		{"gateway", m.deployments["gateway"].Spec.Template.Spec.Containers[0].Image},
		{"worker", m.deployments["worker"].Spec.Template.Spec.Containers[0].Image},
		{"replay", m.jobs[0].Spec.Template.Spec.Containers[0].Image},
	} {
		i := strings.LastIndex(o.image, ":")
		if i < 0 || o.image[i+1:] == "" || o.image[i+1:] == "latest" {
			t.Errorf("%s image %q has no fixed tag", o.name, o.image)
		}
	}
	if _, err := render(t, with(map[string]any{"image": map[string]any{"tag": "latest"}})); err == nil {
		t.Error("image.tag=latest rendered")
	}
	if got := mustRender(t, with(map[string]any{"image": map[string]any{"tag": "1.2.3"}})).deployments["worker"].Spec.Template.Spec.Containers[0].Image; got != "ghcr.io/acmecrm/contact-worker:1.2.3" {
		t.Errorf("image %q, want ghcr.io/acmecrm/contact-worker:1.2.3", got)
	}
}

func TestRequiredValuesAndSchema(t *testing.T) {
	tests := []struct {
		name string
		vals map[string]any
		want string
	}{
		{"no webhook secrets", map[string]any{"worker": map[string]any{"contactsApiUrl": "http://x"}}, "webhookSecrets"},
		{"no contacts api", map[string]any{"secrets": map[string]any{"webhookSecrets": "whsec_YWJj"}}, "contactsApiUrl"},
		{"secret without prefix", with(map[string]any{"secrets": map[string]any{"webhookSecrets": "hunter2"}}), "webhookSecrets"},
		{"unknown value", with(map[string]any{"worker": map[string]any{"replicas": 3}}), "replicas"},
		{"bad error kind", with(map[string]any{"replay": map[string]any{"errorKinds": []any{"fatal"}}}), "errorKinds"},
		{"broker without port", with(map[string]any{"kafka": map[string]any{"brokers": []any{"kafka"}}}), "brokers"},
		{"SASL without a Secret", with(map[string]any{"kafka": map[string]any{"security": map[string]any{"protocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512"}}}), "existingSecret"},
		{"mechanism without SASL", with(map[string]any{"kafka": map[string]any{"security": map[string]any{"protocol": "SSL", "saslMechanism": "PLAIN"}}}), "saslMechanism"},
		{"unknown protocol", with(map[string]any{"kafka": map[string]any{"security": map[string]any{"protocol": "TLS"}}}), "protocol"},
		{"client certificate without a Secret", with(map[string]any{"kafka": map[string]any{"security": map[string]any{"protocol": "SSL", "tls": map[string]any{"clientCertificate": true}}}}), "clientCertificate"},
	}
	for _, tt := range tests {
		_, err := render(t, tt.vals)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error naming %s", tt.name, err, tt.want)
		}
	}
	// The chart's own Secret is enough when an existing one is not named;
	// a named one needs no secret values at all.
	if _, err := render(t, map[string]any{"secrets": map[string]any{"existingSecret": "mine"}, "worker": map[string]any{"contactsApiUrl": "http://x"}}); err != nil {
		t.Errorf("existing secret without values: %v", err)
	}
}

// A secured Kafka: every container that talks to Kafka (gateway, worker,
// replay Job) gets the user name from the Secret, the password and the TLS
// files mounted read-only from Secrets, their paths in the environment, and
// no literal credential anywhere.
func TestKafkaSecurity(t *testing.T) {
	m := mustRender(t, with(map[string]any{
		"kafka": map[string]any{"security": map[string]any{"protocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512", "existingSecret": "kafka-user",
			"tls": map[string]any{"existingSecret": "kafka-ca", "clientCertificate": true, "serverName": "kafka.internal"}}},
		"replay": map[string]any{"enabled": true, "id": "test"},
	}))
	containers := []corev1.PodSpec{m.deployments["gateway"].Spec.Template.Spec, m.deployments["worker"].Spec.Template.Spec, m.jobs[0].Spec.Template.Spec}
	for _, pod := range containers {
		c := pod.Containers[0]
		env := envOf(t, m, c)
		want := map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
			"KAFKA_SASL_PASSWORD_FILE": "/etc/acme-integration/kafka-sasl/password", "KAFKA_TLS_CA_FILE": "/etc/acme-integration/kafka-tls/ca.crt",
			"KAFKA_TLS_CERT_FILE": "/etc/acme-integration/kafka-tls/tls.crt", "KAFKA_TLS_KEY_FILE": "/etc/acme-integration/kafka-tls/tls.key",
			"KAFKA_TLS_SERVER_NAME": "kafka.internal", "KAFKA_SASL_PASSWORD": ""}
		for k, v := range want {
			if env(k) != v {
				t.Errorf("%s: %s = %q, want %q", c.Name, k, env(k), v)
			}
		}
		var user *corev1.EnvVar
		for i, e := range c.Env {
			if e.Name == "KAFKA_SASL_USERNAME" {
				user = &c.Env[i]
			}
		}
		if user == nil || user.ValueFrom == nil || user.ValueFrom.SecretKeyRef.Name != "kafka-user" || user.ValueFrom.SecretKeyRef.Key != "username" || user.Value != "" {
			t.Errorf("%s: KAFKA_SASL_USERNAME %+v, want from Secret kafka-user, key username", c.Name, user)
		}
		mounts := map[string]corev1.VolumeMount{}
		for _, vm := range c.VolumeMounts {
			mounts[vm.Name] = vm
		}
		if vm := mounts["kafka-sasl"]; !vm.ReadOnly || vm.MountPath != "/etc/acme-integration/kafka-sasl" {
			t.Errorf("%s: kafka-sasl mount %+v", c.Name, vm)
		}
		if vm := mounts["kafka-tls"]; !vm.ReadOnly || vm.MountPath != "/etc/acme-integration/kafka-tls" {
			t.Errorf("%s: kafka-tls mount %+v", c.Name, vm)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = v
		}
		if v := volumes["kafka-sasl"]; v.Secret == nil || v.Secret.SecretName != "kafka-user" || len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != "password" {
			t.Errorf("%s: kafka-sasl volume %+v, want only key password of Secret kafka-user", c.Name, v)
		}
		if v := volumes["kafka-tls"]; v.Secret == nil || v.Secret.SecretName != "kafka-ca" {
			t.Errorf("%s: kafka-tls volume %+v", c.Name, v)
		}
	}
	// Plaintext (the default) mounts nothing.
	plain := mustRender(t, with(nil))
	if n := len(plain.deployments["gateway"].Spec.Template.Spec.Volumes); n != 0 {
		t.Errorf("%d volumes without Kafka security", n)
	}
}

package deploy

import (
	"os"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// production is a typical production cluster's values: HTTPS through
// ingress-nginx with cert-manager, NetworkPolicies, KEDA, SASL_SSL.
func production() map[string]any {
	return with(map[string]any{
		"kafka": map[string]any{
			"brokers": []any{"kafka-0.kafka.data:9093", "kafka-1.kafka.data:9093", "kafka-2.kafka.data:9093"},
			"security": map[string]any{"protocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512", "existingSecret": "kafka-user",
				"tls": map[string]any{"existingSecret": "kafka-ca"}},
		},
		"gateway": map[string]any{"ingress": map[string]any{
			"enabled": true, "className": "nginx",
			"annotations": map[string]any{"cert-manager.io/cluster-issuer": "letsencrypt", "nginx.ingress.kubernetes.io/proxy-body-size": "2m"},
			"hosts":       []any{"hooks.example.com"},
			"tls":         []any{map[string]any{"secretName": "hooks-tls", "hosts": []any{"hooks.example.com"}}},
		}},
		"worker": map[string]any{"contactsApiUrl": "https://contacts.internal/api", "keda": map[string]any{"enabled": true, "maxReplicas": 6}},
		"networkPolicy": map[string]any{"enabled": true,
			"kafka":       map[string]any{"to": []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "data"}}}}},
			"contactsApi": map[string]any{"to": []any{map[string]any{"ipBlock": map[string]any{"cidr": "10.20.0.0/16"}}}}},
	})
}

func renderErr(t *testing.T, vals map[string]any, want string) {
	t.Helper()
	_, err := render(t, vals)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want an error about %q", err, want)
	}
}

func TestProductionValuesLint(t *testing.T) {
	caps := chartutil.KubeVersion{Version: "v1.30.0", Major: "1", Minor: "30"}
	for _, msg := range lint.AllWithKubeVersion(chartDir, production(), "contacts", &caps).Messages {
		if msg.Severity >= support.WarningSev {
			t.Errorf("helm lint: %s", msg)
		}
	}
}

// The Ingress routes the webhook path only, on every host, to the
// gateway's Service, with the TLS and annotations given.
func TestIngressExposesTheWebhookPathOnly(t *testing.T) {
	m := mustRender(t, production())
	if len(m.ingresses) != 1 {
		t.Fatalf("%d Ingresses, want 1", len(m.ingresses))
	}
	ing := m.ingresses[0]
	if *ing.Spec.IngressClassName != "nginx" || ing.Annotations["cert-manager.io/cluster-issuer"] != "letsencrypt" ||
		ing.Annotations["nginx.ingress.kubernetes.io/proxy-body-size"] != "2m" {
		t.Errorf("class %v, annotations %v", *ing.Spec.IngressClassName, ing.Annotations)
	}
	if len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != "hooks-tls" || !slices.Equal(ing.Spec.TLS[0].Hosts, []string{"hooks.example.com"}) {
		t.Errorf("tls %+v", ing.Spec.TLS)
	}
	svc := m.services["gateway"]
	for _, r := range ing.Spec.Rules {
		if r.Host != "hooks.example.com" || len(r.HTTP.Paths) != 1 {
			t.Fatalf("rule %+v: want one path on hooks.example.com", r)
		}
		p := r.HTTP.Paths[0]
		if p.Path != "/webhooks/acmecrm" || *p.PathType != networkingv1.PathTypeExact || p.Backend.Service.Name != svc.Name || p.Backend.Service.Port.Name != "http" {
			t.Errorf("path %+v: want exactly /webhooks/acmecrm to %s:http (never /metrics, /healthz, /readyz)", p, svc.Name)
		}
	}
	renderErr(t, with(map[string]any{"gateway": map[string]any{"ingress": map[string]any{"enabled": true}}}), "gateway.ingress.hosts")
}

func TestHTTPRouteExposesTheWebhookPathOnly(t *testing.T) {
	m := mustRender(t, with(map[string]any{"gateway": map[string]any{"httpRoute": map[string]any{
		"enabled":    true,
		"parentRefs": []any{map[string]any{"name": "public", "namespace": "gateway-system", "sectionName": "https"}},
		"hostnames":  []any{"hooks.example.com"},
	}}}))
	if len(m.routes) != 1 {
		t.Fatalf("%d HTTPRoutes, want 1", len(m.routes))
	}
	rt := m.routes[0]
	if len(rt.Spec.ParentRefs) != 1 || rt.Spec.ParentRefs[0].Name != "public" || string(*rt.Spec.ParentRefs[0].Namespace) != "gateway-system" ||
		string(*rt.Spec.ParentRefs[0].SectionName) != "https" || len(rt.Spec.Hostnames) != 1 || rt.Spec.Hostnames[0] != "hooks.example.com" {
		t.Errorf("parents %+v, hostnames %v", rt.Spec.ParentRefs, rt.Spec.Hostnames)
	}
	if len(rt.Spec.Rules) != 1 || len(rt.Spec.Rules[0].Matches) != 1 || len(rt.Spec.Rules[0].BackendRefs) != 1 {
		t.Fatalf("rules %+v: want one rule, one match, one backend", rt.Spec.Rules)
	}
	match, backend := rt.Spec.Rules[0].Matches[0], rt.Spec.Rules[0].BackendRefs[0]
	if string(*match.Path.Type) != "Exact" || *match.Path.Value != "/webhooks/acmecrm" || match.Method != nil && string(*match.Method) != "POST" {
		t.Errorf("match %+v: want exactly /webhooks/acmecrm", match)
	}
	if string(backend.Name) != m.services["gateway"].Name || int32(*backend.Port) != m.services["gateway"].Spec.Ports[0].Port {
		t.Errorf("backend %+v", backend)
	}
	renderErr(t, with(map[string]any{"gateway": map[string]any{"httpRoute": map[string]any{"enabled": true}}}), "gateway.httpRoute.parentRefs")
}

func ports(ps []networkingv1.NetworkPolicyPort) []string {
	var out []string
	for _, p := range ps {
		out = append(out, string(*p.Protocol)+"/"+p.Port.String())
	}
	return out
}

func TestNetworkPolicies(t *testing.T) {
	m := mustRender(t, production())
	gw, wk := m.policies["gateway"], m.policies["worker"]
	if gw == nil || wk == nil {
		t.Fatalf("NetworkPolicies %v, want one per component", m.policies)
	}
	for c, np := range m.policies {
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{"Ingress", "Egress"}) {
			t.Errorf("%s: policy types %v", c, np.Spec.PolicyTypes)
		}
		if d := m.deployments[c]; np.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"] != c ||
			d.Spec.Template.Labels["app.kubernetes.io/component"] != c {
			t.Errorf("%s: selects %v", c, np.Spec.PodSelector.MatchLabels)
		}
		// Ingress: only the pod's ports, and only from the peers named: the
		// gateway's webhooks on http, its scrapes on metrics (a port of
		// their own); the worker's scrapes on http.
		wantIngress := [][]string{{"TCP/http"}}
		if c == "gateway" {
			wantIngress = [][]string{{"TCP/http"}, {"TCP/metrics"}}
		}
		if len(np.Spec.Ingress) != len(wantIngress) {
			t.Errorf("%s: %d ingress rules, want %d", c, len(np.Spec.Ingress), len(wantIngress))
		}
		for i, r := range np.Spec.Ingress {
			if i < len(wantIngress) && !slices.Equal(ports(r.Ports), wantIngress[i]) || len(r.From) == 0 {
				t.Errorf("%s: ingress rule %+v: want ports %v from named peers", c, r, wantIngress)
			}
		}
		egress := map[string][]string{}
		for _, r := range np.Spec.Egress {
			key := "any"
			if len(r.To) > 0 {
				switch {
				case r.To[0].IPBlock != nil:
					key = r.To[0].IPBlock.CIDR
				case r.To[0].NamespaceSelector != nil:
					key = r.To[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]
				}
			}
			egress[key] = append(egress[key], ports(r.Ports)...)
		}
		want := map[string][]string{"kube-system": {"UDP/53", "TCP/53"}, "data": {"TCP/9093"}}
		if c == "worker" {
			want["10.20.0.0/16"] = []string{"TCP/443"}
		}
		if len(egress) != len(want) {
			t.Errorf("%s: egress %v, want %v", c, egress, want)
		}
		for k, v := range want {
			if !slices.Equal(egress[k], v) {
				t.Errorf("%s: egress to %s on %v, want %v", c, k, egress[k], v)
			}
		}
	}
	if len(gw.Spec.Ingress) != 2 || gw.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "ingress-nginx" ||
		gw.Spec.Ingress[1].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("gateway ingress %+v: want the ingress controller's namespace, then monitoring", gw.Spec.Ingress)
	}
	if len(wk.Spec.Ingress) != 1 || wk.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("worker ingress %+v: want metrics scrapes only", wk.Spec.Ingress)
	}

	// Ports come from the URLs when not given.
	m = mustRender(t, with(map[string]any{"networkPolicy": map[string]any{"enabled": true},
		"kafka":  map[string]any{"brokers": []any{"a:9092", "b:9092", "c:19092"}},
		"worker": map[string]any{"contactsApiUrl": "http://contacts.contacts-api:8080/v1"}}))
	var got []string
	for _, r := range m.policies["worker"].Spec.Egress {
		got = append(got, ports(r.Ports)...)
	}
	if !slices.Equal(got, []string{"UDP/53", "TCP/53", "TCP/9092", "TCP/19092", "TCP/8080"}) {
		t.Errorf("worker egress ports %v: want DNS, the brokers' 9092 and 19092, the API's 8080", got)
	}
}

// Both Deployments spread across zones and nodes by default, never
// blocking scheduling; a list replaces that, [] removes it.
func TestTopologySpread(t *testing.T) {
	m := mustRender(t, required())
	for c, d := range m.deployments {
		tsc := d.Spec.Template.Spec.TopologySpreadConstraints
		if len(tsc) != 2 || tsc[0].TopologyKey != "topology.kubernetes.io/zone" || tsc[1].TopologyKey != "kubernetes.io/hostname" {
			t.Fatalf("%s: spread %+v, want zone then node", c, tsc)
		}
		for _, s := range tsc {
			if s.MaxSkew != 1 || s.WhenUnsatisfiable != corev1.ScheduleAnyway || s.LabelSelector.MatchLabels["app.kubernetes.io/component"] != c ||
				!slices.Equal(s.MatchLabelKeys, []string{"pod-template-hash"}) {
				t.Errorf("%s: %+v", c, s)
			}
			for k, v := range s.LabelSelector.MatchLabels {
				if d.Spec.Template.Labels[k] != v {
					t.Errorf("%s: spread selector %s=%s does not match the pods", c, k, v)
				}
			}
		}
	}
	own := []any{map[string]any{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
		"labelSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/component": "gateway"}}}}
	m = mustRender(t, with(map[string]any{"gateway": map[string]any{"topologySpreadConstraints": own}, "worker": map[string]any{"topologySpreadConstraints": []any{}}}))
	if tsc := m.deployments["gateway"].Spec.Template.Spec.TopologySpreadConstraints; len(tsc) != 1 || tsc[0].MaxSkew != 2 {
		t.Errorf("gateway spread %+v, want the one given", tsc)
	}
	if tsc := m.deployments["worker"].Spec.Template.Spec.TopologySpreadConstraints; len(tsc) != 0 {
		t.Errorf("worker spread %+v, want none", tsc)
	}
}

// A PodDisruptionBudget that would block every eviction is refused at
// render; consistent ones render.
func TestPDBsNeverBlockEveryEviction(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"gateway min available = HPA floor", map[string]any{"gateway": map[string]any{"pdb": map[string]any{"minAvailable": 2}}}, "gateway.autoscaling.minReplicas"},
		{"gateway min available = replicas", map[string]any{"gateway": map[string]any{"autoscaling": map[string]any{"enabled": false}, "replicaCount": 3, "pdb": map[string]any{"minAvailable": 3}}}, "gateway.replicaCount"},
		{"gateway 100%", map[string]any{"gateway": map[string]any{"pdb": map[string]any{"minAvailable": "100%"}}}, "blocks every eviction"},
		{"worker max unavailable 0", map[string]any{"worker": map[string]any{"pdb": map[string]any{"maxUnavailable": 0}}}, "worker.pdb.maxUnavailable"},
		{"worker 0%", map[string]any{"worker": map[string]any{"pdb": map[string]any{"maxUnavailable": "0%"}}}, "blocks every eviction"},
	} {
		t.Run(tc.name, func(t *testing.T) { renderErr(t, with(tc.vals), tc.want) })
	}
	m := mustRender(t, with(map[string]any{"gateway": map[string]any{"autoscaling": map[string]any{"minReplicas": 3}, "pdb": map[string]any{"minAvailable": 2}},
		"worker": map[string]any{"pdb": map[string]any{"maxUnavailable": "50%"}}}))
	if m.pdbs["gateway"].Spec.MinAvailable.IntValue() != 2 || m.pdbs["worker"].Spec.MaxUnavailable.String() != "50%" {
		t.Errorf("pdbs %+v %+v", m.pdbs["gateway"].Spec, m.pdbs["worker"].Spec)
	}
}

// With KEDA the worker follows its lag: a ScaledObject on the consumer
// group and topic the binary uses, credentials from kafka.security's
// Secrets, at most one replica per partition, and no replicaCount.
func TestKEDAScalesTheWorkerOnItsLag(t *testing.T) {
	m := mustRender(t, production())
	if len(m.scaled) != 1 || len(m.triggerAuth) != 1 {
		t.Fatalf("%d ScaledObjects, %d TriggerAuthentications; want 1 each", len(m.scaled), len(m.triggerAuth))
	}
	so, ta, d := m.scaled[0], m.triggerAuth[0], m.deployments["worker"]
	if d.Spec.Replicas != nil {
		t.Errorf("worker replicas %d rendered while KEDA scales it", *d.Spec.Replicas)
	}
	if so.Spec.ScaleTargetRef.Name != d.Name || *so.Spec.MinReplicaCount != 1 || *so.Spec.MaxReplicaCount != 6 {
		t.Errorf("scale target %s, replicas %d..%d", so.Spec.ScaleTargetRef.Name, *so.Spec.MinReplicaCount, *so.Spec.MaxReplicaCount)
	}
	env := map[string]string{}
	for k, v := range m.configMaps["worker"].Data {
		env[k] = v
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "kafka" {
		t.Fatalf("triggers %+v", so.Spec.Triggers)
	}
	tr := so.Spec.Triggers[0]
	for k, want := range map[string]string{
		"bootstrapServers": env["KAFKA_BROKERS"], "consumerGroup": env["WORKER_GROUP_ID"], "topic": env["KAFKA_TOPIC"],
		"lagThreshold": "500", "offsetResetPolicy": "earliest", "allowIdleConsumers": "false", "sasl": "scram_sha512", "tls": "enable",
	} {
		if tr.Metadata[k] != want || want == "" {
			t.Errorf("trigger %s = %q, want %q (what the binary uses)", k, tr.Metadata[k], want)
		}
	}
	if tr.AuthenticationRef == nil || tr.AuthenticationRef.Name != ta.Name {
		t.Errorf("trigger authentication %+v, want %s", tr.AuthenticationRef, ta.Name)
	}
	refs := map[string]string{}
	for _, r := range ta.Spec.SecretTargetRef {
		refs[r.Parameter] = r.Name + "/" + r.Key
	}
	if refs["username"] != "kafka-user/username" || refs["password"] != "kafka-user/password" || refs["ca"] != "kafka-ca/ca.crt" || len(refs) != 3 {
		t.Errorf("secret refs %v", refs)
	}

	renderErr(t, with(map[string]any{"worker": map[string]any{"keda": map[string]any{"enabled": true, "maxReplicas": 7}}}), "kafka.topicPartitions")
	renderErr(t, with(map[string]any{"worker": map[string]any{"keda": map[string]any{"enabled": true, "minReplicas": 4, "maxReplicas": 3}}}), "worker.keda.minReplicas")

	// PLAINTEXT: no credentials to pass.
	m = mustRender(t, with(map[string]any{"worker": map[string]any{"keda": map[string]any{"enabled": true, "minReplicas": 0}}}))
	if len(m.triggerAuth) != 0 || m.scaled[0].Spec.Triggers[0].AuthenticationRef != nil || *m.scaled[0].Spec.MinReplicaCount != 0 {
		t.Errorf("plaintext: %d TriggerAuthentications, ref %+v", len(m.triggerAuth), m.scaled[0].Spec.Triggers[0].AuthenticationRef)
	}
}

// The README's production values file lints, renders and yields every
// object it promises.
func TestREADMEProductionValues(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "### A production cluster")
	_, block, ok2 := strings.Cut(after, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("no yaml block under README's \"A production cluster\"")
	}
	var vals map[string]any
	if err := yaml.Unmarshal([]byte(block), &vals); err != nil {
		t.Fatalf("README's values: %v", err)
	}
	caps := chartutil.KubeVersion{Version: "v1.30.0", Major: "1", Minor: "30"}
	for _, msg := range lint.AllWithKubeVersion(chartDir, vals, "contacts", &caps).Messages {
		if msg.Severity >= support.WarningSev {
			t.Errorf("helm lint: %s", msg)
		}
	}
	m := mustRender(t, vals)
	if len(m.ingresses) != 1 || len(m.policies) != 2 || len(m.scaled) != 1 || len(m.triggerAuth) != 1 ||
		len(m.rules) != 1 || m.configMaps["dashboard"] == nil || len(m.monitors) != 2 || len(m.secrets) != 0 {
		t.Errorf("rendered %d Ingress, %d NetworkPolicies, %d ScaledObject, %d TriggerAuthentication, %d PrometheusRule, dashboard %v, %d ServiceMonitors, %d Secrets",
			len(m.ingresses), len(m.policies), len(m.scaled), len(m.triggerAuth), len(m.rules), m.configMaps["dashboard"] != nil, len(m.monitors), len(m.secrets))
	}
	if m.deployments["worker"].Spec.Replicas != nil {
		t.Error("worker replicas rendered beside KEDA")
	}
	if !strings.Contains(m.notes, "https://hooks.example.com/webhooks/acmecrm") || !strings.Contains(m.notes, "KEDA") {
		t.Errorf("NOTES.txt does not give the public URL or say KEDA scales the worker:\n%s", m.notes)
	}
}

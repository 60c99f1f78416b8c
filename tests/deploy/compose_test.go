package deploy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The chart composes: it renders as a subchart (global values), takes the
// usual extension points, and pins images by digest.
func TestChartComposes(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	m := mustRender(t, with(map[string]any{
		"global": map[string]any{"imageRegistry": "registry.example", "storageClass": "fast"},
		"image":  map[string]any{"digests": map[string]any{"worker": digest}},
		"gateway": map[string]any{
			"env":       map[string]any{"GOMEMLIMIT": "100MiB"},
			"podLabels": map[string]any{"azure.workload.identity/use": "true", "app.kubernetes.io/component": "hijacked"},
			"service":   map[string]any{"annotations": map[string]any{"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}},
			"strategy":  map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxUnavailable": 0, "maxSurge": 1}},
		},
		"worker": map[string]any{
			"priorityClassName": "business-critical",
			"extraEnv": []any{
				map[string]any{"name": "SSL_CERT_DIR", "value": "/etc/ssl/certs:/etc/internal-ca"},
				map[string]any{"name": "NODE_NAME", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "spec.nodeName"}}},
			},
			"extraVolumes":      []any{map[string]any{"name": "internal-ca", "configMap": map[string]any{"name": "internal-ca"}}},
			"extraVolumeMounts": []any{map[string]any{"name": "internal-ca", "mountPath": "/etc/internal-ca", "readOnly": true}},
		},
	}))
	gw, wk := m.deployments["gateway"].Spec.Template, m.deployments["worker"].Spec.Template
	if gw.Labels["azure.workload.identity/use"] != "true" || gw.Labels["app.kubernetes.io/component"] != "gateway" {
		t.Errorf("gateway pod labels %v: want the extra label, and the chart's own kept", gw.Labels)
	}
	if got := m.configMaps["gateway"].Data["GOMEMLIMIT"]; got != "100MiB" {
		t.Errorf("GOMEMLIMIT %q, want the one set (no duplicate key)", got)
	}
	if s := m.deployments["gateway"].Spec.Strategy; s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("gateway strategy %+v", s)
	}
	if m.services["gateway"].Annotations["service.beta.kubernetes.io/aws-load-balancer-internal"] != "true" {
		t.Errorf("gateway Service annotations %v", m.services["gateway"].Annotations)
	}
	if wk.Spec.PriorityClassName != "business-critical" {
		t.Errorf("worker priorityClassName %q", wk.Spec.PriorityClassName)
	}
	c := wk.Spec.Containers[0]
	if c.Image != "ghcr.io/acmecrm/contact-worker@"+digest {
		t.Errorf("worker image %q, want pinned by digest", c.Image)
	}
	if !strings.Contains(gw.Spec.Containers[0].Image, ":") || strings.Contains(gw.Spec.Containers[0].Image, "@") {
		t.Errorf("gateway image %q: no digest given, want the tag", gw.Spec.Containers[0].Image)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if env["SSL_CERT_DIR"].Value == "" || env["NODE_NAME"].ValueFrom == nil || env["NODE_NAME"].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("worker extraEnv not rendered: %+v", c.Env)
	}
	if len(wk.Spec.Volumes) != 1 || wk.Spec.Volumes[0].ConfigMap == nil || len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/etc/internal-ca" {
		t.Errorf("worker volumes %+v, mounts %+v", wk.Spec.Volumes, c.VolumeMounts)
	}
	if _, err := render(t, with(map[string]any{"image": map[string]any{"digests": map[string]any{"worker": "latest"}}})); err == nil {
		t.Error("a digest that is not sha256:<64 hex> rendered")
	}
}

// A changed secret rolls both Deployments (checksum/secret): the binaries
// read secrets once, at start, so a rotation needs new pods.
func TestSecretChangeRollsThePods(t *testing.T) {
	a := mustRender(t, with(map[string]any{"secrets": map[string]any{"webhookSecrets": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}))
	b := mustRender(t, with(map[string]any{"secrets": map[string]any{"webhookSecrets": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_bmV3LXNlY3JldC1mb3ItdGhlLXJvdGF0aW9u"}}))
	for _, c := range []string{"gateway", "worker"} {
		ha, hb := a.deployments[c].Spec.Template.Annotations["checksum/secret"], b.deployments[c].Spec.Template.Annotations["checksum/secret"]
		if ha == "" || ha == hb {
			t.Errorf("%s: checksum/secret %q then %q: a rotation would not roll the pods", c, ha, hb)
		}
	}
}

// The replay Job is named by its id and settings (the same values render
// the same Job: an upgrade runs nothing again), kept when replay is turned
// off, and its pods have a NetworkPolicy of their own (DNS and brokers).
func TestReplayJobIsIdempotent(t *testing.T) {
	vals := func(dry bool) map[string]any {
		return with(map[string]any{"networkPolicy": map[string]any{"enabled": true},
			"replay": map[string]any{"enabled": true, "id": "incident-7", "dryRun": dry}})
	}
	a, b, c := mustRender(t, vals(true)), mustRender(t, vals(true)), mustRender(t, vals(false))
	if a.jobs[0].Name != b.jobs[0].Name || a.jobs[0].Name == c.jobs[0].Name || !strings.Contains(a.jobs[0].Name, "-dlq-replay-incident-7-") {
		t.Errorf("Job names %s, %s, %s: want the same for the same values, another for other settings", a.jobs[0].Name, b.jobs[0].Name, c.jobs[0].Name)
	}
	if a.jobs[0].Annotations["helm.sh/resource-policy"] != "keep" || a.jobs[0].Spec.TTLSecondsAfterFinished != nil {
		t.Errorf("Job annotations %v, TTL %v: want kept, no TTL", a.jobs[0].Annotations, a.jobs[0].Spec.TTLSecondsAfterFinished)
	}
	p, ok := a.policies["dlq-replay"]
	if !ok || len(p.Spec.Egress) < 2 || len(p.Spec.Ingress) != 0 {
		t.Fatalf("replay NetworkPolicy %+v: want egress to DNS and the brokers, no ingress", p)
	}
	if _, err := render(t, with(map[string]any{"replay": map[string]any{"enabled": true}})); err == nil || !strings.Contains(err.Error(), "replay.id") {
		t.Errorf("replay without an id: %v, want refused", err)
	}
}

package e2e

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/acmecrm/integration-service/tests/standin"
)

// span is one span an OTLP/HTTP receiver got, with its service.
type span struct {
	service, name   string
	traceID, spanID string
	parentID        string
	kind            tracepb.Span_SpanKind
	attrs           map[string]string
	links           []string // trace ids
	statusError     bool
}

// otlpReceiver is an OTLP/HTTP (protobuf) trace receiver of the test's own:
// what a collector at OTEL_EXPORTER_OTLP_ENDPOINT would get.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(raw, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, a := range rs.Resource.GetAttributes() {
			if a.Key == "service.name" {
				service = a.Value.GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := span{service: service, name: s.Name, traceID: hex.EncodeToString(s.TraceId), spanID: hex.EncodeToString(s.SpanId),
					parentID: hex.EncodeToString(s.ParentSpanId), kind: s.Kind, attrs: map[string]string{},
					statusError: s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR}
				for _, a := range s.Attributes {
					v := a.Value.GetStringValue()
					if v == "" {
						v = fmt.Sprint(a.Value.GetIntValue())
					}
					sp.attrs[a.Key] = v
				}
				for _, l := range s.Links {
					sp.links = append(sp.links, hex.EncodeToString(l.TraceId))
				}
				o.spans = append(o.spans, sp)
			}
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// find returns the spans of service named name in trace (any trace: "").
func (o *otlpReceiver) find(service, name, trace string) []span {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []span
	for _, s := range o.spans {
		if s.service == service && s.name == name && (trace == "" || s.traceID == trace) {
			out = append(out, s)
		}
	}
	return out
}

func headerOf(m *sarama.ConsumerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// traceIDOf is the trace id of a W3C traceparent.
func traceIDOf(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[1]
}

func spanIDOf(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[2]
}

// One trace from AcmeCRM's request to the Contacts API call: the gateway
// continues the request's traceparent and writes it into the record, the
// worker continues it into the API call; both services export their spans
// over OTLP/HTTP; the log lines of the event carry the trace id. A
// dead-lettered event's record stays in its trace, and its replay is a
// trace of its own linked to it.
func TestOneTraceFromWebhookToContactsAPI(t *testing.T) {
	receiver := &otlpReceiver{}
	collector := httptest.NewServer(receiver)
	t.Cleanup(collector.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

	api, url := contactsAPI(t)
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, nil))
	wk := startWorker(t, workerEnv(topics, url, nil))
	s := newSender(t, gw)

	const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	if r := s.mustSend(event("contact.created", "evt_traced", "c-traced"), func(r *http.Request) { r.Header.Set("traceparent", incoming) }); r.status != 202 {
		t.Fatalf("got %d, want 202", r.status)
	}
	var call standin.Call
	eventually(t, 30*time.Second, "the traced event applied", func() bool {
		for _, c := range api.Calls() {
			if c.IdempotencyKey == "evt_traced" {
				call = c
				return true
			}
		}
		return false
	})

	// The record: traceparent is the gateway's send span, ce_traceparent
	// the request's span, both in the incoming trace.
	var rec *sarama.ConsumerMessage
	for _, m := range readAll(t, brokers, topics["KAFKA_TOPIC"]) {
		if string(m.Key) == "c-traced" {
			rec = m
		}
	}
	if rec == nil {
		t.Fatal("no record of c-traced")
	}
	tp, origin := headerOf(rec, "traceparent"), headerOf(rec, "ce_traceparent")
	t.Logf("record headers: traceparent=%s ce_traceparent=%s; Contacts API call traceparent=%s", tp, origin, call.Traceparent)
	if traceIDOf(tp) != traceID || traceIDOf(origin) != traceID || tp == incoming || origin == incoming || tp == origin {
		t.Errorf("record traceparent %q, ce_traceparent %q: want two new spans of trace %s", tp, origin, traceID)
	}
	if traceIDOf(call.Traceparent) != traceID {
		t.Errorf("the Contacts API call carried traceparent %q, want trace %s", call.Traceparent, traceID)
	}

	// The spans of both services, chained: request → send → process →
	// attempt → HTTP call.
	var server, send, process, attempt, httpCall span
	eventually(t, 20*time.Second, "the spans of both services exported", func() bool {
		got := func(service, name string, into *span) bool {
			ss := receiver.find(service, name, traceID)
			if len(ss) == 1 {
				*into = ss[0]
			}
			return len(ss) == 1
		}
		return got("webhook-gateway", "POST /webhooks/acmecrm", &server) && got("webhook-gateway", "send "+topics["KAFKA_TOPIC"], &send) &&
			got("contact-worker", "process "+topics["KAFKA_TOPIC"], &process) && got("contact-worker", "apply contact.created", &attempt) &&
			got("contact-worker", "PUT /contacts/{contact_id}", &httpCall)
	})
	for _, name := range []string{"verify webhook signature", "validate event"} {
		if ss := receiver.find("webhook-gateway", name, traceID); len(ss) != 1 || ss[0].parentID != server.spanID {
			t.Errorf("%s: %d spans, want one under the request span", name, len(ss))
		}
	}
	checks := []struct {
		what      string
		got, want string
	}{
		{"request span's parent (AcmeCRM's span)", server.parentID, spanIDOf(incoming)},
		{"ce_traceparent names the request span", spanIDOf(origin), server.spanID},
		{"send span's parent", send.parentID, server.spanID},
		{"traceparent names the send span", spanIDOf(tp), send.spanID},
		{"process span's parent", process.parentID, send.spanID},
		{"attempt span's parent", attempt.parentID, process.spanID},
		{"HTTP span's parent", httpCall.parentID, attempt.spanID},
		{"the API got the HTTP span", spanIDOf(call.Traceparent), httpCall.spanID},
		{"send kind", send.kind.String(), tracepb.Span_SPAN_KIND_PRODUCER.String()},
		{"process kind", process.kind.String(), tracepb.Span_SPAN_KIND_CONSUMER.String()},
		{"process messaging.system", process.attrs["messaging.system"], "kafka"},
		{"process messaging.destination.name", process.attrs["messaging.destination.name"], topics["KAFKA_TOPIC"]},
		{"process messaging.consumer.group.name", process.attrs["messaging.consumer.group.name"], topics["WORKER_GROUP_ID"]},
		{"process messaging.message.id", process.attrs["messaging.message.id"], "evt_traced"},
		{"process messaging.kafka.offset", process.attrs["messaging.kafka.offset"], fmt.Sprint(rec.Offset)},
		{"process messaging.destination.partition.id", process.attrs["messaging.destination.partition.id"], fmt.Sprint(rec.Partition)},
		{"process acmecrm.contact.id", process.attrs["acmecrm.contact.id"], "c-traced"},
		{"process acmecrm.outcome", process.attrs["acmecrm.outcome"], "applied"},
		{"process acmecrm.attempts", process.attrs["acmecrm.attempts"], "1"},
		{"send messaging.kafka.offset", send.attrs["messaging.kafka.offset"], fmt.Sprint(rec.Offset)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	for _, b := range []*binary{gw, wk} {
		if !strings.Contains(b.logs.String(), `"trace_id":"`+traceID+`"`) {
			t.Errorf("%s logged no line with trace_id %s", b.name, traceID)
		}
	}

	// A dead-lettered event: its dead letter is a span of its trace, and
	// the DLQ record names it; the replay is a new trace linked to it, and
	// the replayed event's API call is in the replay's trace.
	_ = api.Fail(standin.Failure{ContactID: "c-dead", Status: 422})
	const deadTrace = "0af7651916cd43dd8448eb211c80319c"
	if r := s.mustSend(event("contact.created", "evt_dead", "c-dead"), func(r *http.Request) {
		r.Header.Set("traceparent", "00-"+deadTrace+"-b7ad6b7169203331-01")
	}); r.status != 202 {
		t.Fatalf("got %d, want 202", r.status)
	}
	var dead *sarama.ConsumerMessage
	eventually(t, 30*time.Second, "the failing event dead-lettered", func() bool {
		for _, m := range readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"]) {
			if string(m.Key) == "c-dead" {
				dead = m
			}
		}
		return dead != nil
	})
	var dlqSend span
	eventually(t, 20*time.Second, "the dead-letter span exported", func() bool {
		ss := receiver.find("contact-worker", "send "+topics["KAFKA_DLQ_TOPIC"], deadTrace)
		if len(ss) == 1 {
			dlqSend = ss[0]
		}
		return len(ss) == 1
	})
	if spanIDOf(headerOf(dead, "traceparent")) != dlqSend.spanID || traceIDOf(headerOf(dead, "ce_traceparent")) != deadTrace {
		t.Errorf("DLQ record traceparent %q (want the dead-letter span %s), ce_traceparent %q (want trace %s)",
			headerOf(dead, "traceparent"), dlqSend.spanID, headerOf(dead, "ce_traceparent"), deadTrace)
	}
	if ps := receiver.find("contact-worker", "process "+topics["KAFKA_TOPIC"], deadTrace); len(ps) != 1 || !ps[0].statusError || ps[0].attrs["acmecrm.outcome"] != "dead_lettered" {
		t.Errorf("the failed event's process span: %+v, want one, failed, outcome dead_lettered", ps)
	}

	api.ClearFailures()
	_, sum := runReplay(t, merge(topics, map[string]string{"WORKER_REPLAY_GROUP_ID": uniqueName(t, "replay"), "WORKER_REPLAY_EVENT_ID": "evt_dead"}))
	if sum.Replayed != 1 {
		t.Fatalf("replayed %d, want 1", sum.Replayed)
	}
	var replaySend span
	eventually(t, 20*time.Second, "the replay's span exported", func() bool {
		for _, s := range receiver.find("contact-worker", "send "+topics["KAFKA_TOPIC"], "") {
			if s.attrs["messaging.message.id"] == "evt_dead" {
				replaySend = s
				return true
			}
		}
		return false
	})
	if replaySend.traceID == deadTrace || replaySend.parentID != "" || !strings.Contains(strings.Join(replaySend.links, " "), deadTrace) {
		t.Errorf("replay span in trace %s (parent %q, links %v): want a new trace linked to %s", replaySend.traceID, replaySend.parentID, replaySend.links, deadTrace)
	}
	eventually(t, 30*time.Second, "the replayed event applied in the replay's trace", func() bool {
		for _, c := range api.Calls() {
			if c.IdempotencyKey == "evt_dead" && c.Status < 300 && traceIDOf(c.Traceparent) == replaySend.traceID {
				return true
			}
		}
		return false
	})

	// What the dashboard shows of it: replay activity, and the DLQ's size
	// (read at a member's start, then every 30 s).
	eventually(t, 10*time.Second, "worker_replayed_events_total 1", func() bool { return metric(t, wk, "worker_replayed_events_total") == 1 })
	wk2 := startWorker(t, workerEnv(topics, url, nil))
	eventually(t, 10*time.Second, "worker_dlq_records 1", func() bool { return metric(t, wk2, "worker_dlq_records") == 1 })
	// The replay above ran in a group of its own: the routine replay group
	// has not read the dead letter yet.
	if got := metric(t, wk2, "worker_dlq_unreplayed_records"); got != 1 {
		t.Errorf("worker_dlq_unreplayed_records %v, want 1 (the routine group read nothing)", got)
	}
	wk2.stop(t)
	routine := uniqueName(t, "routine")
	if _, sum := runReplay(t, merge(topics, map[string]string{"WORKER_REPLAY_GROUP_ID": routine})); sum.Replayed != 1 {
		t.Fatalf("routine replay: %+v", sum)
	}
	wk3 := startWorker(t, workerEnv(topics, url, map[string]string{"WORKER_REPLAY_GROUP_ID": routine}))
	eventually(t, 10*time.Second, "worker_dlq_unreplayed_records 0 once the routine group replayed it", func() bool {
		return metric(t, wk3, "worker_dlq_unreplayed_records") == 0 && metric(t, wk3, "worker_dlq_records") == 1
	})
}

// With tracing off (no OTEL_* exporter), nothing is recorded, but a
// traceparent AcmeCRM sends still reaches the record and the Contacts API
// (W3C: intermediaries pass the context on); without one, records carry
// no trace headers.
func TestTraceContextPassesThroughWithTracingOff(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, nil))
	startWorker(t, workerEnv(topics, url, nil))
	s := newSender(t, gw)
	const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	s.mustSend(event("contact.created", "evt_passed", "c-passed"), func(r *http.Request) { r.Header.Set("traceparent", incoming) })
	s.mustSend(event("contact.created", "evt_plain", "c-plain"), nil)
	calls := map[string]standin.Call{}
	eventually(t, 30*time.Second, "both events applied", func() bool {
		for _, c := range api.Calls() {
			calls[c.IdempotencyKey] = c
		}
		return calls["evt_passed"].Status != 0 && calls["evt_plain"].Status != 0
	})
	if got := traceIDOf(calls["evt_passed"].Traceparent); got != traceIDOf(incoming) {
		t.Errorf("the API call carried %q, want trace %s passed on", calls["evt_passed"].Traceparent, traceIDOf(incoming))
	}
	if calls["evt_plain"].Traceparent != "" {
		t.Errorf("an untraced event's API call carried traceparent %q", calls["evt_plain"].Traceparent)
	}
	for _, m := range readAll(t, brokers, topics["KAFKA_TOPIC"]) {
		tp, origin := headerOf(m, "traceparent"), headerOf(m, "ce_traceparent")
		switch string(m.Key) {
		case "c-passed":
			if tp != incoming || origin != incoming {
				t.Errorf("record traceparent %q, ce_traceparent %q: want the incoming one passed on", tp, origin)
			}
		case "c-plain":
			if tp != "" || origin != "" {
				t.Errorf("untraced record carries traceparent %q, ce_traceparent %q", tp, origin)
			}
		}
	}
}

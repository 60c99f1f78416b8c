package telemetry

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/trace"
)

func TestSetupFromEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		enabled bool
		err     string
	}{
		{"nothing set: off", nil, false, ""},
		{"endpoint: on", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true, ""},
		{"traces endpoint: on", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true, ""},
		{"disabled wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}, false, ""},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, false, ""},
		{"console", map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true, ""},
		{"grpc refused", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false, "only http/protobuf"},
		{"unknown exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, "use otlp, console or none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
				t.Setenv(k, tc.env[k])
			}
			var console bytes.Buffer
			tr, err := Setup(context.Background(), "svc", "v1", &console)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error about %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Shutdown(context.Background())
			if tr.Enabled != tc.enabled {
				t.Fatalf("enabled %v, want %v", tr.Enabled, tc.enabled)
			}
			_, span := tr.Tracer("test").Start(context.Background(), "s")
			if span.IsRecording() != tc.enabled {
				t.Errorf("span recording %v, want %v", span.IsRecording(), tc.enabled)
			}
			span.End()
			if tc.env["OTEL_TRACES_EXPORTER"] == "console" {
				_ = tr.Shutdown(context.Background())
				if !strings.Contains(console.String(), `"Name":"s"`) || !strings.Contains(console.String(), `"svc"`) {
					t.Errorf("console got %q, want the span of service svc", console.String())
				}
			}
		})
	}
}

// Inject replaces the trace headers a copied record carries; the origin
// headers are written once and read back; a record with none gives none.
func TestRecordHeaders(t *testing.T) {
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: [16]byte{1}, SpanID: [8]byte{2}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), parent)
	msg := &sarama.ProducerMessage{Headers: []sarama.RecordHeader{{Key: []byte("traceparent"), Value: []byte("00-old-old-01")}, {Key: []byte("ce_id"), Value: []byte("e")}}}
	Inject(ctx, msg)
	InjectOrigin(ctx, msg)
	count := map[string]int{}
	consumed := &sarama.ConsumerMessage{}
	for _, h := range msg.Headers {
		count[string(h.Key)]++
		consumed.Headers = append(consumed.Headers, &sarama.RecordHeader{Key: h.Key, Value: h.Value})
	}
	if count["traceparent"] != 1 || count["ce_traceparent"] != 1 || count["ce_id"] != 1 {
		t.Fatalf("headers %v: want one traceparent (replaced), one ce_traceparent, ce_id kept", count)
	}
	if !hop(consumed).Equal(parent.WithRemote(true)) || !originOf(consumed).Equal(parent.WithRemote(true)) {
		t.Errorf("read back hop %v, origin %v; want %v", hop(consumed), originOf(consumed), parent)
	}
	if links := Links(consumed); len(links) != 1 {
		t.Errorf("%d links for the same hop and origin, want 1", len(links))
	}
	plain := &sarama.ProducerMessage{}
	Inject(context.Background(), plain)
	InjectOrigin(context.Background(), plain)
	if len(plain.Headers) != 0 || hop(&sarama.ConsumerMessage{}).IsValid() {
		t.Errorf("untraced: headers %v", plain.Headers)
	}
}

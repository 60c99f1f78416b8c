package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Propagator reads and writes W3C trace context (traceparent, tracestate)
// and baggage, whether tracing is on or not: a trace AcmeCRM started is
// passed on even by a gateway that exports nothing.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Tracing is the tracer provider of a binary and how to stop it.
type Tracing struct {
	Provider trace.TracerProvider
	// Enabled is false when nothing is exported: spans are then not
	// recorded, and callers may skip work that only feeds them.
	Enabled  bool
	shutdown func(context.Context) error
}

// Tracer returns the binary's tracer of the named instrumentation scope.
func (t Tracing) Tracer(scope string) trace.Tracer { return t.Provider.Tracer(scope) }

// Shutdown exports what is buffered and stops the exporter.
func (t Tracing) Shutdown(ctx context.Context) error {
	if t.shutdown == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// Stop exports the spans still buffered, within 5 seconds, and stops t;
// a failure is logged (it is called on the way out).
func Stop(t Tracing, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("exporting the last spans")
	}
}

// Off is tracing that records and exports nothing.
func Off() Tracing { return Tracing{Provider: noop.NewTracerProvider()} }

// Setup returns the tracing of service (version) configured from the
// process's OTEL_* environment, as every OpenTelemetry SDK reads it:
//
//   - OTEL_SDK_DISABLED=true, or OTEL_TRACES_EXPORTER=none: off;
//   - OTEL_TRACES_EXPORTER=otlp (the default) exports OTLP over HTTP
//     (protobuf) to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else
//     OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces; with neither set, off;
//     OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf (no gRPC here);
//   - OTEL_TRACES_EXPORTER=console writes the spans as JSON to console;
//   - OTEL_SERVICE_NAME (default service), OTEL_RESOURCE_ATTRIBUTES,
//     OTEL_TRACES_SAMPLER and its _ARG (default parentbased_always_on),
//     OTEL_BSP_* and the other OTEL_EXPORTER_OTLP_* settings are the SDK's.
func Setup(ctx context.Context, service, version string, console io.Writer) (Tracing, error) {
	getenv := os.Getenv
	exporterName := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || exporterName == "none" {
		return Off(), nil
	}
	var exporter sdktrace.SpanExporter
	switch exporterName {
	case "", "otlp":
		if getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
			return Off(), nil
		}
		protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if protocol == "" {
			protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		if protocol != "" && protocol != "http/protobuf" {
			return Tracing{}, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: only http/protobuf is supported (the collector's port 4318)", protocol)
		}
		exp, err := otlptracehttp.New(ctx) // reads OTEL_EXPORTER_OTLP_* itself
		if err != nil {
			return Tracing{}, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		exporter = exp
	case "console":
		exp, err := stdouttrace.New(stdouttrace.WithWriter(console))
		if err != nil {
			return Tracing{}, fmt.Errorf("console trace exporter: %w", err)
		}
		exporter = exp
	default:
		return Tracing{}, fmt.Errorf("OTEL_TRACES_EXPORTER %q: use otlp, console or none", exporterName)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service), attribute.String("service.version", version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return Tracing{}, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res)) // sampler from OTEL_TRACES_SAMPLER
	return Tracing{Provider: tp, Enabled: true, shutdown: tp.Shutdown}, nil
}

// IDs returns the trace and span ids of ctx's span, empty when it has none:
// for the log lines of an event.
func IDs(ctx context.Context) (traceID, spanID string) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return "", ""
	}
	return sc.TraceID().String(), sc.SpanID().String()
}

package gateway

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/acmecrm/integration-service/pkg/ops"
	"github.com/acmecrm/integration-service/pkg/telemetry"
)

// requestSpan continues the W3C trace of a request (its traceparent), or
// starts one, in a server span named after the route, and puts it in the
// request's context: the handler's spans and the record's headers hang
// under it. Probes and scrapes are not traced. With tracing off and no
// traceparent it costs nothing (noSpan); with tracing off and one, the
// context still passes through to the record. endRequestSpan ends it.
func requestSpan(c echo.Context, tracing telemetry.Tracing, tracer trace.Tracer) trace.Span {
	req := c.Request()
	route := c.Path()
	if route == ops.HealthPath || route == ops.ReadyPath || route == ops.MetricsPath ||
		(!tracing.Enabled && req.Header.Get("Traceparent") == "") {
		return noSpan
	}
	if route == "" {
		route = "unmatched"
	}
	ctx := telemetry.Propagator.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
	ctx, span := tracer.Start(ctx, req.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		semconv.HTTPRequestMethodKey.String(methodLabel(req.Method)), semconv.HTTPRoute(route), semconv.URLPath(req.URL.Path),
		semconv.ClientAddress(c.RealIP()), semconv.UserAgentOriginal(req.UserAgent())))
	c.SetRequest(req.WithContext(ctx))
	return span
}

// endRequestSpan records the status sent and ends span.
func endRequestSpan(span trace.Span, status int) {
	if span.IsRecording() {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= http.StatusInternalServerError {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	}
	span.End()
}

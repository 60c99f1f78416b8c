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

// traceRequests is middleware that continues the W3C trace of a request
// (its traceparent), or starts one, in a server span named after the route;
// the handler's spans and the record's headers hang under it. Probes and
// scrapes are not traced. With tracing off and no traceparent it costs
// nothing; with tracing off and one, the trace context still passes through
// to the record.
func traceRequests(tracing telemetry.Tracing) echo.MiddlewareFunc {
	tracer := tracing.Tracer("github.com/acmecrm/integration-service/pkg/gateway")
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			route := c.Path()
			if route == ops.HealthPath || route == ops.ReadyPath || route == ops.MetricsPath ||
				(!tracing.Enabled && req.Header.Get("Traceparent") == "") {
				return next(c)
			}
			if route == "" {
				route = "unmatched"
			}
			ctx := telemetry.Propagator.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
			ctx, span := tracer.Start(ctx, req.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
				semconv.HTTPRequestMethodKey.String(methodLabel(req.Method)), semconv.HTTPRoute(route), semconv.URLPath(req.URL.Path),
				semconv.ClientAddress(c.RealIP()), semconv.UserAgentOriginal(req.UserAgent())))
			defer span.End()
			c.SetRequest(req.WithContext(ctx))
			err := next(c) // Observe renders errors: the status is final here
			status := c.Response().Status
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
			if status >= http.StatusInternalServerError {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			return err
		}
	}
}

// Package telemetry provides the OpenTelemetry tracing of both binaries:
// a tracer provider configured from the standard OTEL_* environment
// variables (off, at near-zero cost, when no exporter is configured), the
// W3C trace-context propagation through HTTP requests and Kafka records,
// and the messaging attributes of OpenTelemetry's semantic conventions.
//
// It offers Setup (a binary's Tracing from OTEL_*), Off and Stop; the
// Propagator; Inject, InjectOrigin and Links (trace context in record
// headers); StartSend, Sent and StartProcess (messaging spans); IDs (trace
// ids for log lines); and the attributes of this service's spans.
package telemetry

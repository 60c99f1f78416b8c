package telemetry

import (
	"context"
	"strconv"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Record headers of trace context. traceparent and tracestate (W3C Trace
// Context, what OpenTelemetry's Kafka instrumentations read) carry the span
// of the last hop that wrote the record: the gateway's send, a dead-letter
// send, a replay. ce_traceparent and ce_tracestate (CloudEvents' distributed
// tracing extension, in the binding's ce_ form) carry the event's origin,
// the gateway's request span, and are never rewritten: a dead-lettered or
// replayed copy still names the trace the event arrived in.
const (
	headerTraceparent       = "traceparent"
	headerTracestate        = "tracestate"
	headerOriginTraceparent = "ce_traceparent"
	headerOriginTracestate  = "ce_tracestate"
)

// producerHeaders is a TextMapCarrier writing a record's headers: Set
// replaces a header of the same name (a copied record must not carry two).
type producerHeaders struct{ msg *sarama.ProducerMessage }

func (h producerHeaders) Get(key string) string {
	for _, rh := range h.msg.Headers {
		if string(rh.Key) == key {
			return string(rh.Value)
		}
	}
	return ""
}

func (h producerHeaders) Set(key, value string) {
	for i, rh := range h.msg.Headers {
		if string(rh.Key) == key {
			h.msg.Headers[i].Value = []byte(value)
			return
		}
	}
	h.msg.Headers = append(h.msg.Headers, sarama.RecordHeader{Key: []byte(key), Value: []byte(value)})
}

func (h producerHeaders) Keys() []string {
	keys := make([]string, len(h.msg.Headers))
	for i, rh := range h.msg.Headers {
		keys[i] = string(rh.Key)
	}
	return keys
}

// consumerHeaders is a TextMapCarrier reading a consumed record's headers.
type consumerHeaders []*sarama.RecordHeader

func (h consumerHeaders) Get(key string) string {
	for _, rh := range h {
		if rh != nil && string(rh.Key) == key {
			return string(rh.Value)
		}
	}
	return ""
}

func (consumerHeaders) Set(string, string) {}

func (h consumerHeaders) Keys() []string {
	keys := make([]string, 0, len(h))
	for _, rh := range h {
		if rh != nil {
			keys = append(keys, string(rh.Key))
		}
	}
	return keys
}

// originCarrier maps traceparent and tracestate to their ce_ origin headers.
type originCarrier struct{ propagation.TextMapCarrier }

func (o originCarrier) Get(key string) string { return o.TextMapCarrier.Get(origin(key)) }
func (o originCarrier) Set(key, v string)     { o.TextMapCarrier.Set(origin(key), v) }

func origin(key string) string {
	switch key {
	case headerTraceparent:
		return headerOriginTraceparent
	case headerTracestate:
		return headerOriginTracestate
	}
	return "ce_" + key
}

var traceContext = propagation.TraceContext{}

// Inject writes ctx's span context into msg's traceparent and tracestate
// headers (and baggage), replacing those it carries. Nothing is written
// when ctx has no span context.
func Inject(ctx context.Context, msg *sarama.ProducerMessage) {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return // nothing to write: no cost on an untraced request
	}
	Propagator.Inject(ctx, producerHeaders{msg})
}

// InjectOrigin writes ctx's span context into msg's ce_traceparent and
// ce_tracestate headers: the event's origin.
func InjectOrigin(ctx context.Context, msg *sarama.ProducerMessage) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	traceContext.Inject(ctx, originCarrier{producerHeaders{msg}})
}

// extract returns ctx with the span context of m's traceparent (the hop
// that wrote it) as the remote parent.
func extract(ctx context.Context, m *sarama.ConsumerMessage) context.Context {
	return Propagator.Extract(ctx, consumerHeaders(m.Headers))
}

// originOf returns the span context of m's ce_traceparent (the request the
// event arrived in), invalid when it has none.
func originOf(m *sarama.ConsumerMessage) trace.SpanContext {
	return trace.SpanContextFromContext(traceContext.Extract(context.Background(), originCarrier{consumerHeaders(m.Headers)}))
}

// hop returns the span context of m's traceparent, invalid when it has none.
func hop(m *sarama.ConsumerMessage) trace.SpanContext {
	return trace.SpanContextFromContext(traceContext.Extract(context.Background(), consumerHeaders(m.Headers)))
}

// noTracer stands in for a nil tracer: no spans, the context passed on.
var noTracer = noop.NewTracerProvider().Tracer("")

// Or returns t, or a tracer of no spans when t is nil.
func Or(t trace.Tracer) trace.Tracer {
	if t == nil {
		return noTracer
	}
	return t
}

// StartSend starts the producer span of sending a record to topic, named
// and attributed as OpenTelemetry's messaging conventions say.
func StartSend(ctx context.Context, tracer trace.Tracer, topic string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	return Or(tracer).Start(ctx, "send "+topic, append(opts, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		semconv.MessagingSystemKafka, semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send"),
		semconv.MessagingDestinationName(topic)))...)
}

// Sent records where Kafka put an acknowledged record.
func Sent(span trace.Span, msg *sarama.ProducerMessage) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(semconv.MessagingDestinationPartitionID(strconv.Itoa(int(msg.Partition))), semconv.MessagingKafkaOffset(int(msg.Offset)))
}

// StartProcess starts the consumer span of processing m in group, the
// child of the span that wrote it (its traceparent).
func StartProcess(ctx context.Context, tracer trace.Tracer, m *sarama.ConsumerMessage, group string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	ctx = extract(ctx, m)
	return Or(tracer).Start(ctx, "process "+m.Topic, append(opts, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		semconv.MessagingSystemKafka, semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationName(m.Topic), semconv.MessagingDestinationPartitionID(strconv.Itoa(int(m.Partition))),
		semconv.MessagingKafkaOffset(int(m.Offset)), semconv.MessagingConsumerGroupName(group),
		semconv.MessagingKafkaMessageKey(string(m.Key))))...)
}

// Links returns links to the spans m names: the hop that wrote it and the
// event's origin, those it carries.
func Links(m *sarama.ConsumerMessage) []trace.Link {
	var links []trace.Link
	for _, sc := range []trace.SpanContext{hop(m), originOf(m)} {
		if sc.IsValid() && (len(links) == 0 || !links[0].SpanContext.Equal(sc)) {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return links
}

// The attributes of this service's own: the event's id, its contact, what
// became of it and in how many calls.
var (
	EventID   = semconv.MessagingMessageID
	ContactID = attribute.Key("acmecrm.contact.id").String
	EventType = attribute.Key("acmecrm.event.type").String
	Outcome   = attribute.Key("acmecrm.outcome").String
	Attempts  = attribute.Key("acmecrm.attempts").Int
)

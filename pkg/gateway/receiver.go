package gateway

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/ops"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/pkg/telemetry"
	"github.com/acmecrm/integration-service/pkg/webhook"
)

// verifier authenticates a webhook's raw body with its headers.
type verifier interface {
	Verify(h http.Header, body []byte) error
}

// receiver receives AcmeCRM webhooks: it authenticates, validates and
// enqueues each, and answers 202 only after Kafka acknowledged the record.
type receiver struct {
	Verifier       verifier
	Enqueuer       kafka.Enqueuer
	Topic          string
	MaxBodyBytes   int64
	EnqueueTimeout time.Duration
	RetryAfter     time.Duration
	// StrictTypes refuses events of a type the worker does not know.
	StrictTypes bool
	// Budget, when set, bounds the bytes of bodies in flight.
	Budget  *semaphore.Weighted
	Metrics *Metrics
	// Tracer makes the spans of a request's steps (verify, validate, send)
	// under the request's span, when the request is traced.
	Tracer trace.Tracer
	Now    func() time.Time
	Log    zerolog.Logger
	// deniedAt is when Kafka last refused this service's writes for
	// authorization (Unix nanoseconds), 0 when the last write was allowed.
	deniedAt atomic.Int64
}

// authRecheck is how long a gateway whose writes Kafka refused for
// authorization stays not ready before it lets a request test again.
const authRecheck = 30 * time.Second

// errNotAuthorized makes /readyz answer 503 while Kafka refuses writes.
var errNotAuthorized = errors.New("kafka refuses this service's writes (authorization): fix the ACLs")

// authorized is ready, or errNotAuthorized for authRecheck after Kafka
// refused a write for authorization (ACLs): a load balancer then sends the
// webhooks to a gateway that can store them, and AcmeCRM retries.
func (h *receiver) authorized(ready ops.ReadyFunc) ops.ReadyFunc {
	return func() error {
		if at := h.deniedAt.Load(); at != 0 && time.Since(time.Unix(0, at)) < authRecheck {
			return errNotAuthorized
		}
		return ready()
	}
}

// noteAuthorization records whether a write was refused for authorization,
// and logs the changes only (not each request).
func (h *receiver) noteAuthorization(err error) {
	denied := errors.Is(err, sarama.ErrTopicAuthorizationFailed) || errors.Is(err, sarama.ErrClusterAuthorizationFailed)
	switch {
	case denied:
		if h.deniedAt.Swap(time.Now().UnixNano()) == 0 {
			h.Log.Error().Err(err).Str("topic", h.Topic).Msg("kafka refuses this service's writes (authorization): not ready, webhooks answered 503; fix the ACLs")
		}
	case err == nil:
		if h.deniedAt.Swap(0) != 0 {
			h.Log.Info().Str("topic", h.Topic).Msg("kafka accepts this service's writes again: ready")
		}
	}
}

// The machine-readable error codes of the JSON error bodies.
const (
	codeMethodNotAllowed     = "method_not_allowed"
	codeUnsupportedMediaType = "unsupported_media_type"
	codePayloadTooLarge      = "payload_too_large"
	codeUnreadableBody       = "unreadable_body"
	codeInvalidSignature     = "invalid_signature"
	codeInvalidJSON          = "invalid_json"
	codeInvalidUTF8          = "invalid_utf8"
	codeJSONTooDeep          = "json_too_deep"
	codeDuplicateKey         = "duplicate_key"
	codeUnpairedSurrogate    = "unpaired_surrogate"
	codeUnsupportedEncoding  = "unsupported_content_encoding"
	codeOverloaded           = "overloaded"
	codeInvalidEvent         = "invalid_event"
	codeKafkaUnavailable     = "kafka_unavailable"
	codeRecordTooLarge       = "record_too_large"
	codeRecordRefused        = "record_refused"
	codeNotFound             = "not_found"
)

// errorBody is the JSON body of every failure.
type errorBody struct {
	Error    string   `json:"error"`
	Message  string   `json:"message"`
	Problems []string `json:"problems,omitempty"`
}

// acceptedReply is the JSON body of a 202.
type acceptedReply struct {
	Status  string `json:"status"`
	EventID string `json:"event_id"`
}

// Serve handles one request on the webhook path, whatever its method.
func (h *receiver) Serve(c echo.Context) error {
	req := c.Request()
	if req.Method != http.MethodPost {
		c.Response().Header().Set("Allow", http.MethodPost)
		return fail(c, http.StatusMethodNotAllowed, codeMethodNotAllowed, "webhooks are sent with POST", nil)
	}
	if !isJSON(req.Header.Get(echo.HeaderContentType)) {
		return fail(c, http.StatusUnsupportedMediaType, codeUnsupportedMediaType, "Content-Type must be application/json", nil)
	}
	if !identityCoded(req.Header.Values(echo.HeaderContentEncoding)) {
		// No content coding is decoded (RFC 9110 §8.4): the signature covers
		// the bytes as sent, and a body taken as it is would be stored
		// still encoded. 415 with Accept-Encoding says what is (RFC 7694).
		c.Response().Header().Set(echo.HeaderAcceptEncoding, "identity")
		return h.beforeBody(c, fail(c, http.StatusUnsupportedMediaType, codeUnsupportedEncoding, "Content-Encoding must be identity (or absent): no coding is decoded", nil))
	}
	tooLarge := func() error {
		return fail(c, http.StatusRequestEntityTooLarge, codePayloadTooLarge, "body exceeds "+strconv.FormatInt(h.MaxBodyBytes, 10)+" bytes", nil)
	}
	if req.ContentLength > h.MaxBodyBytes {
		return h.beforeBody(c, tooLarge())
	}
	// The body's bytes are reserved before it is read, for as long as it is
	// held (until Kafka answered): what cannot be reserved at once is
	// refused, so a burst is answered 503 instead of growing the heap.
	reserve := req.ContentLength
	if reserve < 0 { // chunked: it may be as large as allowed
		reserve = h.MaxBodyBytes
	}
	if h.Budget != nil {
		if !h.Budget.TryAcquire(reserve) {
			h.Metrics.overloaded.Inc()
			h.retryAfter(c)
			return h.beforeBody(c, fail(c, http.StatusServiceUnavailable, codeOverloaded, "too many bodies in flight; send it again", nil))
		}
		h.Metrics.inflightBytes.Add(float64(reserve))
		defer func() {
			h.Budget.Release(reserve)
			h.Metrics.inflightBytes.Sub(float64(reserve))
		}()
	}
	body, err := readBody(req.Body, req.ContentLength, h.MaxBodyBytes)
	if err != nil {
		return fail(c, http.StatusBadRequest, codeUnreadableBody, "reading body: "+err.Error(), nil)
	}
	if int64(len(body)) > h.MaxBodyBytes {
		return tooLarge()
	}
	receivedAt := h.Now()
	ctx := req.Context() // with the request's span, when traced

	_, span := h.startSpan(ctx, "verify webhook signature")
	err = h.Verifier.Verify(req.Header, body)
	endSpan(span, err)
	if err != nil {
		h.Metrics.rejected(reasonOf(err))
		return fail(c, http.StatusUnauthorized, codeInvalidSignature, err.Error(), nil)
	}
	_, span = h.startSpan(ctx, "validate event")
	ev, err := acmecrm.Parse(body)
	endSpan(span, err)
	var invalid *acmecrm.ValidationError
	switch {
	case errors.As(err, &invalid):
		c.Set(ctxEventID, ev.EventID)
		return fail(c, http.StatusUnprocessableEntity, codeInvalidEvent, "the event breaks the AcmeCRM event rules", invalid.Problems)
	case errors.Is(err, acmecrm.ErrInvalidUTF8):
		return fail(c, http.StatusBadRequest, codeInvalidUTF8, err.Error(), nil)
	case errors.Is(err, acmecrm.ErrTooDeep):
		return fail(c, http.StatusBadRequest, codeJSONTooDeep, err.Error(), nil)
	case errors.Is(err, acmecrm.ErrDuplicateKey):
		return fail(c, http.StatusBadRequest, codeDuplicateKey, err.Error(), nil)
	case errors.Is(err, acmecrm.ErrUnpairedSurrogate):
		return fail(c, http.StatusBadRequest, codeUnpairedSurrogate, err.Error(), nil)
	case err != nil:
		return fail(c, http.StatusBadRequest, codeInvalidJSON, err.Error(), nil)
	}
	c.Set(ctxEventID, ev.EventID)
	if !ev.Known() && h.StrictTypes {
		return fail(c, http.StatusUnprocessableEntity, codeInvalidEvent, "the event breaks the AcmeCRM event rules", []string{acmecrm.UnknownTypeProblem(ev.EventType)})
	}

	msg := record.NewEventMessage(h.Topic, ev, body, req.Header.Get(webhook.HeaderID), receivedAt)
	// The record carries the trace: traceparent names the send below, the
	// ce_ origin headers the request (both as received when not traced).
	telemetry.InjectOrigin(ctx, msg)
	sendCtx, span := ctx, noSpan
	if trace.SpanFromContext(ctx).IsRecording() {
		sendCtx, span = telemetry.StartSend(ctx, h.Tracer, h.Topic, trace.WithAttributes(telemetry.EventID(ev.EventID), telemetry.ContactID(ev.Data.ContactID)))
	}
	telemetry.Inject(sendCtx, msg)
	// A sender that hangs up does not cut the wait short: the answer from
	// Kafka is still logged and counted for what it is.
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(sendCtx), h.EnqueueTimeout)
	defer cancel()
	start := time.Now()
	err = h.Enqueuer.Enqueue(sendCtx, msg)
	h.Metrics.enqueued(time.Since(start), err)
	h.noteAuthorization(err)
	if err == nil {
		h.Metrics.accepted.WithLabelValues(ev.EventType).Inc()
	}
	if err == nil {
		telemetry.Sent(span, msg)
	}
	endSpan(span, err)
	if err != nil {
		c.Set(ctxError, err)
		// What Kafka refuses for the record itself never succeeds when
		// sent again: not "try again" (a 503 would be retried for days).
		switch {
		case errors.Is(err, sarama.ErrMessageSizeTooLarge):
			return fail(c, http.StatusRequestEntityTooLarge, codeRecordTooLarge, "Kafka refuses a record this large (the topic's max.message.bytes): sending it again cannot succeed", nil)
		case errors.Is(err, sarama.ErrInvalidRecord), errors.Is(err, sarama.ErrInvalidMessage), errors.Is(err, sarama.ErrInvalidTimestamp):
			return fail(c, http.StatusUnprocessableEntity, codeRecordRefused, "Kafka refuses this record: sending it again cannot succeed", []string{"kafka: " + err.Error()})
		}
		h.retryAfter(c)
		return fail(c, http.StatusServiceUnavailable, codeKafkaUnavailable, "the event could not be enqueued; send it again", nil)
	}
	return c.JSONBlob(http.StatusAccepted, acceptedBody(ev.EventID))
}

// acceptedBody is AcceptedBody's JSON, as c.JSON would write it, without
// the reflection and the query parsing (?pretty) c.JSON does per call.
func acceptedBody(eventID string) []byte {
	b := make([]byte, 0, len(`{"status":"accepted","event_id":""}`)+len(eventID)+8)
	b = append(b, `{"status":"accepted","event_id":`...)
	b, _ = jsontext.AppendQuote(b, eventID) // the id is valid UTF-8: Parse checked the body
	return append(b, "}\n"...)
}

// beforeBody ends a request answered before its body was read: the answer
// is sent at once, then the body is read and discarded (at most
// MaxBodyBytes, through a small shared buffer: time, not memory). Without
// this, net/http discards 256 KiB and closes the connection under a sender
// still writing, whose kernel may then reset it and lose the answer (what
// nginx's lingering close avoids): the sender would see a broken pipe
// instead of a 503 it can act on.
func (h *receiver) beforeBody(c echo.Context, answered error) error {
	_ = http.NewResponseController(c.Response().Writer).Flush()
	_, _ = io.CopyN(io.Discard, c.Request().Body, h.MaxBodyBytes)
	return answered
}

// noSpan is the span of steps of a request that is not traced: no cost.
var noSpan = trace.SpanFromContext(context.Background())

// startSpan starts a child span of ctx's span named name, when that span is
// recorded.
func (h *receiver) startSpan(ctx context.Context, name string) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, noSpan
	}
	return h.Tracer.Start(ctx, name)
}

// endSpan ends span, marking it failed with err.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func (h *receiver) retryAfter(c echo.Context) {
	c.Response().Header().Set("Retry-After", strconv.Itoa(max(1, int(h.RetryAfter.Round(time.Second).Seconds()))))
}

// readBody reads a body of declared length n (-1: unknown) into a buffer
// of its size, or, unknown, at most one byte past max: never an unbounded
// read, never a buffer grown by doubling.
func readBody(r io.Reader, n, max int64) ([]byte, error) {
	if n < 0 {
		return io.ReadAll(io.LimitReader(r, max+1))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body, nil
}

// Context keys the access log reads.
const (
	ctxEventID = "event_id"
	ctxError   = "error"
	ctxReason  = "reason"
)

func fail(c echo.Context, status int, code, msg string, problems []string) error {
	c.Set(ctxReason, code+": "+msg)
	return c.JSON(status, errorBody{Error: code, Message: msg, Problems: problems})
}

// isJSON accepts application/json and any application/*+json, with parameters.
func isJSON(contentType string) bool {
	if contentType == "application/json" { // what AcmeCRM sends: no parsing
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// identityCoded reports whether the Content-Encoding field values name no
// coding but identity (RFC 9110 §8.4: a comma-separated list).
func identityCoded(values []string) bool {
	for _, v := range values {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return false
			}
		}
	}
	return true
}

// reasonOf labels a verification failure for the metrics.
func reasonOf(err error) string {
	switch {
	case errors.Is(err, webhook.ErrMissingHeader):
		return "missing_header"
	case errors.Is(err, webhook.ErrInvalidTimestamp):
		return "invalid_timestamp"
	case errors.Is(err, webhook.ErrTimestampTolerance):
		return "timestamp_tolerance"
	default:
		return "signature_mismatch"
	}
}

// renderErrors renders echo's own errors (unknown route, panics) as ErrorBody.
func renderErrors(log zerolog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status, code, msg := http.StatusInternalServerError, "internal_error", "internal error"
		var he *echo.HTTPError
		if errors.As(err, &he) {
			status = he.Code
			msg = http.StatusText(status)
			code = strings.ReplaceAll(strings.ToLower(msg), " ", "_")
		} else {
			log.Error().Err(err).Str("path", c.Request().URL.Path).Msg("unhandled error")
		}
		if status == http.StatusNotFound {
			code = codeNotFound
		}
		c.Set(ctxReason, code)
		if err := c.JSON(status, errorBody{Error: code, Message: msg}); err != nil {
			log.Error().Err(err).Msg("writing error response")
		}
	}
}

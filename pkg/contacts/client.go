package contacts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/acmecrm/integration-service/pkg/telemetry"
)

// Client calls the Contacts API. It is safe for concurrent use and reuses
// connections.
type Client struct {
	base  string
	token string
	http  *http.Client
	now   func() time.Time
}

// Option configures a Client.
type Option func(*options)

type options struct{ tracerProvider trace.TracerProvider }

// WithTracerProvider makes a client span of every call with tp, the child
// of the call's context's span, and sends its W3C traceparent to the API.
// Without it, a traceparent in the call's context is still passed on.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// NewClient returns a client of the API at baseURL that sends token as a
// bearer token (none when empty) and gives up on one call after timeout.
// It keeps up to conns idle connections (at least 64): as many as calls are
// made at once, so a busy worker does not open and close one per call.
func NewClient(baseURL, token string, timeout time.Duration, conns int, opts ...Option) *Client {
	o := options{tracerProvider: noop.NewTracerProvider()}
	for _, opt := range opts {
		opt(&o)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = max(conns, 64)
	transport.MaxIdleConns = max(conns, transport.MaxIdleConns)
	traced := otelhttp.NewTransport(transport, otelhttp.WithTracerProvider(o.tracerProvider), otelhttp.WithPropagators(telemetry.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " /contacts/{contact_id}" }))
	return &Client{
		base:  strings.TrimRight(baseURL, "/"),
		token: token,
		http: &http.Client{Timeout: timeout, Transport: traced,
			// A 3xx is never followed: Go's client would turn a PUT into a
			// GET and call its 200 a success. It is answered as it is
			// (CauseRedirected).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		now: time.Now,
	}
}

// Put creates or replaces the contact, once per idempotency key.
func (c *Client) Put(ctx context.Context, contact Contact, idempotencyKey string) error {
	body, err := json.Marshal(contact)
	if err != nil {
		return &PermanentError{Cause: CauseRejected, Err: fmt.Errorf("encoding contact: %w", err)}
	}
	_, err = c.do(ctx, http.MethodPut, contact.AcmeContactID, idempotencyKey, body)
	return err
}

// Delete deletes the contact. An answer of 404 or 410 returns ErrGone: the
// contact is not there, which is done for a delete when the base URL is
// right (the caller decides).
func (c *Client) Delete(ctx context.Context, contactID, idempotencyKey string) error {
	status, err := c.do(ctx, http.MethodDelete, contactID, idempotencyKey, nil)
	if status == http.StatusNotFound || status == http.StatusGone {
		return ErrGone
	}
	return err
}

// do makes one call and returns the status it got (0 for none) and a typed
// error for anything but a 2xx.
func (c *Client) do(ctx context.Context, method, contactID, idempotencyKey string, body []byte) (int, error) {
	u := c.base + "/contacts/" + url.PathEscape(contactID)
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, &PermanentError{Cause: CauseRejected, Err: fmt.Errorf("building request: %w", err)}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Idempotency-Key", idempotencyKey)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err() // stopping: neither transient nor permanent
		}
		// Refused, reset, timed out: the network is worth another try.
		return 0, &TransientError{Cause: CauseUnavailable, Err: err}
	}
	defer resp.Body.Close()
	// Read a bounded part of the body: enough for an error message, and the
	// rest drained so the connection can be reused.
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, classify(resp, strings.TrimSpace(string(msg)), c.now())
}

package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/semaphore"

	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/pkg/telemetry"
	"github.com/acmecrm/integration-service/pkg/webhook"
)

const (
	testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	testPath   = "/webhooks/acmecrm"
	maxBody    = 4096
)

// fakeEnqueuer records what it is given; err makes it refuse, block makes
// it wait for the context to end (Kafka not answering).
type fakeEnqueuer struct {
	mu    sync.Mutex
	msgs  []*sarama.ProducerMessage
	err   error
	block bool
}

func (f *fakeEnqueuer) Enqueue(ctx context.Context, msg *sarama.ProducerMessage) error {
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, msg)
	return nil
}

func newTestServer(t *testing.T, enq kafka.Enqueuer) *httptest.Server {
	srv, _ := serveTestHandler(t, enq, nil, &lameDuck{})
	return srv
}

// serveTestHandler serves a handler of the test secret and limits, with
// budget (none when nil) and the lame-duck switch ld.
func serveTestHandler(t *testing.T, enq kafka.Enqueuer, budget *semaphore.Weighted, ld *lameDuck) (*httptest.Server, *receiver) {
	t.Helper()
	v, err := webhook.NewVerifier([]string{testSecret}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h := &receiver{
		Verifier: v, Enqueuer: enq, Topic: "contact-events", MaxBodyBytes: maxBody,
		EnqueueTimeout: 50 * time.Millisecond, RetryAfter: 5 * time.Second, Budget: budget,
		Metrics: NewMetrics(reg), Now: time.Now,
	}
	srv := httptest.NewServer(newEcho(h, testPath, func() error { return nil }, ld, reg, telemetry.Off(), zerolog.Nop()))
	t.Cleanup(srv.Close)
	return srv, h
}

const validBody = `{"event_type":"contact.created","event_id":"evt_12345","timestamp":"2025-05-17T17:06:39-07:00","data":{"contact_id":"1234","acme_first_name":"John","acme_last_name":"Doe","acme_email":"john.doe@example.com","acme_phone":"555-123-4567"}}`

// signed returns a request signed with testSecret at ts.
func signed(t *testing.T, method, body string, ts time.Time) *http.Request {
	t.Helper()
	key, _ := webhook.DecodeSecret(testSecret)
	req, err := http.NewRequest(method, testPath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(webhook.HeaderID, "msg_1")
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign(key, "msg_1", ts.Unix(), []byte(body)))
	return req
}

// padded returns a valid event body of exactly n bytes.
func padded(n int) string {
	base := `{"event_type":"contact.updated","event_id":"evt_pad","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"9"},"pad":""}`
	return strings.Replace(base, `"pad":""`, `"pad":"`+strings.Repeat("x", n-len(base))+`"`, 1)
}

type statusCase struct {
	name       string
	req        func(t *testing.T) *http.Request
	enq        *fakeEnqueuer
	wantStatus int
	wantError  string // the error code of the JSON body
}

func statusCases() []statusCase {
	now := time.Now()
	with := func(method, body string, edit func(r *http.Request)) func(t *testing.T) *http.Request {
		return func(t *testing.T) *http.Request {
			r := signed(t, method, body, now)
			if edit != nil {
				edit(r)
			}
			return r
		}
	}
	return []statusCase{
		{"valid created", with("POST", validBody, nil), nil, 202, ""},
		{"valid updated, unknown fields kept", with("POST", `{"event_type":"contact.updated","event_id":"e2","timestamp":"2025-05-17T17:06:39Z","extra":{"a":1},"data":{"contact_id":"1","acme_tags":["x"]}}`, nil), nil, 202, ""},
		{"valid deleted", with("POST", `{"event_type":"contact.deleted","event_id":"e3","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, nil), nil, 202, ""},
		{"JSON with charset", with("POST", validBody, func(r *http.Request) { r.Header.Set("Content-Type", "application/json; charset=utf-8") }), nil, 202, ""},
		{"body exactly at the limit", with("POST", padded(maxBody), nil), nil, 202, ""},
		{"GET", with("GET", "", nil), nil, 405, codeMethodNotAllowed},
		{"PUT", with("PUT", validBody, nil), nil, 405, codeMethodNotAllowed},
		{"text/plain", with("POST", validBody, func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }), nil, 415, codeUnsupportedMediaType},
		{"no Content-Type", with("POST", validBody, func(r *http.Request) { r.Header.Del("Content-Type") }), nil, 415, codeUnsupportedMediaType},
		{"form", with("POST", "a=b", func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") }), nil, 415, codeUnsupportedMediaType},
		{"body one byte over the limit", with("POST", padded(maxBody+1), nil), nil, 413, codePayloadTooLarge},
		{"body over the limit without Content-Length", with("POST", padded(maxBody+100), func(r *http.Request) {
			r.ContentLength = -1
			r.Body = io.NopCloser(strings.NewReader(padded(maxBody + 100)))
		}), nil, 413, codePayloadTooLarge},
		{"missing signature", with("POST", validBody, func(r *http.Request) { r.Header.Del(webhook.HeaderSignature) }), nil, 401, codeInvalidSignature},
		{"wrong signature", with("POST", validBody, func(r *http.Request) { r.Header.Set(webhook.HeaderSignature, "v1,AAAA") }), nil, 401, codeInvalidSignature},
		{"old timestamp", func(t *testing.T) *http.Request { return signed(t, "POST", validBody, now.Add(-10*time.Minute)) }, nil, 401, codeInvalidSignature},
		{"not JSON", with("POST", "hello", nil), nil, 400, codeInvalidJSON},
		{"JSON array", with("POST", `[1,2]`, nil), nil, 400, codeInvalidJSON},
		{"JSON null", with("POST", `null`, nil), nil, 400, codeInvalidJSON},
		{"50 signatures, one valid", with("POST", validBody, func(r *http.Request) {
			r.Header.Set(webhook.HeaderSignature, strings.Repeat("v1,AAAA ", 49)+r.Header.Get(webhook.HeaderSignature))
		}), nil, 202, ""},
		{"missing event_id", with("POST", `{"event_type":"contact.created","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, nil), nil, 422, codeInvalidEvent},
		{"unknown event_type: accepted for a later release", with("POST", `{"event_type":"contact.merged","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`, nil), nil, 202, ""},
		{"bad timestamp", with("POST", `{"event_type":"contact.created","event_id":"e","timestamp":"yesterday","data":{"contact_id":"1"}}`, nil), nil, 422, codeInvalidEvent},
		{"truncated body", with("POST", validBody[:len(validBody)-5], nil), nil, 400, codeInvalidJSON},
		{"invalid UTF-8 inside a string", with("POST", strings.Replace(validBody, "John", "Jo\xffhn", 1), nil), nil, 400, codeInvalidUTF8},
		{"JSON nested 1,000 levels", with("POST", strings.Replace(validBody, `"data"`, `"x":`+strings.Repeat("[", 1000)+strings.Repeat("]", 1000)+`,"data"`, 1), nil), nil, 400, codeJSONTooDeep},
		{"JSON nested 16 levels (the limit)", with("POST", strings.Replace(validBody, `"data"`, `"x":`+strings.Repeat("[", 15)+strings.Repeat("]", 15)+`,"data"`, 1), nil), nil, 202, ""},
		{"duplicate key", with("POST", strings.Replace(validBody, `"event_id"`, `"event_type":"contact.deleted","event_id"`, 1), nil), nil, 400, codeDuplicateKey},
		{"duplicate key inside data", with("POST", strings.Replace(validBody, `"acme_phone"`, `"contact_id":"666","acme_phone"`, 1), nil), nil, 400, codeDuplicateKey},
		{"escaped lone surrogate in contact_id", with("POST", strings.Replace(validBody, `"contact_id":"`, `"contact_id":"\ud800`, 1), nil), nil, 400, codeUnpairedSurrogate},
		{"escaped lone surrogate in an unknown field", with("POST", strings.Replace(validBody, `"data"`, `"note":"x\udfff","data"`, 1), nil), nil, 400, codeUnpairedSurrogate},
		{"escaped surrogate pair in a name", with("POST", strings.Replace(validBody, "John", `Jo\ud83d\ude00hn`, 1), nil), nil, 202, ""},
		{"contact_id not one URL path segment", with("POST", strings.Replace(validBody, `"contact_id":"`, `"contact_id":"a/`, 1), nil), nil, 422, codeInvalidEvent},
		{"contact_id a dot-segment", with("POST", `{"event_type":"contact.deleted","event_id":"e3","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":".."}}`, nil), nil, 422, codeInvalidEvent},
		{"gzip body signed over the JSON", with("POST", validBody, func(r *http.Request) { r.Header.Set("Content-Encoding", "gzip") }), nil, 415, codeUnsupportedEncoding},
		{"plain body labelled br", with("POST", validBody, func(r *http.Request) { r.Header.Set("Content-Encoding", "br") }), nil, 415, codeUnsupportedEncoding},
		{"identity coding", with("POST", validBody, func(r *http.Request) { r.Header.Set("Content-Encoding", "identity") }), nil, 202, ""},
		{"same key in two objects", with("POST", strings.Replace(validBody, `"data":{`, `"meta":{"contact_id":"x"},"data":{`, 1), nil), nil, 202, ""},
		{"lowercase t and z in the timestamp", with("POST", strings.Replace(validBody, "2025-05-17T17:06:39-07:00", "2025-05-17t17:06:39z", 1), nil), nil, 202, ""},
		{"unknown extra fields", with("POST", strings.Replace(validBody, `"data"`, `"source":{"system":"acmecrm","v":2},"data"`, 1), nil), nil, 202, ""},
		{"Kafka refuses", with("POST", validBody, nil), &fakeEnqueuer{err: sarama.ErrNotEnoughReplicas}, 503, codeKafkaUnavailable},
		{"Kafka refuses the record as too large", with("POST", validBody, nil), &fakeEnqueuer{err: sarama.ErrMessageSizeTooLarge}, 413, codeRecordTooLarge},
		{"Kafka refuses the record as invalid", with("POST", validBody, nil), &fakeEnqueuer{err: sarama.ErrInvalidRecord}, 422, codeRecordRefused},
		{"Kafka does not answer in time", with("POST", validBody, nil), &fakeEnqueuer{block: true}, 503, codeKafkaUnavailable},
	}
}

func TestStatusTable(t *testing.T) {
	for _, tt := range statusCases() {
		t.Run(tt.name, func(t *testing.T) {
			enq := tt.enq
			if enq == nil {
				enq = &fakeEnqueuer{}
			}
			srv := newTestServer(t, enq)
			req := tt.req(t)
			req.URL.Scheme, req.URL.Host, req.RequestURI = "http", strings.TrimPrefix(srv.URL, "http://"), ""
			var sent []byte
			if req.Body != nil {
				sent, _ = io.ReadAll(req.Body)
				req.Body = io.NopCloser(bytes.NewReader(sent))
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if tt.wantStatus == 202 {
				var got acceptedReply
				if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got.Status != "accepted" || got.EventID == "" {
					t.Errorf("body %+v, %v; want status accepted with the event id", got, err)
				}
				if len(enq.msgs) != 1 {
					t.Fatalf("enqueued %d records, want 1", len(enq.msgs))
				}
				if v, _ := enq.msgs[0].Value.Encode(); !bytes.Equal(v, sent) {
					t.Errorf("record value differs from the body:\n got %s\nwant %s", v, sent)
				}
				return
			}
			var got errorBody
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("error body: %v", err)
			}
			if got.Error != tt.wantError || got.Message == "" {
				t.Errorf("got error %q (%q), want %q", got.Error, got.Message, tt.wantError)
			}
			if len(enq.msgs) != 0 {
				t.Errorf("enqueued %d records for a %d, want none", len(enq.msgs), tt.wantStatus)
			}
			switch tt.wantStatus {
			case 405:
				if resp.Header.Get("Allow") != "POST" {
					t.Errorf("Allow %q, want POST", resp.Header.Get("Allow"))
				}
			case 503:
				if resp.Header.Get("Retry-After") != "5" {
					t.Errorf("Retry-After %q, want 5", resp.Header.Get("Retry-After"))
				}
			case 422:
				if len(got.Problems) == 0 {
					t.Error("422 without problems")
				}
			}
		})
	}
}

func TestRecordFormat(t *testing.T) {
	enq := &fakeEnqueuer{}
	srv := newTestServer(t, enq)
	req := signed(t, "POST", validBody, time.Now())
	req.URL.Scheme, req.URL.Host, req.RequestURI = "http", strings.TrimPrefix(srv.URL, "http://"), ""
	before := time.Now().UTC()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 || len(enq.msgs) != 1 {
		t.Fatalf("got %d and %d records, want 202 and 1", resp.StatusCode, len(enq.msgs))
	}
	m := enq.msgs[0]
	if m.Topic != "contact-events" {
		t.Errorf("topic %q", m.Topic)
	}
	if k, _ := m.Key.Encode(); string(k) != "1234" {
		t.Errorf("key %q, want the contact id 1234", k)
	}
	got := map[string]string{}
	for _, h := range m.Headers {
		got[string(h.Key)] = string(h.Value)
	}
	receivedAt, err := time.Parse(time.RFC3339Nano, got[record.HeaderReceivedAt])
	if err != nil || receivedAt.Before(before.Add(-time.Second)) || receivedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("received_at %q is not the gateway's clock now (%v)", got[record.HeaderReceivedAt], err)
	}
	delete(got, record.HeaderReceivedAt)
	want := map[string]string{
		"ce_specversion": "1.0", "ce_id": "evt_12345", "ce_source": "acmecrm", "ce_type": "contact.created",
		"ce_time": "2025-05-17T17:06:39-07:00", "content-type": "application/json", "webhook_id": "msg_1",
	}
	if len(got) != len(want) {
		t.Errorf("headers %v, want %v plus received_at", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q", k, got[k], v)
		}
	}
}

// Every status the webhook handler answers is documented in docs/openapi.yaml
// for the webhook path, and every documented status is one it answers.
func TestOpenAPIDocumentsEveryStatus(t *testing.T) {
	seen := map[string]bool{}
	for _, tt := range statusCases() {
		seen[strconv.Itoa(tt.wantStatus)] = true
	}
	seen["400"] = true // also unreadable_body, which needs a broken connection to provoke
	raw, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]any `yaml:"responses"`
		} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for code := range doc.Paths[testPath]["post"].Responses {
		documented[code] = true
	}
	var missing, extra []string
	for code := range seen {
		if !documented[code] {
			missing = append(missing, code)
		}
	}
	for code := range documented {
		if !seen[code] {
			extra = append(extra, code)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("docs/openapi.yaml: undocumented statuses %v, documented but never answered %v", missing, extra)
	}

	// And every error code: in the Error schema's enum and in
	// docs/gateway.md's table, and each one documented is answered.
	var codes struct {
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Error struct {
							Enum []string `yaml:"enum"`
						} `yaml:"error"`
					} `yaml:"properties"`
				} `yaml:"Error"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &codes); err != nil {
		t.Fatal(err)
	}
	table, err := os.ReadFile("../../docs/gateway.md")
	if err != nil {
		t.Fatal(err)
	}
	// unreadable_body needs a broken connection to provoke; overloaded a
	// budget (hardening_test.go).
	answered := map[string]bool{codeUnreadableBody: true, codeOverloaded: true}
	for _, tt := range statusCases() {
		if tt.wantError != "" {
			answered[tt.wantError] = true
		}
	}
	enum := map[string]bool{}
	for _, c := range codes.Components.Schemas.Error.Properties.Error.Enum {
		enum[c] = true
		if !answered[c] {
			t.Errorf("docs/openapi.yaml documents error %s, which no case answers", c)
		}
	}
	for c := range answered {
		if !enum[c] {
			t.Errorf("error %s is not in docs/openapi.yaml's Error enum", c)
		}
		if !strings.Contains(string(table), "`"+c+"`") {
			t.Errorf("error %s is not in docs/gateway.md", c)
		}
	}
}

func TestUnknownRouteIsJSON(t *testing.T) {
	srv := newTestServer(t, &fakeEnqueuer{})
	resp, err := http.Get(srv.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got errorBody
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 404 || got.Error != codeNotFound {
		t.Errorf("got %d %+v (%v), want 404 not_found", resp.StatusCode, got, err)
	}
}

// acceptedBody writes what c.JSON wrote for AcceptedBody, whatever the id.
func TestAcceptedBody(t *testing.T) {
	for _, id := range []string{"evt_12345", `a"b\c`, "tab\there", "<script>&", "ünïcödé ☃", "\u2028"} {
		b := acceptedBody(id)
		var got acceptedReply
		if err := json.Unmarshal(b, &got); err != nil || got != (acceptedReply{Status: "accepted", EventID: id}) {
			t.Errorf("%q: %s reads as %+v (%v)", id, b, got, err)
		}
		if !bytes.HasSuffix(b, []byte("}\n")) {
			t.Errorf("%q: %q does not end in a newline, as c.JSON's did", id, b)
		}
	}
}

// The request series are counted per route, method and status as before the
// lookups were cached, and a made-up method is one "other" series.
func TestRequestMetricsLabels(t *testing.T) {
	srv, h := serveTestHandler(t, &fakeEnqueuer{}, nil, &lameDuck{})
	for _, method := range []string{"POST", "POST", "BREW", "PROPFIND", "GET"} {
		req := signed(t, method, validBody, time.Now())
		req.URL, _ = req.URL.Parse(srv.URL + testPath)
		req.RequestURI = ""
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for _, tc := range []struct {
		method, status string
		want           float64
	}{{"POST", "202", 2}, {"other", "405", 2}, {"GET", "405", 1}} {
		if got := testutil.ToFloat64(h.Metrics.requests.WithLabelValues(testPath, tc.method, tc.status)); got != tc.want {
			t.Errorf("requests{%s,%s} = %v, want %v", tc.method, tc.status, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(h.Metrics.requests); n != 3 {
		t.Errorf("%d request series, want 3", n)
	}
	// Both outcomes are exported from the start (a rate of failures is 0,
	// not absent, before the first one).
	if n := testutil.CollectAndCount(h.Metrics.enqueue); n != 2 {
		t.Errorf("%d enqueue series, want 2 (acked, failed)", n)
	}
}

func TestRequestIDsAreUnique(t *testing.T) {
	a, b := requestIDs(), requestIDs()
	seen := map[string]bool{}
	for range 1000 {
		for _, id := range []string{a(), b()} {
			if seen[id] || len(id) < 18 {
				t.Fatalf("id %q repeated or short", id)
			}
			seen[id] = true
		}
	}
}

// Before Kafka is reached, webhooks are answered 503 with Retry-After (the
// sender retries), and nothing is held.
func TestWebhooksBeforeKafkaConnectsGet503(t *testing.T) {
	srv := newTestServer(t, &lateEnqueuer{})
	req := signed(t, "POST", validBody, time.Now())
	req.URL, _ = req.URL.Parse(srv.URL + testPath)
	req.RequestURI = ""
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body errorBody
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusServiceUnavailable || body.Error != codeKafkaUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("got %d %+v Retry-After %q; want 503 kafka_unavailable with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
}

// An event_type the worker does not know is accepted (202) and counted by
// type; GATEWAY_STRICT_EVENT_TYPES refuses it with 422 instead.
func TestUnknownEventType(t *testing.T) {
	body := `{"event_type":"contact.merged","event_id":"e","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"1"}}`
	for _, strict := range []bool{false, true} {
		enq := &fakeEnqueuer{}
		srv, h := serveTestHandler(t, enq, nil, &lameDuck{})
		h.StrictTypes = strict
		req := signed(t, "POST", body, time.Now())
		req.URL.Scheme, req.URL.Host, req.RequestURI = "http", strings.TrimPrefix(srv.URL, "http://"), ""
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := map[bool]int{false: 202, true: 422}[strict]
		if resp.StatusCode != want {
			t.Errorf("strict %v: %d, want %d", strict, resp.StatusCode, want)
		}
		if got := testutil.ToFloat64(h.Metrics.accepted.WithLabelValues("contact.merged")); got != map[bool]float64{false: 1, true: 0}[strict] {
			t.Errorf("strict %v: counted %v accepted contact.merged", strict, got)
		}
	}
}

// Kafka refusing this service's writes for authorization makes the gateway
// not ready (a load balancer sends webhooks elsewhere), logged once per
// change; a write allowed again makes it ready.
func TestAuthorizationFailureIsNotReady(t *testing.T) {
	enq := &fakeEnqueuer{err: sarama.ErrTopicAuthorizationFailed}
	srv, h := serveTestHandler(t, enq, nil, &lameDuck{})
	var logs bytes.Buffer
	h.Log = zerolog.New(&logs)
	send := func() int {
		req := signed(t, "POST", validBody, time.Now())
		req.URL.Scheme, req.URL.Host, req.RequestURI = "http", strings.TrimPrefix(srv.URL, "http://"), ""
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ready := h.authorized(func() error { return nil })
	if err := ready(); err != nil {
		t.Fatalf("not ready before any refusal: %v", err)
	}
	for range 3 {
		if got := send(); got != 503 {
			t.Errorf("refused write answered %d, want 503", got)
		}
	}
	if err := ready(); !errors.Is(err, errNotAuthorized) {
		t.Errorf("ready after authorization refusals: %v, want errNotAuthorized", err)
	}
	if n := strings.Count(logs.String(), "authorization"); n != 1 {
		t.Errorf("%d log lines about authorization for 3 refusals, want 1 (once per change):\n%s", n, logs.String())
	}
	enq.mu.Lock()
	enq.err = nil
	enq.mu.Unlock()
	if got := send(); got != 202 {
		t.Errorf("allowed write answered %d, want 202", got)
	}
	if err := ready(); err != nil {
		t.Errorf("not ready after a write was allowed again: %v", err)
	}
}

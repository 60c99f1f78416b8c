package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/telemetry"
	"github.com/acmecrm/integration-service/pkg/webhook"
)

// ackAll acknowledges every record at once: the handler path alone.
type ackAll struct{}

func (ackAll) Enqueue(context.Context, *sarama.ProducerMessage) error { return nil }

// BenchmarkServe: one accepted webhook through the whole HTTP handler (request
// id, metrics and access log in JSON, recovery, verify, parse, the record,
// the 202), Kafka answering at once. make bench reports its allocations.
func BenchmarkServe(b *testing.B) {
	v, err := webhook.NewVerifier([]string{testSecret}, 5*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h := &receiver{
		Verifier: v, Enqueuer: ackAll{}, Topic: "contact-events", MaxBodyBytes: 1 << 20,
		EnqueueTimeout: 10 * time.Second, RetryAfter: 5 * time.Second, Budget: semaphore.NewWeighted(32 << 20),
		Metrics: NewMetrics(reg), Now: time.Now,
	}
	e := newEcho(h, testPath, func() error { return nil }, &lameDuck{}, reg, telemetry.Off(), zerolog.New(io.Discard).With().Timestamp().Logger())
	key, _ := webhook.DecodeSecret(testSecret)
	ts := time.Now().Unix()
	headers := http.Header{
		"Content-Type": {"application/json"},
		http.CanonicalHeaderKey(webhook.HeaderID):        {"msg_1"},
		http.CanonicalHeaderKey(webhook.HeaderTimestamp): {strconv.FormatInt(ts, 10)},
		http.CanonicalHeaderKey(webhook.HeaderSignature): {webhook.Sign(key, "msg_1", ts, []byte(validBody))},
	}
	body := strings.NewReader(validBody)
	req := httptest.NewRequest(http.MethodPost, testPath, body)
	b.ReportAllocs()
	for b.Loop() {
		body.Reset(validBody)
		r := req.Clone(req.Context())
		r.Body, r.ContentLength, r.Header = io.NopCloser(body), int64(len(validBody)), headers
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, r)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkParse: the event parser alone, on the sample body.
func BenchmarkParse(b *testing.B) {
	body := []byte(validBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := acmecrm.Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}

package worker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/record"
)

type apiCall struct{ method, id, key string }

// fakeAPI answers each call with the next of its results (the last repeats).
type fakeAPI struct {
	mu      sync.Mutex
	results []error
	calls   []apiCall
	put     []contacts.Contact
}

func (f *fakeAPI) next(c apiCall) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	return f.results[min(len(f.calls)-1, len(f.results)-1)]
}

func (f *fakeAPI) Put(_ context.Context, c contacts.Contact, key string) error {
	f.mu.Lock()
	f.put = append(f.put, c)
	f.mu.Unlock()
	return f.next(apiCall{"PUT", c.AcmeContactID, key})
}

func (f *fakeAPI) Delete(_ context.Context, id, key string) error {
	return f.next(apiCall{"DELETE", id, key})
}

type fakeDLQ struct{ failures []record.Failure }

func (f *fakeDLQ) DeadLetter(ctx context.Context, _ *sarama.ConsumerMessage, fl record.Failure) (contactstate.Position, error) {
	f.failures = append(f.failures, fl)
	return contactstate.Position{Offset: int64(len(f.failures) - 1)}, ctx.Err()
}

func newTestProcessor(api *fakeAPI, dlq *fakeDLQ) *processor {
	return &processor{
		API:          api,
		Retrier:      newRetrier(config.Retry{InitialInterval: time.Millisecond, Multiplier: 2, MaxInterval: 5 * time.Millisecond, MaxElapsedTime: 100 * time.Millisecond}, nil, nil),
		DeadLetterer: dlq, Group: "contact-worker", Metrics: NewMetrics(prometheus.NewRegistry()), Log: zerolog.Nop(), Now: time.Now,
	}
}

func msg(value string) *sarama.ConsumerMessage {
	return &sarama.ConsumerMessage{Topic: "contact-events", Partition: 2, Offset: 41, Key: []byte("1234"), Value: []byte(value)}
}

const created = `{"event_type":"contact.created","event_id":"evt_1","timestamp":"2025-05-17T17:06:39-07:00","data":{"contact_id":"1234","acme_first_name":"John"}}`

func TestProcess(t *testing.T) {
	transient := &contacts.TransientError{Status: 503, Err: errors.New("down")}
	tests := []struct {
		name         string
		value        string
		results      []error
		want         eventOutcome
		wantCalls    []apiCall
		wantKind     record.Kind
		wantAttempts int
	}{
		{"created", created, []error{nil}, outcomeApplied, []apiCall{{"PUT", "1234", "evt_1"}}, "", 0},
		{"updated", strings.Replace(created, "created", "updated", 1), []error{nil}, outcomeApplied, []apiCall{{"PUT", "1234", "evt_1"}}, "", 0},
		{"deleted", strings.Replace(created, "created", "deleted", 1), []error{nil}, outcomeApplied, []apiCall{{"DELETE", "1234", "evt_1"}}, "", 0},
		{"503 twice then 200", created, []error{transient, transient, nil}, outcomeApplied, []apiCall{{"PUT", "1234", "evt_1"}, {"PUT", "1234", "evt_1"}, {"PUT", "1234", "evt_1"}}, "", 0},
		{"400", created, []error{&contacts.PermanentError{Status: 400, Err: errors.New("bad")}}, outcomeDeadLettered, []apiCall{{"PUT", "1234", "evt_1"}}, record.KindPermanent, 1},
		{"invalid JSON", `{"event_type":`, nil, outcomeDeadLettered, nil, record.KindInvalid, 0},
		{"a type AcmeCRM added: unsupported, no call", strings.Replace(created, "contact.created", "contact.merged", 1), nil, outcomeDeadLettered, nil, record.KindUnsupported, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api, dlq := &fakeAPI{results: append(tt.results, nil)}, &fakeDLQ{}
			got, _ := newTestProcessor(api, dlq).Process(context.Background(), msg(tt.value))
			if got != tt.want {
				t.Fatalf("outcome %s, want %s", got, tt.want)
			}
			if len(api.calls) != len(tt.wantCalls) {
				t.Fatalf("calls %v, want %v", api.calls, tt.wantCalls)
			}
			for i := range api.calls {
				if api.calls[i] != tt.wantCalls[i] {
					t.Errorf("call %d: %v, want %v", i, api.calls[i], tt.wantCalls[i])
				}
			}
			if tt.want != outcomeDeadLettered {
				if len(dlq.failures) != 0 {
					t.Errorf("dead-lettered %v", dlq.failures)
				}
				return
			}
			if len(dlq.failures) != 1 {
				t.Fatalf("dead-lettered %d times, want once", len(dlq.failures))
			}
			f := dlq.failures[0]
			if f.Kind != tt.wantKind || f.Attempts != tt.wantAttempts || f.Group != "contact-worker" || f.FailedAt.IsZero() || f.Err == nil {
				t.Errorf("failure %+v, want kind %s, %d attempts, group, time, error", f, tt.wantKind, tt.wantAttempts)
			}
		})
	}
}

func TestProcessTransform(t *testing.T) {
	api := &fakeAPI{results: []error{nil}}
	newTestProcessor(api, &fakeDLQ{}).Process(context.Background(), msg(created))
	want := contacts.Contact{AcmeContactID: "1234", FirstName: "John", SourceUpdatedAt: time.Date(2025, 5, 17, 17, 6, 39, 0, time.FixedZone("", -7*3600))}
	if len(api.put) != 1 || !api.put[0].SourceUpdatedAt.Equal(want.SourceUpdatedAt) || api.put[0].FirstName != "John" || api.put[0].AcmeContactID != "1234" {
		t.Errorf("put %+v, want %+v", api.put, want)
	}
}

func TestProcessExhaustedIsTransientKind(t *testing.T) {
	api, dlq := &fakeAPI{results: []error{&contacts.TransientError{Status: 503, Err: errors.New("down")}}}, &fakeDLQ{}
	if got, _ := newTestProcessor(api, dlq).Process(context.Background(), msg(created)); got != outcomeDeadLettered {
		t.Fatalf("outcome %s, want dead_lettered", got)
	}
	f := dlq.failures[0]
	if f.Kind != record.KindTransient || f.Attempts != len(api.calls) || f.Attempts < 2 || !strings.Contains(f.Err.Error(), "503") {
		t.Errorf("failure %+v after %d calls; want transient, attempts = calls (several), the last error", f, len(api.calls))
	}
}

// A stop during retries abandons the event: not applied, not dead-lettered.
func TestProcessAbandonsOnStop(t *testing.T) {
	api, dlq := &fakeAPI{results: []error{&contacts.TransientError{Status: 503, Err: errors.New("down")}}}, &fakeDLQ{}
	p := newTestProcessor(api, dlq)
	p.Retrier = newRetrier(config.Retry{InitialInterval: time.Hour, Multiplier: 2, MaxInterval: time.Hour, MaxElapsedTime: 10 * time.Hour}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if got, _ := p.Process(ctx, msg(created)); got != outcomeAbandoned || len(dlq.failures) != 0 {
		t.Errorf("outcome %s with %d dead letters, want abandoned with none", got, len(dlq.failures))
	}
}

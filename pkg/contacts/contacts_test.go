package contacts

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
)

func TestFromEvent(t *testing.T) {
	ev, err := acmecrm.Parse([]byte(`{"event_type":"contact.created","event_id":"evt_12345","timestamp":"2025-05-17T17:06:39-07:00",
 "data":{"contact_id":"1234","acme_first_name":"John","acme_last_name":"Doe","acme_email":"john.doe@example.com","acme_phone":"555-123-4567"}}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(FromEvent(ev))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"acme_contact_id":"1234","first_name":"John","last_name":"Doe","email":"john.doe@example.com","phone":"555-123-4567","source_updated_at":"2025-05-17T17:06:39-07:00"}`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestClassification(t *testing.T) {
	tests := []struct {
		status         int
		retryAfter     string
		wantTransient  bool
		wantPermanent  bool
		wantRetryAfter time.Duration
	}{
		{200, "", false, false, 0},
		{201, "", false, false, 0},
		{204, "", false, false, 0},
		{400, "", false, true, 0},
		{401, "", false, true, 0},
		{403, "", false, true, 0},
		{404, "", false, true, 0},
		{409, "", false, true, 0},
		{422, "", false, true, 0},
		{408, "", true, false, 0},
		{425, "", true, false, 0},
		{429, "7", true, false, 7 * time.Second},
		{500, "", true, false, 0},
		{502, "", true, false, 0},
		{503, "2", true, false, 2 * time.Second},
		{504, "soon", true, false, 0},
	}
	for _, tt := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tt.retryAfter != "" {
				w.Header().Set("Retry-After", tt.retryAfter)
			}
			w.WriteHeader(tt.status)
			io.WriteString(w, "nope")
		}))
		err := NewClient(srv.URL, "", time.Second, 0).Put(context.Background(), Contact{AcmeContactID: "1"}, "evt_1")
		srv.Close()
		var te *TransientError
		var pe *PermanentError
		if got := errors.As(err, &te); got != tt.wantTransient {
			t.Errorf("%d: transient %v (%v), want %v", tt.status, got, err, tt.wantTransient)
		}
		if got := errors.As(err, &pe); got != tt.wantPermanent {
			t.Errorf("%d: permanent %v (%v), want %v", tt.status, got, err, tt.wantPermanent)
		}
		if got := RetryAfterOf(err); got != tt.wantRetryAfter {
			t.Errorf("%d: Retry-After %v, want %v", tt.status, got, tt.wantRetryAfter)
		}
		if tt.status >= 400 && (te != nil && te.Status != tt.status || pe != nil && pe.Status != tt.status) {
			t.Errorf("%d: error carries the wrong status: %v", tt.status, err)
		}
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := parseRetryAfter(now.Add(90*time.Second).Format(http.TimeFormat), now); got != 90*time.Second {
		t.Errorf("got %v, want 1m30s", got)
	}
	if got := parseRetryAfter(now.Add(-time.Hour).Format(http.TimeFormat), now); got != 0 {
		t.Errorf("past date: got %v, want 0", got)
	}
}

func TestRequests(t *testing.T) {
	type call struct{ method, path, key, auth, ctype, body string }
	calls := make(chan call, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		calls <- call{r.Method, r.URL.EscapedPath(), r.Header.Get("Idempotency-Key"), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)}
		if r.Method == http.MethodDelete {
			w.WriteHeader(http.StatusNotFound) // already gone: counts as done
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c := NewClient(srv.URL+"/", "t0ken", time.Second, 0)
	ts := time.Date(2025, 5, 17, 17, 6, 39, 0, time.UTC)
	if err := c.Put(context.Background(), Contact{AcmeContactID: "a/b", FirstName: "J", SourceUpdatedAt: ts}, "evt_put"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(context.Background(), "a/b", "evt_del"); err != nil {
		t.Fatalf("DELETE answered 404: got %v, want nil", err)
	}
	put, del := <-calls, <-calls
	wantPut := call{"PUT", "/contacts/a%2Fb", "evt_put", "Bearer t0ken", "application/json",
		`{"acme_contact_id":"a/b","first_name":"J","last_name":"","email":"","phone":"","source_updated_at":"2025-05-17T17:06:39Z"}`}
	if put != wantPut {
		t.Errorf("PUT: got %+v, want %+v", put, wantPut)
	}
	if del.method != "DELETE" || del.path != "/contacts/a%2Fb" || del.key != "evt_del" || del.auth != "Bearer t0ken" || del.body != "" {
		t.Errorf("DELETE: got %+v", del)
	}
}

func TestNetworkFailuresAreTransient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
	}))
	defer srv.Close()
	if err := NewClient(srv.URL, "", 50*time.Millisecond, 0).Put(context.Background(), Contact{AcmeContactID: "1"}, "k"); !IsTransient(err) {
		t.Errorf("timeout: got %v, want transient", err)
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	if err := NewClient(closed.URL, "", time.Second, 0).Put(context.Background(), Contact{AcmeContactID: "1"}, "k"); !IsTransient(err) {
		t.Errorf("connection refused: got %v, want transient", err)
	}
}

func TestCancelledIsNeitherKind(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(500 * time.Millisecond)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := NewClient(srv.URL, "", 5*time.Second, 0).Put(ctx, Contact{AcmeContactID: "1"}, "k")
	var pe *PermanentError
	if !errors.Is(err, context.DeadlineExceeded) || IsTransient(err) || errors.As(err, &pe) {
		t.Errorf("got %v, want the context's error, unclassified", err)
	}
}

package contacts

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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

// The classification table: every status a call can meet, and what it is.
func TestClassification(t *testing.T) {
	tests := []struct {
		status         int
		retryAfter     string
		location       string
		wantTransient  bool
		wantPermanent  bool
		wantCause      Cause
		wantRetryAfter time.Duration
	}{
		{200, "", "", false, false, "", 0},
		{201, "", "", false, false, "", 0},
		{204, "", "", false, false, "", 0},
		{301, "", "https://contacts.example/api/contacts/1", false, true, CauseRedirected, 0},
		{302, "", "/elsewhere", false, true, CauseRedirected, 0},
		{307, "", "https://contacts.example/api/contacts/1", false, true, CauseRedirected, 0},
		{308, "", "https://contacts.example/api/contacts/1", false, true, CauseRedirected, 0},
		{400, "", "", false, true, CauseRejected, 0},
		{401, "", "", false, true, CauseCredentials, 0},
		{403, "", "", false, true, CauseCredentials, 0},
		{404, "", "", false, true, CauseNotFound, 0},
		{409, "", "", false, true, CauseRejected, 0},
		{410, "", "", false, true, CauseNotFound, 0},
		{422, "", "", false, true, CauseRejected, 0},
		{408, "", "", true, false, CauseUnavailable, 0},
		{425, "", "", true, false, CauseUnavailable, 0},
		{429, "7", "", true, false, CauseRateLimited, 7 * time.Second},
		{500, "", "", true, false, CauseUnavailable, 0},
		{502, "", "", true, false, CauseUnavailable, 0},
		{503, "2", "", true, false, CauseUnavailable, 2 * time.Second},
		{504, "soon", "", true, false, CauseUnavailable, 0},
	}
	for _, tt := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tt.retryAfter != "" {
				w.Header().Set("Retry-After", tt.retryAfter)
			}
			if tt.location != "" {
				w.Header().Set("Location", tt.location)
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
		if got := CauseOf(err); got != tt.wantCause {
			t.Errorf("%d: cause %q, want %q", tt.status, got, tt.wantCause)
		}
		if got := RetryAfterOf(err); got != tt.wantRetryAfter {
			t.Errorf("%d: Retry-After %v, want %v", tt.status, got, tt.wantRetryAfter)
		}
		if tt.status >= 300 && (te != nil && te.Status != tt.status || pe != nil && pe.Status != tt.status) {
			t.Errorf("%d: error carries the wrong status: %v", tt.status, err)
		}
		if tt.location != "" && (pe == nil || pe.Location != tt.location || !strings.Contains(err.Error(), tt.location)) {
			t.Errorf("%d: %v does not name where it redirects (%s)", tt.status, err, tt.location)
		}
	}
}

// A redirect is never followed: not even a 307 to the same origin, which
// keeps the method (an HTTP to HTTPS redirect or a moved API is this
// service's configuration to fix, not something to work around per call).
func TestRedirectsAreNotFollowed(t *testing.T) {
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, r.Method+" "+r.URL.Path)
		if r.URL.Path == "/contacts/1" {
			http.Redirect(w, r, "/moved/contacts/1", http.StatusMovedPermanently)
			return
		}
		w.WriteHeader(http.StatusOK) // what a followed PUT, turned into a GET, would find
	}))
	defer srv.Close()
	err := NewClient(srv.URL, "", time.Second, 0).Put(context.Background(), Contact{AcmeContactID: "1"}, "evt_1")
	if CauseOf(err) != CauseRedirected {
		t.Fatalf("PUT redirected: %v, want CauseRedirected", err)
	}
	if len(calls) != 1 {
		t.Errorf("calls %v, want the PUT alone", calls)
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
			w.WriteHeader(http.StatusNotFound) // already gone, or a wrong base URL: the caller decides
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
	if err := c.Delete(context.Background(), "a/b", "evt_del"); !errors.Is(err, ErrGone) || CauseOf(err) != CauseNotFound {
		t.Fatalf("DELETE answered 404: got %v, want ErrGone", err)
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

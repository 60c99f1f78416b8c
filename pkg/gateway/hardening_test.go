package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sync/semaphore"
)

func newBudgetServer(t *testing.T, budget int64, ld *lameDuck) (*httptest.Server, *receiver) {
	return serveTestHandler(t, &fakeEnqueuer{}, semaphore.NewWeighted(budget), ld)
}

func post(t *testing.T, srv *httptest.Server, body string) *http.Response {
	t.Helper()
	req := signed(t, "POST", body, time.Now())
	req.URL.Scheme, req.URL.Host, req.RequestURI = "http", strings.TrimPrefix(srv.URL, "http://"), ""
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// A body that does not fit what is left of the budget is answered 503 at
// once, with Retry-After and the JSON error; once room is freed it passes.
func TestBudgetRefusesWhatDoesNotFit(t *testing.T) {
	srv, h := newBudgetServer(t, maxBody, &lameDuck{})
	if !h.Budget.TryAcquire(maxBody - 100) { // bodies in flight hold most of it
		t.Fatal("budget")
	}
	resp := post(t, srv, validBody)
	var body errorBody
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 503 || body.Error != codeOverloaded || resp.Header.Get("Retry-After") != "5" {
		t.Errorf("got %d %+v Retry-After %q; want 503 overloaded with Retry-After 5", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if got := testutil.ToFloat64(h.Metrics.overloaded); got != 1 {
		t.Errorf("gateway_overloaded_total %v, want 1", got)
	}
	h.Budget.Release(maxBody - 100)
	if resp := post(t, srv, validBody); resp.StatusCode != 202 {
		t.Errorf("got %d with the budget free, want 202", resp.StatusCode)
	}
	if got := testutil.ToFloat64(h.Metrics.inflightBytes); got != 0 {
		t.Errorf("gateway_inflight_body_bytes %v after the requests, want 0", got)
	}
	// Whatever the outcome, the reservation is given back: the whole
	// budget can be taken again.
	if !h.Budget.TryAcquire(maxBody) {
		t.Error("the budget leaked")
	}
}

// In the lame-duck phase /readyz answers 503 while webhooks are still
// served, each answer asking the client to close the connection.
func TestLameDuck(t *testing.T) {
	ld := &lameDuck{}
	srv, _ := newBudgetServer(t, 1<<20, ld)
	ready := ld.ready(func() error { return nil })
	ld.on.Store(true)
	if ready() == nil {
		t.Error("ready during the lame-duck phase")
	}
	resp := post(t, srv, validBody)
	if resp.StatusCode != 202 || resp.Header.Get("Connection") != "close" && !resp.Close {
		t.Errorf("got %d, Connection %q; want 202 with Connection: close", resp.StatusCode, resp.Header.Get("Connection"))
	}
}

// A large body refused before it is read (503 overloaded) is read to its
// end and discarded: the sender, still writing it, is never cut off, and
// reads the 503.
func TestRefusedBodyIsReadToItsEnd(t *testing.T) {
	srv, h := newBudgetServer(t, maxBody, &lameDuck{})
	h.MaxBodyBytes = 16 << 20
	body := bytes.Repeat([]byte("x"), 8<<20) // far more than socket buffers and net/http's 256 KiB
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", testPath, len(body))
	if _, err := conn.Write(body); err != nil {
		t.Fatalf("the gateway cut the connection while the body was sent: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("got %d, want 503", resp.StatusCode)
	}
}

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A rolling update under keep-alive load: SIGTERM makes /readyz answer 503
// at once while requests are still served (Connection: close) for the
// lame-duck delay; senders that keep going until "the load balancer" drops
// the pod see no failed request, and every 202 is in Kafka.
func TestGatewayLameDuckCutsNoRequest(t *testing.T) {
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, map[string]string{"GATEWAY_SHUTDOWN_DELAY": "3s"}))
	s := newSender(t, gw)
	var (
		mu            sync.Mutex
		acked, failed []string
		closing       atomic.Int64
		stop          atomic.Bool
		wg            sync.WaitGroup
	)
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("evt_%02d_%05d", w, i)
				r, err := s.send(event("contact.updated", id, fmt.Sprintf("c-%d", w)), nil)
				mu.Lock()
				switch {
				case err != nil:
					failed = append(failed, id+": "+err.Error())
				case r.status == 202:
					acked = append(acked, id)
				default:
					failed = append(failed, fmt.Sprintf("%s: %d", id, r.status))
				}
				mu.Unlock()
			}
		}(w)
	}
	// A tap on the responses' Connection header, from a client of its own.
	go func() {
		for !stop.Load() {
			if r, err := s.send(event("contact.updated", "evt_tap", "tap"), nil); err == nil && r.status == 202 {
				_ = r
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(time.Second)
	gw.cancel() // SIGTERM
	sigterm := time.Now()
	waitStatus(t, "http://"+gw.addr+"/readyz", http.StatusServiceUnavailable, time.Second, nil)
	t.Logf("/readyz 503 %v after SIGTERM", time.Since(sigterm))
	resp, err := http.Post("http://"+gw.addr+"/webhooks/acmecrm", "application/json", strings.NewReader("{}"))
	if err == nil {
		if resp.Header.Get("Connection") == "close" || resp.Close {
			closing.Add(1)
		}
		resp.Body.Close()
	}
	time.Sleep(1500 * time.Millisecond) // the load balancer takes the pod out within the delay
	stop.Store(true)
	wg.Wait()
	gw.stop(t)

	if len(failed) != 0 {
		t.Errorf("%d requests failed around the SIGTERM (want 0), e.g. %v", len(failed), failed[:min(5, len(failed))])
	}
	if closing.Load() == 0 {
		t.Error("answers during the lame-duck phase do not say Connection: close")
	}
	present := map[string]bool{}
	for _, m := range readAll(t, brokers, topics["KAFKA_TOPIC"]) {
		present[headerMap(m)["ce_id"]] = true
	}
	missing := 0
	for _, id := range acked {
		if !present[id] {
			missing++
		}
	}
	if missing != 0 || len(acked) == 0 {
		t.Errorf("%d of %d acknowledged events not in Kafka", missing, len(acked))
	}
	t.Logf("%d requests acknowledged around the SIGTERM, none failed, all in Kafka", len(acked))
}

// Slow senders hold neither memory nor goroutines: connections that send
// their headers a byte at a time are closed after the read-header timeout
// while other senders are served; bodies sent slowly hold only their share
// of the in-flight budget (others get 503 overloaded meanwhile, not an
// out-of-memory) until the read timeout frees it.
func TestGatewaySlowSendersHoldNothing(t *testing.T) {
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, map[string]string{
		"GATEWAY_READ_HEADER_TIMEOUT": "1s", "GATEWAY_READ_TIMEOUT": "3s", "GATEWAY_MAX_INFLIGHT_BYTES": "4000100",
	}))
	s := newSender(t, gw)
	before := runtime.NumGoroutine()

	// 300 slowloris connections: headers never finished.
	var conns []net.Conn
	for i := 0; i < 300; i++ {
		c, err := net.Dial("tcp", gw.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_, _ = c.Write([]byte("POST /webhooks/acmecrm HTTP/1.1\r\nHost: x\r\n"))
	}
	if r := s.mustSend(event("contact.created", "evt_meanwhile", "m"), nil); r.status != 202 {
		t.Errorf("a normal sender got %d while 300 slow ones hang, want 202", r.status)
	}
	closed := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil || buf[0] == 'H' { // EOF, reset, or a 408 answer: closed by the server
			closed++
		}
		c.Close()
	}
	if closed != len(conns) {
		t.Errorf("%d of %d slow connections closed by the server within the read-header timeout", closed, len(conns))
	}

	// 8 bodies of 1 MB announced and never sent: 4 fill the budget (4,000,100
	// bytes) to 100 bytes, the others are refused at once.
	var slow []net.Conn
	for i := 0; i < 8; i++ {
		c, err := net.Dial("tcp", gw.addr)
		if err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
		_, _ = fmt.Fprintf(c, "POST /webhooks/acmecrm HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{")
	}
	time.Sleep(300 * time.Millisecond)
	r := s.mustSend(event("contact.created", "evt_squeezed", "m"), nil)
	if r.status != 503 || r.body["error"] != "overloaded" || r.retryAfter == "" {
		t.Errorf("with the budget held by slow bodies: %d %v, want 503 overloaded with Retry-After", r.status, r.body)
	}
	eventually(t, 10*time.Second, "the slow bodies cut by the read timeout and the budget free", func() bool {
		return s.mustSend(event("contact.created", "evt_after", "m"), nil).status == 202
	})
	for _, c := range slow {
		c.Close()
	}
	eventually(t, 10*time.Second, "goroutines back near where they were", func() bool { return runtime.NumGoroutine() <= before+20 })
	t.Logf("goroutines: %d before, %d after", before, runtime.NumGoroutine())
}

// Requests no HTTP client library would send, written on a raw connection.
func TestGatewayMalformedRequests(t *testing.T) {
	gw := startGateway(t, gatewayEnv(topicEnv(t), nil))
	raw := func(req string, closeWrite bool) string {
		c, err := net.Dial("tcp", gw.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte(req))
		if closeWrite {
			_ = c.(*net.TCPConn).CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		return string(buf[:n])
	}
	body := event("contact.created", "evt_short", "s")
	short := raw(fmt.Sprintf("POST /webhooks/acmecrm HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body)+100, body), true)
	if !strings.HasPrefix(short, "HTTP/1.1 400") || !strings.Contains(short, "unreadable_body") {
		t.Errorf("Content-Length past the body, then the sender stops: %.120q, want 400 unreadable_body", short)
	}
	huge := raw("POST /webhooks/acmecrm HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 2<<20)+"\r\n\r\n", false)
	if !strings.HasPrefix(huge, "HTTP/1.1 431") {
		t.Errorf("2 MB of headers: %.120q, want 431", huge)
	}
}

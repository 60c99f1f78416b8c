package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/acmecrm/integration-service/pkg/gateway"
)

// sender signs webhooks with the Standard Webhooks reference library: a
// signer this project did not write, as AcmeCRM's would be.
type sender struct {
	t    testing.TB
	url  string
	wh   *standardwebhooks.Webhook
	http *http.Client
}

func newSender(t testing.TB, gw *binary) *sender {
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return &sender{t: t, url: "http://" + gw.addr + "/webhooks/acmecrm", wh: wh,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 200}}}
}

type reply struct {
	status     int
	body       map[string]any
	retryAfter string
}

func (s *sender) send(body string, edit func(*http.Request)) (reply, error) {
	msgID := fmt.Sprintf("msg_%d", time.Now().UnixNano())
	now := time.Now()
	sig, err := s.wh.Sign(msgID, now, []byte(body))
	if err != nil {
		return reply{}, err
	}
	req, _ := http.NewRequest(http.MethodPost, s.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", msgID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	if edit != nil {
		edit(req)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	_ = json.Unmarshal(raw, &r.body)
	return r, nil
}

func (s *sender) mustSend(body string, edit func(*http.Request)) reply {
	s.t.Helper()
	r, err := s.send(body, edit)
	if err != nil {
		s.t.Fatalf("sending: %v", err)
	}
	return r
}

func event(typ, id, contact string) string {
	return fmt.Sprintf(`{"event_type":%q,"event_id":%q,"timestamp":"2025-05-17T17:06:39-07:00","data":{"contact_id":%q,"acme_first_name":"John","acme_last_name":"Doe","acme_email":"john.doe@example.com","acme_phone":"555-123-4567"},"acme_future_field":{"x":[1,2]}}`, typ, id, contact)
}

// gatewayEnv has no lame-duck delay (tests stop many gateways); the
// lame-duck test sets one.
func gatewayEnv(topics map[string]string, extra map[string]string) map[string]string {
	return merge(topics, map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret, "GATEWAY_SHUTDOWN_DELAY": "0s"}, extra)
}

// Valid events are acknowledged and land exactly as specified; every
// rejected request leaves nothing on the topic.
func TestGatewayEnqueuesExactlyTheAcceptedEvents(t *testing.T) {
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, map[string]string{"GATEWAY_MAX_BODY_BYTES": "4096"}))
	s := newSender(t, gw)

	accepted := map[string]string{ // event id -> body
		"evt_c": event("contact.created", "evt_c", "c-1"),
		"evt_u": event("contact.updated", "evt_u", "c-1"),
		"evt_d": event("contact.deleted", "evt_d", "c-2"),
		"evt_m": event("contact.merged", "evt_m", "c-3"), // a type AcmeCRM added: accepted, kept
	}
	for _, id := range []string{"evt_c", "evt_u", "evt_d", "evt_m"} {
		r := s.mustSend(accepted[id], nil)
		if r.status != 202 || r.body["status"] != "accepted" || r.body["event_id"] != id {
			t.Fatalf("%s: got %d %v, want 202 accepted", id, r.status, r.body)
		}
	}
	rejected := []struct {
		name string
		body string
		edit func(*http.Request)
		want int
	}{
		{"bad signature", event("contact.created", "evt_x1", "c-9"), func(r *http.Request) { r.Header.Set("webhook-signature", "v1,AAAA") }, 401},
		{"stale timestamp", event("contact.created", "evt_x2", "c-9"), func(r *http.Request) {
			r.Header.Set("webhook-timestamp", strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10))
		}, 401},
		{"not JSON", "not json", nil, 400},
		{"lone surrogate in the contact id", strings.Replace(event("contact.created", "evt_x3", "c-X"), `"c-X"`, `"c-\ud800"`, 1), nil, 400},
		{"contact id not one path segment", event("contact.created", "evt_x7", "c/9"), nil, 422},
		{"gzip", event("contact.created", "evt_x8", "c-9"), func(r *http.Request) { r.Header.Set("Content-Encoding", "gzip") }, 415},
		{"wrong media type", event("contact.created", "evt_x4", "c-9"), func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, 415},
		{"too large", event("contact.created", "evt_x5", strings.Repeat("9", 5000)), nil, 413},
		{"wrong method", event("contact.created", "evt_x6", "c-9"), func(r *http.Request) { r.Method = http.MethodPut }, 405},
	}
	for _, rj := range rejected {
		if r := s.mustSend(rj.body, rj.edit); r.status != rj.want || r.body["error"] == nil {
			t.Errorf("%s: got %d %v, want %d with an error code", rj.name, r.status, r.body, rj.want)
		}
	}

	records := readAll(t, brokers, topics["KAFKA_TOPIC"])
	if len(records) != len(accepted) {
		t.Fatalf("topic holds %d records, want exactly the %d accepted", len(records), len(accepted))
	}
	for _, m := range records {
		h := headerMap(m)
		id := h["ce_id"]
		body, ok := accepted[id]
		if !ok {
			t.Errorf("unexpected record %s", id)
			continue
		}
		delete(accepted, id)
		if !bytes.Equal(m.Value, []byte(body)) {
			t.Errorf("%s: value differs from the body sent:\n got %s\nwant %s", id, m.Value, body)
		}
		var ev struct {
			Type string `json:"event_type"`
			Data struct {
				ContactID string `json:"contact_id"`
			} `json:"data"`
		}
		_ = json.Unmarshal([]byte(body), &ev)
		if string(m.Key) != ev.Data.ContactID {
			t.Errorf("%s: key %q, want contact id %q", id, m.Key, ev.Data.ContactID)
		}
		want := map[string]string{"ce_specversion": "1.0", "ce_id": id, "ce_source": "acmecrm", "ce_type": ev.Type,
			"ce_time": "2025-05-17T17:06:39-07:00", "content-type": "application/json"}
		for k, v := range want {
			if h[k] != v {
				t.Errorf("%s: header %s = %q, want %q", id, k, h[k], v)
			}
		}
		if !strings.HasPrefix(h["webhook_id"], "msg_") {
			t.Errorf("%s: webhook_id %q", id, h["webhook_id"])
		}
		if at, err := time.Parse(time.RFC3339Nano, h["received_at"]); err != nil || time.Since(at) > time.Minute {
			t.Errorf("%s: received_at %q (%v)", id, h["received_at"], err)
		}
	}
	// The two events of c-1 share a partition, in the order sent.
	var c1 []string
	for _, m := range records {
		if string(m.Key) == "c-1" {
			c1 = append(c1, headerMap(m)["ce_id"])
		}
	}
	if strings.Join(c1, ",") != "evt_c,evt_u" {
		t.Errorf("contact c-1's events in partition order: %v, want evt_c,evt_u", c1)
	}
}

// A body just under the limit is enqueued, not turned into a 503 by Kafka's
// own size limits.
func TestGatewayAcceptsBodyJustUnderTheDefaultLimit(t *testing.T) {
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, nil))
	s := newSender(t, gw)
	base := event("contact.updated", "evt_big", "c-big")
	pad := 1048576 - len(base) - len(`,"pad":""`) - 1
	body := strings.TrimSuffix(base, "}") + `,"pad":"` + strings.Repeat("p", pad) + `"}`
	if len(body) != 1048575 {
		t.Fatalf("test body is %d bytes, want 1048575", len(body))
	}
	if r := s.mustSend(body, nil); r.status != 202 {
		t.Fatalf("got %d %v, want 202", r.status, r.body)
	}
	records := readAll(t, brokers, topics["KAFKA_TOPIC"])
	if len(records) != 1 || len(records[0].Value) != len(body) {
		t.Fatalf("got %d records, want 1 of %d bytes", len(records), len(body))
	}
	if r := s.mustSend(body+strings.Repeat(" ", 2), nil); r.status != 413 {
		t.Errorf("1 MiB + 1 byte: got %d, want 413", r.status)
	}
}

// 1,000 concurrent requests: 1,000 × 202 and exactly 1,000 records, no loss,
// no duplicates from the producer's retries.
func TestGateway1000ConcurrentRequests(t *testing.T) {
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, nil))
	s := newSender(t, gw)
	const n = 1000
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	sem := make(chan struct{}, 200)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r, err := s.send(event("contact.updated", fmt.Sprintf("evt_%04d", i), fmt.Sprintf("c-%d", i%50)), nil)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			statuses <- r.status
		}(i)
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for st := range statuses {
		count[st]++
	}
	if count[202] != n {
		t.Fatalf("statuses %v, want %d × 202", count, n)
	}
	records := readAll(t, brokers, topics["KAFKA_TOPIC"])
	ids := map[string]int{}
	for _, m := range records {
		ids[headerMap(m)["ce_id"]]++
	}
	if len(records) != n || len(ids) != n {
		t.Fatalf("topic holds %d records with %d distinct ids, want exactly %d", len(records), len(ids), n)
	}
}

// Kafka stopped: 503 with Retry-After and /readyz 503. Kafka back: 202 again
// without restarting the gateway, and nothing acknowledged is missing.
func TestGatewaySurvivesBrokerOutage(t *testing.T) {
	own := startOwnBroker(t)
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, map[string]string{
		"KAFKA_BROKERS": own.addr, "GATEWAY_ENQUEUE_TIMEOUT": "3s", "KAFKA_HEALTH_INTERVAL": "250ms", "KAFKA_DIAL_TIMEOUT": "1s",
	}))
	s := newSender(t, gw)
	var acked []string
	seq := 0
	next := func() (string, string) {
		seq++
		id := fmt.Sprintf("evt_%03d", seq)
		return id, event("contact.updated", id, fmt.Sprintf("c-%d", seq%5))
	}
	for i := 0; i < 10; i++ {
		id, body := next()
		if r := s.mustSend(body, nil); r.status != 202 {
			t.Fatalf("before the outage: %d %v", r.status, r.body)
		}
		acked = append(acked, id)
	}

	own.script(t, "down")
	waitStatus(t, "http://"+gw.addr+"/readyz", 503, 20*time.Second, nil)
	for i := 0; i < 3; i++ {
		_, body := next()
		r := s.mustSend(body, nil)
		if r.status != 503 || r.retryAfter == "" || r.body["error"] != "kafka_unavailable" {
			t.Fatalf("during the outage: got %d %v Retry-After %q, want 503 kafka_unavailable with Retry-After", r.status, r.body, r.retryAfter)
		}
	}

	own.script(t, "up")
	waitStatus(t, "http://"+gw.addr+"/readyz", 200, 60*time.Second, nil)
	deadline := time.Now().Add(60 * time.Second)
	recovered := false
	for time.Now().Before(deadline) && !recovered {
		id, body := next()
		if r := s.mustSend(body, nil); r.status == 202 {
			acked = append(acked, id)
			recovered = true
		} else {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if !recovered {
		t.Fatal("no 202 within 60s of Kafka coming back")
	}
	for i := 0; i < 10; i++ {
		id, body := next()
		if r := s.mustSend(body, nil); r.status != 202 {
			t.Fatalf("after recovery: %d %v", r.status, r.body)
		}
		acked = append(acked, id)
	}

	present := map[string]bool{}
	for _, m := range readAll(t, own.addr, topics["KAFKA_TOPIC"]) {
		present[headerMap(m)["ce_id"]] = true
	}
	for _, id := range acked {
		if !present[id] {
			t.Errorf("acknowledged event %s is missing from the topic", id)
		}
	}
}

// SIGTERM while requests are in flight: every request that got 202 is in
// Kafka (drained and flushed before exit), and the gateway exits cleanly.
func TestGatewayDrainsInFlightRequestsOnShutdown(t *testing.T) {
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, nil))
	s := newSender(t, gw)
	var (
		mu       sync.Mutex
		acked    []string
		wg       sync.WaitGroup
		stopAt   atomic.Pointer[time.Time]
		straddle int // answered 202 after the stop began, having started before it
	)
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("evt_%02d_%04d", w, i)
				startedBeforeStop := stopAt.Load() == nil
				r, err := s.send(event("contact.updated", id, fmt.Sprintf("c-%d", w)), nil)
				if err != nil {
					return // the listener closed: the gateway is stopping
				}
				if r.status == 202 {
					mu.Lock()
					acked = append(acked, id)
					if startedBeforeStop && stopAt.Load() != nil {
						straddle++
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	time.Sleep(1500 * time.Millisecond)
	now := time.Now()
	stopAt.Store(&now)
	gw.stop(t) // cancels the context: what SIGTERM does in main
	wg.Wait()
	// The drain is proven only if requests were in flight when it began.
	if straddle == 0 {
		t.Error("no request was in flight at the stop (started before, answered 202 after): the drain was not exercised")
	}

	present := map[string]bool{}
	for _, m := range readAll(t, brokers, topics["KAFKA_TOPIC"]) {
		present[headerMap(m)["ce_id"]] = true
	}
	if len(acked) == 0 {
		t.Fatal("no request was acknowledged before shutdown")
	}
	for _, id := range acked {
		if !present[id] {
			t.Errorf("acknowledged event %s is not in Kafka", id)
		}
	}
	t.Logf("%d events acknowledged, %d of them in flight when the stop began, all in Kafka", len(acked), straddle)
}

// GATEWAY_PPROF_ADDR serves Go's profiles on a port of its own; the webhook
// port never does, with or without it.
func TestGatewayPprofOnlyWhenAskedAndOnItsOwnPort(t *testing.T) {
	pprofAddr := freeAddr(t)
	gw := startGateway(t, gatewayEnv(topicEnv(t), map[string]string{"GATEWAY_PPROF_ADDR": pprofAddr}))
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "goroutine profile:") {
		t.Errorf("pprof port: %d %.200s", resp.StatusCode, b)
	}
	plain := startGateway(t, gatewayEnv(topicEnv(t), nil))
	for _, addr := range []string{gw.addr, plain.addr} {
		resp, err := http.Get("http://" + addr + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("webhook port %s answers /debug/pprof/ with %d, want 404", addr, resp.StatusCode)
		}
	}
}

// An event type AcmeCRM adds tomorrow: accepted by the gateway (202),
// dead-lettered by the worker as unsupported without a call, its contact
// not parked (the next event is applied at once), and replayable by type.
func TestUnknownEventTypeThroughGatewayAndWorker(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	gw := startGateway(t, gatewayEnv(topics, nil))
	startWorker(t, workerEnv(topics, url, nil))
	s := newSender(t, gw)
	if r := s.mustSend(event("contact.merged", "evt_merge_1", "u-1"), nil); r.status != 202 {
		t.Fatalf("contact.merged: %d %v, want 202", r.status, r.body)
	}
	if r := s.mustSend(strings.Replace(event("contact.updated", "evt_u_2", "u-1"), "17:06:39", "17:07:39", 1), nil); r.status != 202 {
		t.Fatalf("contact.updated: %d %v", r.status, r.body)
	}
	eventually(t, 30*time.Second, "the update applied at once", func() bool { return firstName(t, api, "u-1") == "John" })
	dlq := topics["KAFKA_DLQ_TOPIC"]
	if got := dlqOf(t, dlq, "u-1"); strings.Join(got, " ") != "evt_merge_1/unsupported/" {
		t.Errorf("dead letters of u-1 %v, want the merge as unsupported (nothing parked)", got)
	}
	for _, c := range api.Calls() {
		if c.IdempotencyKey == "evt_merge_1" {
			t.Errorf("the Contacts API was called for an unsupported event: %+v", c)
		}
	}
	// Once a release applies the type, the SRE replays them by type.
	_, sum := runReplay(t, merge(topics, map[string]string{"WORKER_REPLAY_GROUP_ID": uniqueName(t, "replay"), "WORKER_REPLAY_EVENT_TYPE": "contact.merged"}))
	if sum.Replayed != 1 {
		t.Errorf("replay by type: %+v, want the merge replayed", sum)
	}
	eventually(t, 30*time.Second, "the merge dead-lettered again by this release", func() bool { return len(dlqOf(t, dlq, "u-1")) == 2 })
}

// The gateway compares its body limit with the real topic's
// max.message.bytes at start, and a record Kafka refuses as too large
// gets a final answer (413 record_too_large), never "try again".
func TestGatewayRecordLimitOfTheTopic(t *testing.T) {
	topics := topicEnv(t)
	small := "65536"
	if err := newAdmin(t).CreateTopic(topics["KAFKA_TOPIC"], &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"max.message.bytes": &small}}, false); err != nil {
		t.Fatal(err)
	}
	// 1 MiB bodies cannot fit a 64 KiB topic: refused at start, naming both.
	env := merge(map[string]string{"KAFKA_BROKERS": brokers, "GATEWAY_LISTEN_ADDR": freeAddr(t), "GATEWAY_METRICS_ADDR": freeAddr(t)}, gatewayEnv(topics, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out syncBuffer
	err := gateway.Run(ctx, "test", nil, func(k string) string { return env[k] }, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "max.message.bytes is 65536") || !strings.Contains(err.Error(), "GATEWAY_MAX_BODY_BYTES=1048576") {
		t.Fatalf("start with 1 MiB bodies on a 64 KiB topic: %v, want a refusal naming both settings", err)
	}

	// 40,000-byte bodies fit; the topic is then lowered under them.
	gw := startGateway(t, gatewayEnv(topics, map[string]string{"GATEWAY_MAX_BODY_BYTES": "40000"}))
	lower := "20000"
	if err := newAdmin(t).AlterConfig(sarama.TopicResource, topics["KAFKA_TOPIC"], map[string]*string{"max.message.bytes": &lower}, false); err != nil {
		t.Fatal(err)
	}
	s := newSender(t, gw)
	body := strings.Replace(event("contact.created", "evt_big", "big-1"), `"acme_phone":"555-123-4567"`, `"acme_phone":"`+strings.Repeat("5", 30000)+`"`, 1)
	eventually(t, 20*time.Second, "a 30 KB record refused by Kafka: 413 record_too_large", func() bool {
		r := s.mustSend(body, nil)
		return r.status == 413 && r.body["error"] == "record_too_large"
	})
}

// /metrics has a port of its own (GATEWAY_METRICS_ADDR): the webhook port
// serves the webhook and the probes only, so a NetworkPolicy that lets
// AcmeCRM in does not let it scrape.
func TestGatewayMetricsOnAPortOfItsOwn(t *testing.T) {
	gw := startGateway(t, gatewayEnv(topicEnv(t), nil))
	for _, c := range []struct {
		url  string
		want int
	}{
		{"http://" + gw.addr + "/metrics", 404},
		{"http://" + gw.addr + "/healthz", 200},
		{"http://" + gw.metricsAddr + "/metrics", 200},
		{"http://" + gw.metricsAddr + "/webhooks/acmecrm", 404},
	} {
		resp, err := http.Get(c.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET %s: %d, want %d", c.url, resp.StatusCode, c.want)
		}
	}
}

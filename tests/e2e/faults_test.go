package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/tests/standin"
)

// The Contacts API misbehaving in ways between one contact failing and the
// whole API down: healthy contacts keep flowing, and nothing is
// dead-lettered or parked for a fault of the whole API (or of this
// service's configuration); the cause is named.

// faultEnv is the worker's settings for these tests: short budgets and
// probes, so that what would be dead-lettered is, within the test's time.
func faultEnv(topics map[string]string, url string, extra map[string]string) map[string]string {
	return workerEnv(topics, url, merge(map[string]string{
		"WORKER_RETRY_MAX_ELAPSED_TIME": "1s", "WORKER_OUTAGE_PROBE_INTERVAL": "300ms", "WORKER_OUTAGE_WINDOW": "30s",
	}, extra))
}

// faultCause returns the cause worker_contacts_api_fault names now ("" when none).
func faultCause(t testing.TB, b *binary) string {
	t.Helper()
	for _, line := range scrape(t, b) {
		if strings.HasPrefix(line, "worker_contacts_api_fault{") && strings.HasSuffix(line, " 1") {
			return line[strings.Index(line, `cause="`)+7 : strings.LastIndex(line, `"}`)]
		}
	}
	return ""
}

// noDeadLetters fails the test if anything reached the DLQ.
func noDeadLetters(t testing.TB, topics map[string]string) {
	t.Helper()
	if dl := readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"]); len(dl) != 0 {
		t.Fatalf("%d dead-lettered (first: %s %v), want none", len(dl), dl[0].Key, headerMap(dl[0])["dlq_error"])
	}
}

// A shard of the API (30% of the contacts) fails for longer than the retry
// budget: the others are applied meanwhile, no fault of the API is
// declared, and the failing ones come back as soon as the shard does.
func TestWorkerPartialOutage(t *testing.T) {
	api, url := contactsAPI(t)
	api.SetLatency(2 * time.Millisecond)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{Share: 0.3, Status: 503, For: "6s"})
	faultEnds := time.Now().Add(6 * time.Second)
	wk := startWorker(t, faultEnv(topics, url, map[string]string{"WORKER_RETRY_MAX_ELAPSED_TIME": "30s"}))
	const contactsN, perContact = 60, 5
	publishInterleaved(t, topics["KAFKA_TOPIC"], contactsN, perContact, "s")
	var failing, healthy int
	for c := 0; c < contactsN; c++ {
		if standin.InShare(fmt.Sprintf("s-%03d", c), 0.3) {
			failing++
		} else {
			healthy++
		}
	}
	eventually(t, 30*time.Second, "every healthy contact's events applied", func() bool { return appliedCount(api) >= healthy*perContact })
	if time.Now().After(faultEnds) {
		t.Errorf("the healthy contacts were applied only after the shard's fault ended")
	}
	eventually(t, 30*time.Second, "every event applied", func() bool { return appliedCount(api) >= contactsN*perContact })
	if late := time.Since(faultEnds); late > 3*time.Second {
		t.Errorf("the failing contacts' events were all applied %v after the shard came back, want within 3 s", late)
	}
	checkOrder(t, api, "s", contactsN, perContact)
	noDeadLetters(t, topics)
	if n := metric(t, wk, "worker_contacts_api_outages_total"); n != 0 {
		t.Errorf("%v faults of the whole API declared for a shard of %d of %d contacts", n, failing, contactsN)
	}
}

// At night, one event now and then, the API down (503) for several retry
// budgets: nothing is dead-lettered — no other contact showed the API
// working — and the events are applied once it is back.
func TestWorkerQuietHours(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{Status: 503})
	startWorker(t, faultEnv(topics, url, nil))
	p := newProducer(t)
	for i := 0; i < 2; i++ {
		publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.updated", fmt.Sprintf("evt_night_%d", i), fmt.Sprintf("night-%d", i), "n")
		time.Sleep(2 * time.Second) // two budgets each
	}
	noDeadLetters(t, topics)
	api.ClearFailures()
	eventually(t, 30*time.Second, "both applied once the API is back", func() bool { return appliedCount(api) == 2 })
	noDeadLetters(t, topics)
}

// The API's credentials refused for every contact (an expired token): a
// fault named credentials_refused, nothing dead-lettered or parked; once
// the token is accepted again, everything flows within a probe interval.
func TestWorkerCredentialsRefused(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	api.SetToken("the-new-token") // the worker still sends test-token
	wk := startWorker(t, faultEnv(topics, url, nil))
	publishInterleaved(t, topics["KAFKA_TOPIC"], 6, 3, "k")
	eventually(t, 30*time.Second, "the fault named", func() bool { return faultCause(t, wk) == "credentials_refused" })
	time.Sleep(2 * time.Second) // two budgets
	noDeadLetters(t, topics)
	if n := metric(t, wk, "worker_parked_contacts"); n != 0 {
		t.Errorf("%v contacts parked for refused credentials", n)
	}
	// Freshness: the events held by the fault get older every second.
	a1 := oldestAge(t, wk)
	time.Sleep(1500 * time.Millisecond)
	if a2 := oldestAge(t, wk); a1 < 1 || a2 < a1+1 {
		t.Errorf("oldest unfinished age %v s then %v s during the fault: want it growing", a1, a2)
	}
	api.SetToken("test-token")
	eventually(t, 10*time.Second, "everything applied once the token is accepted", func() bool { return appliedCount(api) == 18 })
	eventually(t, 5*time.Second, "the oldest unfinished age back to 0", func() bool { return oldestAge(t, wk) == 0 })
	if n := histogramCount(t, wk, "worker_event_age_seconds", `outcome="applied"`); n != 18 {
		t.Errorf("worker_event_age_seconds counted %v applied events, want 18", n)
	}
	checkOrder(t, api, "k", 6, 3)
	eventually(t, 5*time.Second, "the fault over", func() bool { return faultCause(t, wk) == "" })
	if !strings.Contains(wk.logs.String(), `"cause":"credentials_refused"`) {
		t.Error("no log line naming the cause")
	}
}

// A wrong base URL: every PUT and every DELETE answered 404. Nothing is
// dead-lettered, and no delete counts as done (it would be lost); the worker
// restarted with the right URL applies every event, deletes included.
func TestWorkerWrongBaseURL(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	wk := startWorker(t, faultEnv(topics, url+"/v2-typo", nil))
	p := newProducer(t)
	for i := 0; i < 4; i++ {
		c := fmt.Sprintf("w-%d", i)
		publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.created", "evt_"+c+"_c", c, "x")
		publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.deleted", "evt_"+c+"_d", c, "")
	}
	eventually(t, 30*time.Second, "the fault named", func() bool { return faultCause(t, wk) == "not_found" })
	time.Sleep(2 * time.Second)
	noDeadLetters(t, topics)
	if n := outcomes(t, wk, "applied"); n != 0 {
		t.Errorf("%v events counted applied against a wrong base URL (deletes answered 404 among them)", n)
	}
	wk.stop(t)
	wk = startWorker(t, faultEnv(topics, url, nil))
	eventually(t, 30*time.Second, "every create and delete applied", func() bool { return appliedCount(api) == 8 })
	for i := 0; i < 4; i++ {
		if _, ok := api.Contact(fmt.Sprintf("w-%d", i)); ok {
			t.Errorf("w-%d still exists: its delete was lost", i)
		}
	}
	noDeadLetters(t, topics)
}

// Every call answered 301 (an HTTP to HTTPS redirect at a load balancer):
// never followed, never counted applied, a fault named redirected with
// where it points; nothing dead-lettered.
func TestWorkerRedirectIsNotSuccess(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{Status: 301, Location: "https://contacts.example/api/contacts/x"})
	wk := startWorker(t, faultEnv(topics, url, nil))
	publishInterleaved(t, topics["KAFKA_TOPIC"], 5, 2, "r")
	eventually(t, 30*time.Second, "the fault named", func() bool { return faultCause(t, wk) == "redirected" })
	time.Sleep(2 * time.Second)
	noDeadLetters(t, topics)
	if n := outcomes(t, wk, "applied"); n != 0 {
		t.Errorf("%v redirected calls counted applied", n)
	}
	if !strings.Contains(wk.logs.String(), "https://contacts.example/api/contacts/x") {
		t.Error("the log does not say where the API redirects")
	}
	api.ClearFailures()
	eventually(t, 10*time.Second, "applied once the redirect is gone", func() bool { return appliedCount(api) == 10 })
	checkOrder(t, api, "r", 5, 2)
}

// Every call answered 429 with Retry-After: 300, longer than the retry
// budget: every call waits (the cap of the pause, 2 s here), nothing is
// dead-lettered, and everything is applied once the API accepts calls.
func TestWorkerRetryAfterLongerThanTheBudget(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{Status: 429, RetryAfter: "300"})
	wk := startWorker(t, faultEnv(topics, url, map[string]string{"WORKER_RATE_LIMIT_MAX_PAUSE": "2s"}))
	publishInterleaved(t, topics["KAFKA_TOPIC"], 10, 3, "p")
	eventually(t, 30*time.Second, "calls paused", func() bool { return metric(t, wk, "worker_contacts_api_pauses_total") >= 1 })
	before := api.CallCount()
	time.Sleep(3 * time.Second) // three budgets
	noDeadLetters(t, topics)
	if n := api.CallCount() - before; n > 12 {
		t.Errorf("%d calls in 3 s of pauses of 2 s, want a few", n)
	}
	api.ClearFailures()
	eventually(t, 30*time.Second, "everything applied", func() bool { return appliedCount(api) == 30 })
	checkOrder(t, api, "p", 10, 3)
	noDeadLetters(t, topics)
}

// An API limited to 200 calls a second (429 with Retry-After: 1 beyond),
// two workers: nothing is dead-lettered, order holds, and the workers
// slowed down (their concurrency limit cut, their calls paused) rather
// than hammering it.
func TestWorkerRateLimitedAPI(t *testing.T) {
	api, url := contactsAPI(t)
	api.SetLatency(2 * time.Millisecond)
	api.SetRateLimit(200, 20)
	topics := topicEnv(t)
	env := faultEnv(topics, url, map[string]string{"WORKER_RETRY_MAX_ELAPSED_TIME": "2m"})
	a, b := startWorker(t, env), startWorker(t, env)
	const contactsN, perContact = 100, 10
	publishInterleaved(t, topics["KAFKA_TOPIC"], contactsN, perContact, "l")
	eventually(t, 60*time.Second, "everything applied", func() bool { return appliedCount(api) == contactsN*perContact })
	checkOrder(t, api, "l", contactsN, perContact)
	noDeadLetters(t, topics)
	var limited int
	for _, c := range api.Calls() {
		if c.Status == 429 {
			limited++
		}
	}
	t.Logf("%d of %d calls answered 429", limited, api.CallCount())
	if limited > 0 && metric(t, a, "worker_contacts_api_pauses_total")+metric(t, b, "worker_contacts_api_pauses_total") == 0 {
		t.Error("429s with Retry-After paused no worker")
	}
	if limited*2 > api.CallCount() {
		t.Errorf("%d of %d calls answered 429: the workers hammered the API", limited, api.CallCount())
	}
}

// A fault of the API declared, then a member joins and leaves the group
// (two rebalances that leave the first member its partitions): once the
// API recovers, events flow again within a probe interval — the partitions
// are not left paused by the consumer across the rebalance.
func TestWorkerFaultSurvivesRebalance(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{Status: 503})
	env := faultEnv(topics, url, nil)
	a := startWorker(t, env)
	publishInterleaved(t, topics["KAFKA_TOPIC"], 6, 2, "f")
	eventually(t, 30*time.Second, "the fault declared", func() bool { return metric(t, a, "worker_contacts_api_outage") == 1 })
	b := startWorker(t, env)
	eventually(t, 30*time.Second, "both members holding partitions", func() bool { return holdsPartitions(a) && holdsPartitions(b) })
	b.stop(t)
	eventually(t, 30*time.Second, "a holding every partition again", func() bool {
		gs, err := newAdmin(t).DescribeConsumerGroups([]string{topics["WORKER_GROUP_ID"]})
		return err == nil && len(gs) == 1 && len(gs[0].Members) == 1 && gs[0].State == "Stable"
	})
	api.ClearFailures()
	recovered := time.Now()
	eventually(t, 30*time.Second, "everything applied", func() bool { return appliedCount(api) == 12 })
	if d := time.Since(recovered); d > 5*time.Second {
		t.Errorf("events flowed %v after the API recovered, want within a few probe intervals (300ms)", d)
	}
	checkOrder(t, api, "f", 6, 2)
	noDeadLetters(t, topics)
}

// oldestAge is the largest worker_oldest_unfinished_age_seconds over the
// partitions the member holds.
func oldestAge(t testing.TB, b *binary) float64 {
	t.Helper()
	top := 0.0
	for _, line := range scrape(t, b) {
		if strings.HasPrefix(line, "worker_oldest_unfinished_age_seconds{") {
			top = max(top, sample(t, line))
		}
	}
	return top
}

// histogramCount sums the _count series of histogram name whose labels
// contain match.
func histogramCount(t testing.TB, b *binary, name, match string) float64 {
	t.Helper()
	var n float64
	for _, line := range scrape(t, b) {
		if strings.HasPrefix(line, name+"_count{") && strings.Contains(line, match) {
			n += sample(t, line)
		}
	}
	return n
}

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkFreshness: how old an AcmeCRM change is when it reaches the
// Contacts API, under load. Signed webhooks go through one gateway at a
// steady rate — 50 % and 90 % of what one worker applies against a 5 ms
// stand-in, measured first in the same run (capacity) — to 1 and 3
// workers, for BENCH_FRESHNESS_SECONDS (60) each; the reference is an idle
// system (20 webhooks a second). Each event's freshness is the time from
// the gateway's 202 to the stand-in's call for it, both clocks of this
// machine (a call can come before the 202 reaches the sender: those count
// as 0). Percentiles are of the steady state: the events sent in the first
// fifth of the run (5 s at most), a warm-up, are reported apart as their
// worst case. Gateway, workers and stand-in share this process and its two
// cores with the broker and the sender. make bench-freshness runs it.
func BenchmarkFreshness(b *testing.B) {
	seconds := 60
	if v, err := strconv.Atoi(os.Getenv("BENCH_FRESHNESS_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	var capacity float64
	b.Run("capacity/workers=1", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			capacity = freshnessCapacity(b)
			b.ReportMetric(capacity, "events/s")
		}
	})
	if capacity == 0 {
		b.Fatal("no capacity measured")
	}
	b.Run("idle/workers=1", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			freshnessRun(b, 1, 20, 10)
		}
	})
	for _, workers := range []int{1, 3} {
		for _, load := range []int{50, 90} {
			b.Run(fmt.Sprintf("load=%d%%/workers=%d", load, workers), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					freshnessRun(b, workers, capacity*float64(load)/100, seconds)
				}
			})
		}
	}
}

// freshnessCapacity is what one worker applies of a 20,000-event backlog
// over 2,000 contacts against the 5 ms stand-in (the default line), events/s.
func freshnessCapacity(b *testing.B) float64 {
	b.StopTimer()
	api, url, topics := benchSetup(b, 6)
	startWorker(b, workerEnv(topics, url, map[string]string{"LOG_LEVEL": "warn", "KAFKA_TOPIC_PARTITIONS": "6"}))
	waitMembers(b, topics["WORKER_GROUP_ID"], 1)
	msgs, _ := interleaved(b, topics["KAFKA_TOPIC"], 2000, 10, "c")
	sendAll(b, newProducer(b), msgs)
	n := len(msgs)
	eventually(b, 120*time.Second, "the backlog applied", func() bool { return len(api.Calls()) >= n })
	calls := api.Calls()
	lo, hi := n/10, n*9/10
	return float64(hi-lo) / calls[hi].At.Sub(calls[lo].At).Seconds()
}

// freshnessRun sends rate webhooks a second for seconds through a gateway to
// workers members, and reports the percentiles of freshness and the rate
// the sender reached.
func freshnessRun(b *testing.B, workers int, rate float64, seconds int) {
	b.StopTimer()
	api, url, topics := benchSetup(b, 6)
	gw := startGateway(b, gatewayEnv(topics, map[string]string{"LOG_LEVEL": "warn", "KAFKA_TOPIC_PARTITIONS": "6", "GATEWAY_MAX_BODY_BYTES": "65536"})) // the topic is created with Kafka's default max.message.bytes
	env := workerEnv(topics, url, map[string]string{"LOG_LEVEL": "warn", "KAFKA_TOPIC_PARTITIONS": "6"})
	for range workers {
		startWorker(b, env)
	}
	waitMembers(b, topics["WORKER_GROUP_ID"], workers)
	s := newSender(b, gw)
	s.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}

	n := int(rate * float64(seconds))
	accepted := make([]time.Time, n) // by sequence number: when its 202 came
	jobs := make(chan int, n)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range jobs {
				id := fmt.Sprintf("evt_f_%d", seq)
				// Each contact's events carry rising timestamps: none is stale.
				body := fmt.Sprintf(`{"event_type":"contact.updated","event_id":%q,"timestamp":%q,"data":{"contact_id":"f-%d","acme_first_name":"F","acme_last_name":"L","acme_email":"f@example.com","acme_phone":"555"}}`,
					id, time.Unix(1_700_000_000, 0).Add(time.Duration(seq)*time.Millisecond).UTC().Format(time.RFC3339Nano), seq%2000)
				r, err := s.send(body, nil)
				if err != nil || r.status != http.StatusAccepted {
					failed.Add(1)
					continue
				}
				accepted[seq] = time.Now()
			}
		}()
	}
	b.StartTimer()
	start := time.Now()
	for seq := 0; seq < n; seq++ { // paced: event seq is due at start + seq/rate
		if d := time.Until(start.Add(time.Duration(float64(seq) / rate * float64(time.Second)))); d > 0 {
			time.Sleep(d)
		}
		jobs <- seq
	}
	close(jobs)
	wg.Wait()
	sent := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d webhooks not accepted", f, n)
	}
	eventually(b, 120*time.Second, "every event applied", func() bool { return len(api.Calls()) >= n })
	// The first seconds after the members joined are a warm-up (the first
	// burst of fetches, connections to the API): reported apart, as its
	// worst case; the percentiles are of the steady state after it.
	warm := min(5*time.Second, time.Duration(seconds)*time.Second/5)
	var fresh []float64 // ms
	applied, warmMax := 0, 0.0
	for _, c := range api.Calls() {
		var seq int
		if _, err := fmt.Sscanf(c.IdempotencyKey, "evt_f_%d", &seq); err != nil || seq >= n || c.Status >= 300 {
			continue
		}
		applied++
		ms := max(0, c.At.Sub(accepted[seq]).Seconds()*1000)
		if accepted[seq].Sub(start) < warm {
			warmMax = max(warmMax, ms)
			continue
		}
		fresh = append(fresh, ms)
	}
	if dump := os.Getenv("BENCH_FRESHNESS_DUMP"); dump != "" { // seq, since start (ms), freshness (ms): where the slow ones fall
		f, err := os.Create(fmt.Sprintf("%s-%d-%.0f.txt", dump, workers, rate))
		if err == nil {
			for _, c := range api.Calls() {
				var seq int
				if _, err := fmt.Sscanf(c.IdempotencyKey, "evt_f_%d", &seq); err == nil && seq < n {
					fmt.Fprintf(f, "%d %.1f %.2f %d\n", seq, accepted[seq].Sub(start).Seconds()*1000, c.At.Sub(accepted[seq]).Seconds()*1000, seq%2000)
				}
			}
			f.Close()
		}
	}
	if applied != n {
		b.Fatalf("%d events applied, want %d", applied, n)
	}
	slices.Sort(fresh)
	pct := func(p float64) float64 { return fresh[min(len(fresh)-1, int(p*float64(len(fresh))))] }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(fresh[len(fresh)-1], "max-ms")
	b.ReportMetric(warmMax, "warmup-max-ms")
	b.ReportMetric(rate, "target/s")
	b.ReportMetric(float64(n)/sent.Seconds(), "sent/s")
}

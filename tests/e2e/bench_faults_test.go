package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/tests/standin"
)

// Benchmarks of the worker against a Contacts API that misbehaves (5 ms a
// call): a shard failing for some contacts, and a rate limit shared by a
// fleet. With BENCH_WORKER_BINS each runs this tree's binary and a
// baseline revision's, the before and after of the same run.

// BenchmarkWorkerPartialOutage: 30,000 events over 600 contacts (50 each)
// on 6 partitions, one worker; with fault=30%, the contacts of a shard of
// 30 % answer 503 for the first 30 s. Reports when the healthy contacts
// were all applied (from the first call), how long after the fault ended
// the failing ones were, the faults of the whole API declared, and the
// dead letters. fault=none is the reference: the same contacts, no fault.
func BenchmarkWorkerPartialOutage(b *testing.B) {
	const contactsN, perContact, partitions, share = 600, 50, 6, 0.3
	const faultFor = 30 * time.Second
	for _, w := range benchWorkers() {
		for _, fault := range []bool{false, true} {
			name := "fault=none"
			if fault {
				name = "fault=30%"
			}
			if w.name != "" {
				name += "/worker=" + w.name
			}
			b.Run(name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					api, url, topics := benchSetup(b, partitions)
					wk := w.start(b, workerEnv(topics, url, map[string]string{"LOG_LEVEL": "warn", "KAFKA_TOPIC_PARTITIONS": fmt.Sprint(partitions),
						"WORKER_RETRY_INITIAL_INTERVAL": "500ms", "WORKER_RETRY_MAX_INTERVAL": "30s"}))
					waitMembers(b, topics["WORKER_GROUP_ID"], 1)
					msgs, _ := interleaved(b, topics["KAFKA_TOPIC"], contactsN, perContact, "c")
					healthy := map[string]bool{}
					for c := 0; c < contactsN; c++ {
						id := fmt.Sprintf("c-%03d", c)
						healthy[id] = !standin.InShare(id, share)
					}
					var faultEnds time.Time
					if fault {
						_ = api.Fail(standin.Failure{Share: share, Status: 503, For: faultFor.String()})
						faultEnds = time.Now().Add(faultFor)
					}
					b.StartTimer()
					sendAll(b, newProducer(b), msgs)
					eventually(b, 10*time.Minute, "every event applied", func() bool { return appliedCount(api) >= contactsN*perContact })
					b.StopTimer()
					calls := api.Calls()
					var lastHealthy, lastFailing time.Time
					for _, c := range calls {
						if c.Status >= 300 || c.Replayed {
							continue
						}
						if healthy[c.ContactID] {
							lastHealthy = c.At
						} else {
							lastFailing = c.At
						}
					}
					b.ReportMetric(lastHealthy.Sub(calls[0].At).Seconds(), "s-healthy-applied")
					if fault {
						b.ReportMetric(lastFailing.Sub(faultEnds).Seconds(), "s-failing-after-fault")
					}
					b.ReportMetric(metric(b, wk, "worker_contacts_api_outages_total"), "api-faults")
					b.ReportMetric(float64(len(readAll(b, brokers, topics["KAFKA_DLQ_TOPIC"]))), "dead-letters")
					reportOrder(b, api, contactsN, perContact)
				}
			})
		}
	}
}

// BenchmarkWorkerRateLimited: a Contacts API serving 2,000 calls a second
// (a token bucket; 429 with Retry-After: 1 beyond), 5 ms a call; three
// workers, 24,000 events over 2,400 contacts on 6 partitions. The bucket
// holds a second of calls (burst=2000, as a limit of "N a second" usually
// is) or a twentieth (burst=100: a pause of one process is capacity lost
// to the fleet); with ceiling=650, each worker is also capped at 650 calls
// a second (WORKER_MAX_CALLS_PER_SECOND: the limit shared out by hand).
// Reports the events applied per second from the first call to the last
// (the goal: at least 0.9 × 2,000), the share of calls answered 429 (at
// most 5 %), and the dead letters.
func BenchmarkWorkerRateLimited(b *testing.B) {
	const contactsN, perContact, partitions, replicas, limit = 2400, 10, 6, 3, 2000
	cases := []struct {
		burst   int
		ceiling int
	}{{2000, 0}, {100, 0}, {100, 650}}
	for _, w := range benchWorkers() {
		for _, c := range cases {
			name := fmt.Sprintf("limit=%d/burst=%d/replicas=%d", limit, c.burst, replicas)
			extra := map[string]string{"LOG_LEVEL": "warn", "KAFKA_TOPIC_PARTITIONS": fmt.Sprint(partitions)}
			if c.ceiling > 0 {
				name += fmt.Sprintf("/ceiling=%d", c.ceiling)
				extra["WORKER_MAX_CALLS_PER_SECOND"] = fmt.Sprint(c.ceiling)
			}
			if w.name != "" {
				name += "/worker=" + w.name
			}
			b.Run(name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					api, url, topics := benchSetup(b, partitions)
					api.SetRateLimit(limit, c.burst)
					env := workerEnv(topics, url, extra)
					for r := 0; r < replicas; r++ {
						w.start(b, env)
					}
					waitMembers(b, topics["WORKER_GROUP_ID"], replicas)
					msgs, _ := interleaved(b, topics["KAFKA_TOPIC"], contactsN, perContact, "c")
					b.StartTimer()
					sendAll(b, newProducer(b), msgs)
					eventually(b, 10*time.Minute, "every event applied", func() bool { return appliedCount(api) >= contactsN*perContact })
					b.StopTimer()
					calls := api.Calls()
					limited := 0
					var first, last time.Time
					for _, c := range calls {
						if c.Status == 429 {
							limited++
							continue
						}
						if first.IsZero() {
							first = c.At
						}
						last = c.At
					}
					b.ReportMetric(float64(contactsN*perContact)/last.Sub(first).Seconds(), "events/s")
					b.ReportMetric(100*float64(limited)/float64(len(calls)), "%429")
					b.ReportMetric(float64(len(readAll(b, brokers, topics["KAFKA_DLQ_TOPIC"]))), "dead-letters")
					reportOrder(b, api, contactsN, perContact)
				}
			})
		}
	}
}

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/pkg/contacts"

	"github.com/acmecrm/integration-service/tests/standin"
)

// Benchmarks of the worker against a Contacts API stand-in of fixed latency
// (5 ms a call), on the real broker: what concurrency buys when the API,
// not Kafka, is the bound. Each runs with the default ordering (key: one
// contact at a time, contacts concurrently) and with ordering=partition
// (one event at a time per partition: the design before per-key
// concurrency) as the reference line. Every run checks that each contact's
// events were applied once, in order, with no two calls of one contact at
// once, and fails otherwise. make bench runs them (scripts/bench-worker.sh).

const benchLatency = 5 * time.Millisecond

// benchSetup starts the stand-in answering in benchLatency and creates the
// events topic with partitions.
func benchSetup(b *testing.B, partitions int32) (*standin.Server, string, map[string]string) {
	api, url := contactsAPI(b)
	api.SetLatency(benchLatency)
	topics := topicEnv(b)
	createTopic(b, topics["KAFKA_TOPIC"], partitions)
	return api, url, topics
}

// waitMembers waits until the group has n members, each holding partitions.
func waitMembers(b testing.TB, group string, n int) {
	admin := newAdmin(b)
	eventually(b, 60*time.Second, fmt.Sprintf("%d members holding partitions", n), func() bool {
		gs, err := admin.DescribeConsumerGroups([]string{group})
		if err != nil || len(gs) != 1 || gs[0].State != "Stable" || len(gs[0].Members) != n {
			return false
		}
		for _, m := range gs[0].Members {
			a, err := m.GetMemberAssignment()
			if err != nil || len(a.Topics) == 0 {
				return false
			}
		}
		return true
	})
}

// applyRate reports the events/s of the steady state: between the calls
// that answered the 10th and the 90th percent of the events, so that the
// start (members fetching their first records while the backlog is still
// being sent) and the tail (the last contacts of the busiest partition)
// weigh on no configuration more than on another.
func applyRate(b *testing.B, api *standin.Server, n int) {
	calls := api.Calls()
	lo, hi := n/10, n*9/10
	span := calls[hi].At.Sub(calls[lo].At)
	b.ReportMetric(float64(hi-lo)/span.Seconds(), "events/s")
}

func reportOrder(b *testing.B, api *standin.Server, contactsN, perContact int) {
	checkOrder(b, api, "c", contactsN, perContact)
	b.ReportMetric(float64(len(api.Overlaps())), "overlaps")
	if b.Failed() {
		b.ReportMetric(1, "order-violations")
	} else {
		b.ReportMetric(0, "order-violations")
	}
}

// BenchmarkWorkerLatencyBound: 20,000 contact.updated events over 2,000
// contacts on 6 partitions, the API answering in 5 ms; replicas members of
// one group (in this process), each allowed maxInFlight calls at once. The
// default line also runs with 20,000 contacts of one event each
// (distinct_contacts: no contact's state written twice in a flush). With
// BENCH_WORKER_BINS, the default lines run each binary given (this tree's
// and a baseline revision's, as processes) instead: the reference of the
// same run.
func BenchmarkWorkerLatencyBound(b *testing.B) {
	type config struct {
		replicas, maxInFlight, contactsN, perContact int
		suffix                                       string
	}
	for _, ordering := range []string{"key", "partition"} {
		for _, tc := range []config{{1, 256, 2000, 10, ""}, {1, 256, 20000, 1, "/distinct_contacts"}, {1, 16, 2000, 10, ""}, {3, 16, 2000, 10, ""}} {
			if tc.suffix != "" && ordering != "key" {
				continue
			}
			workers := []benchWorker{{}}
			if ordering == "key" && tc.replicas == 1 && tc.maxInFlight == 256 {
				workers = benchWorkers()
			}
			for _, w := range workers {
				name := fmt.Sprintf("ordering=%s/replicas=%d/max_in_flight=%d%s", ordering, tc.replicas, tc.maxInFlight, tc.suffix)
				if w.name != "" {
					name += "/worker=" + w.name
				}
				b.Run(name, func(b *testing.B) {
					const partitions = 6
					n := tc.contactsN * tc.perContact
					for i := 0; i < b.N; i++ {
						b.StopTimer()
						api, url, topics := benchSetup(b, partitions)
						env := workerEnv(topics, url, map[string]string{"LOG_LEVEL": "warn", "KAFKA_TOPIC_PARTITIONS": fmt.Sprint(partitions),
							"WORKER_ORDERING": ordering, "WORKER_MAX_IN_FLIGHT": fmt.Sprint(tc.maxInFlight)})
						for r := 0; r < tc.replicas; r++ {
							w.start(b, env)
						}
						waitMembers(b, topics["WORKER_GROUP_ID"], tc.replicas)
						// The members join first (no rebalance during the run); the
						// records are built before, so that only sending them shares
						// the cores with the workers.
						msgs, _ := interleaved(b, topics["KAFKA_TOPIC"], tc.contactsN, tc.perContact, "c")
						p := newProducer(b)
						b.StartTimer()
						sendAll(b, p, msgs)
						eventually(b, 5*time.Minute, "every event applied", func() bool { return appliedCount(api) >= n })
						b.StopTimer()
						applyRate(b, api, n)
						b.ReportMetric(float64(api.CallCount())/float64(n), "calls/event")
						reportOrder(b, api, tc.contactsN, tc.perContact)
					}
				})
			}
		}
	}
}

// BenchmarkWorkerFailingContact: 6,000 events over 600 contacts on 6
// partitions, the API answering in 5 ms, and one contact (c-000) answered
// 503 for 20 s; reports the seconds from the first call until every other
// contact's events were applied.
func BenchmarkWorkerFailingContact(b *testing.B) {
	for _, ordering := range []string{"key", "partition"} {
		b.Run("ordering="+ordering, func(b *testing.B) {
			const contactsN, perContact, partitions = 600, 10, 6
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				api, url, topics := benchSetup(b, partitions)
				publishInterleaved(b, topics["KAFKA_TOPIC"], contactsN, perContact, "c")
				_ = api.Fail(standin.Failure{ContactID: "c-000", Status: 503, For: "20s"})
				b.StartTimer()
				startWorker(b, workerEnv(topics, url, map[string]string{"LOG_LEVEL": "warn", "KAFKA_TOPIC_PARTITIONS": fmt.Sprint(partitions),
					"WORKER_ORDERING": ordering}))
				others := (contactsN - 1) * perContact
				eventually(b, 5*time.Minute, "every other contact applied", func() bool {
					n := 0
					for c, ids := range applied(api) {
						if c != "c-000" {
							n += len(ids)
						}
					}
					return n >= others
				})
				b.StopTimer()
				calls := api.Calls()
				var last time.Time
				for _, c := range calls {
					if c.ContactID != "c-000" && c.Status < 300 {
						last = c.At
					}
				}
				b.ReportMetric(last.Sub(calls[0].At).Seconds(), "s-others-applied")
				eventually(b, 5*time.Minute, "the failing contact applied after its 20 s", func() bool {
					return len(applied(api)["c-000"]) >= perContact
				})
				reportOrder(b, api, contactsN, perContact)
				if got := strings.Join(applied(api)["c-000"][:2], ","); got != "evt_c-000_0000,evt_c-000_0001" {
					b.Errorf("failing contact applied %s first", got)
				}
			}
		})
	}
}

// BenchmarkContactsClientCeiling: the reference line for the benchmarks
// above, no Kafka and no worker: the Contacts API client calling the same
// stand-in (5 ms) from conc goroutines in a loop for 3 s. It is the most
// any worker with that many calls in flight could apply on this machine.
func BenchmarkContactsClientCeiling(b *testing.B) {
	for _, conc := range []int{16, 48, 256} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer() // the stand-in is set-up, not work
				api, url := contactsAPI(b)
				api.SetLatency(benchLatency)
				c := contacts.NewClient(url, "test-token", 10*time.Second, conc)
				var n atomic.Int64
				var wg sync.WaitGroup
				b.StartTimer()
				start := time.Now()
				for g := 0; g < conc; g++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for time.Since(start) < 3*time.Second {
							k := n.Add(1)
							if err := c.Put(context.Background(), contacts.Contact{AcmeContactID: fmt.Sprintf("c-%d", k%2000)}, fmt.Sprint(k)); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "calls/s")
			}
		})
	}
}

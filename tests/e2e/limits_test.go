package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/tests/standin"
)

// limitsLimit is the events topic's max.message.bytes in these tests: small,
// so records near it are quick to write.
const limitsLimit = 64 << 10

// bigEvent publishes, straight to topic, an event of contact whose record
// is within a few hundred bytes of limitsLimit.
func bigEvent(t testing.TB, p sarama.SyncProducer, topic, id, contact string) {
	t.Helper()
	name := strings.Repeat("x", limitsLimit-700)
	publishEvent(t, p, topic, "contact.created", id, contact, name)
}

// atTheLimit publishes, straight to topic, an event of contact as large as
// the topic takes: within a few bytes of its max.message.bytes.
func atTheLimit(t testing.TB, topic, id, contact string) {
	t.Helper()
	p := syncProducer(t, func(sc *sarama.Config) { sc.Producer.Retry.Max, sc.Producer.MaxMessageBytes = 0, 1<<20 })
	for n := limitsLimit - 200; n > limitsLimit-2000; n -= 4 {
		body := fmt.Sprintf(`{"event_type":"contact.created","event_id":%q,"timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":%q,"acme_first_name":%q}}`, id, contact, strings.Repeat("x", n))
		ev, err := acmecrm.Parse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = p.SendMessage(record.NewEventMessage(topic, ev, []byte(body), "msg_"+id, time.Now()))
		if err == nil {
			return
		}
		if !kafka.TooLarge(err) {
			t.Fatal(err)
		}
	}
	t.Fatal("no event small enough for the topic")
}

// gzipped makes a producer compress (gzip) and send records of up to 1 MiB
// uncompressed, as another team's producer might.
func gzipped(sc *sarama.Config) {
	sc.Producer.Compression, sc.Producer.MaxMessageBytes = sarama.CompressionGZIP, 1<<20
}

// recordLimitOf reads topic's max.message.bytes.
func recordLimitOf(t testing.TB, topic string) int {
	t.Helper()
	n, err := kafka.RecordLimit(newAdmin(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The dead-letter copy of a record near the events topic's limit (the
// copy adds dlq_ headers) is written: the DLQ takes records
// record.DeadLetterOverheadBytes larger, whether the worker created it so,
// raised an existing one's limit at start, or raised it again when someone
// lowered it.
func TestDeadLetterCopyOfARecordNearTheLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing bool // the DLQ exists with the events topic's limit
		lowered  bool // someone lowers the DLQ's limit while the worker runs
	}{{"created", false, false}, {"existing", true, false}, {"lowered_while_running", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			api, url := contactsAPI(t)
			topics := topicEnv(t)
			topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
			limit := strconv.Itoa(limitsLimit)
			if tc.existing {
				if err := newAdmin(t).CreateTopic(dlq, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: map[string]*string{"max.message.bytes": &limit}}, false); err != nil {
					t.Fatal(err)
				}
			}
			_ = api.Fail(standin.Failure{ContactID: "big", Status: 422})
			wk := startWorker(t, workerEnv(topics, url, map[string]string{"KAFKA_MAX_MESSAGE_BYTES": limit}))
			eventually(t, 30*time.Second, "the worker consuming", func() bool { return holdsPartitions(wk) })
			if got, want := recordLimitOf(t, dlq), limitsLimit+record.DeadLetterOverheadBytes; got != want {
				t.Errorf("DLQ max.message.bytes %d, want %d", got, want)
			}
			if tc.lowered {
				if err := kafka.SetRecordLimit(newAdmin(t), dlq, limitsLimit); err != nil {
					t.Fatal(err)
				}
			}
			p := newProducer(t)
			bigEvent(t, p, topic, "evt_big", "big")
			publishEvent(t, p, topic, "contact.created", "evt_after", "big", "after") // parked behind it
			publishEvent(t, p, topic, "contact.created", "evt_other", "other", "O")
			eventually(t, 30*time.Second, "the big record dead-lettered, the next one parked", func() bool {
				return len(dlqOf(t, dlq, "big")) == 2
			})
			if got := strings.Join(dlqOf(t, dlq, "big"), " "); got != "evt_big/permanent/ evt_after/parked/evt_big" {
				t.Errorf("DLQ of big: %s", got)
			}
			eventually(t, 30*time.Second, "another contact applied", func() bool { return firstName(t, api, "other") == "O" })
			switch n := metric(t, wk, "worker_dlq_publish_failures_total"); {
			case tc.lowered && n == 0:
				t.Errorf("no failed DLQ publish counted, want the refused one")
			case tc.lowered && recordLimitOf(t, dlq) != limitsLimit+record.DeadLetterOverheadBytes:
				t.Errorf("DLQ max.message.bytes %d after the refusal, want it raised to %d", recordLimitOf(t, dlq), limitsLimit+record.DeadLetterOverheadBytes)
			case !tc.lowered && n != 0:
				t.Errorf("%v failed DLQ publishes, want 0", n)
			}
		})
	}
	// A dead letter of a record at the events topic's limit cannot go back
	// there (a put-back carries the replay's headers besides): a release
	// reports it too_large and leaves the contact parked, a routine replay
	// passes it; a discard, which carries no value, releases the contact.
	t.Run("release_of_a_record_at_the_limit", func(t *testing.T) {
		api, url := contactsAPI(t)
		topics := topicEnv(t)
		topic := topics["KAFKA_TOPIC"]
		_ = api.Fail(standin.Failure{ContactID: "big", Status: 422})
		wk := startWorker(t, workerEnv(topics, url, map[string]string{"KAFKA_MAX_MESSAGE_BYTES": strconv.Itoa(limitsLimit)}))
		eventually(t, 30*time.Second, "the worker consuming", func() bool { return holdsPartitions(wk) })
		atTheLimit(t, topic, "evt_big", "big")
		publishEvent(t, newProducer(t), topic, "contact.created", "evt_after", "big", "after")
		eventually(t, 30*time.Second, "the big record dead-lettered, the next one parked", func() bool {
			return len(dlqOf(t, topics["KAFKA_DLQ_TOPIC"], "big")) == 2
		})
		api.ClearFailures()
		env := parkingEnv(topics, t)
		lines, sum := runReplay(t, env, "--replay-contact-id", "big")
		if sum.TooLarge != 1 || sum.Released != 0 || ids(lines, "too_large") != "evt_big" {
			t.Fatalf("release of a head at the limit: %+v, summary %+v; want it reported too_large, nothing released", lines, sum)
		}
		if _, sum := runReplay(t, merge(env, map[string]string{"WORKER_REPLAY_GROUP_ID": uniqueName(t, "routine")}), "--replay-event-id", "evt_big"); sum.TooLarge != 1 {
			t.Errorf("routine replay of it: %+v, want it reported too_large and passed", sum)
		}
		time.Sleep(time.Second)
		if metric(t, wk, "worker_parked_contacts") != 1 || firstName(t, api, "big") != "" {
			t.Fatalf("after the release: parked %v, big holds %q; want it still parked, nothing applied", metric(t, wk, "worker_parked_contacts"), firstName(t, api, "big"))
		}
		if _, sum := runReplay(t, env, "--replay-contact-id", "big", "--replay-discard-event-id", "evt_big"); sum.Discarded != 1 || sum.Replayed != 1 {
			t.Fatalf("discard: %+v", sum)
		}
		eventually(t, 30*time.Second, "the event parked behind it applied", func() bool { return firstName(t, api, "big") == "after" })
	})

	// A record read from a partition its key does not hash to is forwarded;
	// one the worker's producer cannot send (written compressed, larger
	// uncompressed than it sends) is dead-lettered invalid instead of being
	// tried forever, parking nothing: the partition goes on.
	t.Run("misplaced_and_compressed", func(t *testing.T) {
		api, url := contactsAPI(t)
		topics := topicEnv(t)
		topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
		wk := startWorker(t, workerEnv(topics, url, map[string]string{"KAFKA_MAX_MESSAGE_BYTES": strconv.Itoa(limitsLimit)}))
		eventually(t, 30*time.Second, "the worker consuming", func() bool { return holdsPartitions(wk) })
		zp := syncProducer(t, func(sc *sarama.Config) {
			gzipped(sc)
			sc.Producer.Partitioner = sarama.NewManualPartitioner
		})
		right := contactstate.Partition([]byte("big"), 4)
		body := fmt.Sprintf(`{"event_type":"contact.created","event_id":"evt_big","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"big","acme_first_name":%q}}`, strings.Repeat("x", 200<<10))
		if _, _, err := zp.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: (right + 1) % 4, Key: sarama.StringEncoder("big"), Value: sarama.StringEncoder(body)}); err != nil {
			t.Fatal(err)
		}
		publishAt(t, newProducer(t), topic, "contact.updated", "evt_next", "big", "next", "2025-05-17T17:06:40Z")
		eventually(t, 30*time.Second, "the next event applied", func() bool { return firstName(t, api, "big") == "next" })
		eventually(t, 30*time.Second, "the misplaced record dead-lettered", func() bool { return len(dlqOf(t, dlq, "big")) == 1 })
		m := readAll(t, brokers, dlq)[0]
		if h := headerMap(m); h["dlq_error_kind"] != "invalid" || !strings.Contains(h["dlq_error"], "cannot be forwarded") || h["dlq_value_omitted"] == "" {
			t.Errorf("dead letter of the misplaced record: %v", h)
		}
		if metric(t, wk, "worker_parked_contacts") != 0 {
			t.Errorf("a contact parked behind a record it never owned")
		}
		eventually(t, 30*time.Second, "every partition committed to its end", func() bool {
			c := committed(t, topics["WORKER_GROUP_ID"], topic)
			return c[(right+1)%4] == 1 && c[right] == 1
		})
	})

	// Copies Kafka will not take: the DLQ too small and the worker not
	// allowed to raise it, or a record the events topic took compressed
	// that is larger than the worker's producer sends. The dead letter is
	// a stub without the value: the contact parks, the partition goes on.
	// A release reads the value back from the events topic and puts it
	// back (the first case); one the events topic cannot take back (the
	// second) leaves the contact parked, and a discard, which carries no
	// value, releases it.
	for _, tc := range []struct{ name string }{{"existing_not_provisioned"}, {"value_gone"}, {"compressed_beyond_the_producer"}} {
		t.Run(tc.name, func(t *testing.T) {
			api, url := contactsAPI(t)
			topics := topicEnv(t)
			topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
			limit := strconv.Itoa(limitsLimit)
			admin := newAdmin(t)
			extra := map[string]string{"KAFKA_MAX_MESSAGE_BYTES": limit}
			small := tc.name != "compressed_beyond_the_producer" // the DLQ too small, not raisable
			if small {
				// A DLQ of a quarter of the events topic's limit.
				for name, max := range map[string]string{topic: limit, dlq: strconv.Itoa(limitsLimit / 4)} {
					if err := admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: map[string]*string{"max.message.bytes": &max}}, false); err != nil {
						t.Fatal(err)
					}
				}
				// The state topic is the worker's own: made here as provisioning would.
				if err := admin.CreateTopic(stateTopicOf(topics), &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
					ConfigEntries: map[string]*string{"cleanup.policy": ptr("compact,delete"), "retention.ms": ptr(strconv.FormatInt((720 * time.Hour).Milliseconds(), 10))}}, false); err != nil {
					t.Fatal(err)
				}
				extra["KAFKA_PROVISION_TOPICS"] = "false"
			}
			_ = api.Fail(standin.Failure{ContactID: "big", Status: 422})
			wk := startWorker(t, workerEnv(topics, url, extra))
			eventually(t, 30*time.Second, "the worker consuming", func() bool { return holdsPartitions(wk) })
			if small {
				want := fmt.Sprintf("raise it to at least %d", limitsLimit+record.DeadLetterOverheadBytes)
				if !strings.Contains(wk.logs.String(), want) {
					t.Errorf("no start-up log line saying %q", want)
				}
				if got := recordLimitOf(t, dlq); got != limitsLimit/4 {
					t.Errorf("the DLQ's limit changed to %d without provisioning", got)
				}
			}
			var size int
			if small {
				publishEvent(t, newProducer(t), topic, "contact.created", "evt_big", "big", strings.Repeat("b", limitsLimit/2))
				size = limitsLimit / 2
			} else {
				// 200 KiB of one letter, gzip-compressed to a few hundred bytes:
				// the events topic takes it, the worker's producer (which
				// measures records uncompressed) never would.
				publishEvent(t, syncProducer(t, gzipped), topic, "contact.created", "evt_big", "big", strings.Repeat("x", 200<<10))
				size = 200 << 10
			}
			p := newProducer(t)
			publishEvent(t, p, topic, "contact.created", "evt_after", "big", "after")
			publishEvent(t, p, topic, "contact.created", "evt_other", "other", "O")
			eventually(t, 60*time.Second, "the big record dead-lettered, the next one parked", func() bool {
				return len(dlqOf(t, dlq, "big")) == 2
			})
			eventually(t, 30*time.Second, "another contact applied", func() bool { return firstName(t, api, "other") == "O" })
			var stub *sarama.ConsumerMessage
			for _, m := range readAll(t, brokers, dlq) {
				if headerMap(m)["ce_id"] == "evt_big" {
					stub = m
				}
			}
			h := headerMap(stub)
			if omitted, _ := strconv.Atoi(h["dlq_value_omitted"]); stub.Value != nil || omitted < size || h["dlq_error_kind"] != "permanent" || h["dlq_original_offset"] != "0" {
				t.Errorf("the big record's dead letter: %d bytes of value, headers %v; want a stub without value, dlq_value_omitted ≥ %d", len(stub.Value), h, size)
			}
			if got := strings.Join(dlqOf(t, dlq, "big"), " "); got != "evt_big/permanent/ evt_after/parked/evt_big" {
				t.Errorf("DLQ of big: %s", got)
			}
			api.ClearFailures()
			env := parkingEnv(topics, t)
			if tc.name == "value_gone" {
				// The events topic's retention passes over the original.
				if err := admin.DeleteRecords(topic, map[int32]int64{0: 1}); err != nil {
					t.Fatal(err)
				}
				lines, sum := runReplay(t, env, "--replay-contact-id", "big")
				if sum.HeldContacts != 1 || sum.ValueGone != 1 || sum.Replayed != 0 {
					t.Fatalf("release of a stub whose value is gone: %+v, summary %+v; want it held, nothing put back", lines, sum)
				}
				lines, sum = runReplay(t, env, "--replay-contact-id", "big", "--replay-accept-lost")
				if sum.Lost != 1 || sum.Replayed != 1 || sum.Released != 1 {
					t.Fatalf("release accepting the lost value: %+v, summary %+v", lines, sum)
				}
				eventually(t, 30*time.Second, "the event parked behind it applied", func() bool { return firstName(t, api, "big") == "after" })
				if got := strings.Join(applied(api)["big"], ","); got != "evt_after" {
					t.Errorf("big: applied %s, want evt_after alone (evt_big's value is gone)", got)
				}
				return
			}
			lines, sum := runReplay(t, env, "--replay-contact-id", "big")
			if tc.name == "existing_not_provisioned" {
				// The value read back from the events topic: the head applied
				// with it, then the event parked behind it.
				if sum.Replayed != 2 || sum.Released != 1 {
					t.Fatalf("release of a stub's contact: %+v, summary %+v; want both put back, the value read back", lines, sum)
				}
				eventually(t, 30*time.Second, "the head and the event behind it applied", func() bool { return len(applied(api)["big"]) == 2 })
				if got := strings.Join(applied(api)["big"], ","); got != "evt_big,evt_after" || firstName(t, api, "big") != "after" {
					t.Errorf("big: applied %s, holds %q; want evt_big (its value read back) then evt_after", got, firstName(t, api, "big"))
				}
				return
			}
			if sum.HeldContacts != 1 || sum.Replayed != 0 || sum.TooLarge != 1 {
				t.Fatalf("release of a stub the events topic cannot take back: %+v, summary %+v; want it held, nothing put back", lines, sum)
			}
			lines, sum = runReplay(t, env, "--replay-contact-id", "big", "--replay-discard-event-id", "evt_big")
			if sum.Discarded != 1 || sum.Replayed != 1 {
				t.Fatalf("discard of the stub's head: %+v, summary %+v", lines, sum)
			}
			eventually(t, 30*time.Second, "the event parked behind it applied", func() bool { return firstName(t, api, "big") == "after" })
		})
	}
}

func ptr(s string) *string { return &s }

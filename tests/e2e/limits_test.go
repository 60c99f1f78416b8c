package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/pkg/worker"
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
// record.DeadLetterOverheadBytes larger, whether the worker created it so
// or raised an existing one's limit. Without provisioning, a DLQ too small
// for such a copy stops the worker at start with what to set, rather than
// a partition waiting for good on its first large failure.
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
	t.Run("existing_not_provisioned", func(t *testing.T) {
		_, url := contactsAPI(t)
		topics := topicEnv(t)
		limit := strconv.Itoa(limitsLimit)
		admin := newAdmin(t)
		for _, name := range []string{topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]} {
			if err := admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: map[string]*string{"max.message.bytes": &limit}}, false); err != nil {
				t.Fatal(err)
			}
		}
		env := merge(map[string]string{"KAFKA_BROKERS": brokers, "WORKER_HTTP_ADDR": freeAddr(t)},
			workerEnv(topics, url, map[string]string{"KAFKA_MAX_MESSAGE_BYTES": limit, "KAFKA_PROVISION_TOPICS": "false"}))
		// The state topic is the worker's own: made here as provisioning would.
		if err := admin.CreateTopic(stateTopicOf(topics), &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: map[string]*string{"cleanup.policy": ptr("compact,delete"), "retention.ms": ptr(strconv.FormatInt((720 * time.Hour).Milliseconds(), 10))}}, false); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var out syncBuffer
		err := worker.Run(ctx, "test", nil, func(k string) string { return env[k] }, &out, &out)
		want := fmt.Sprintf("raise it to at least %d", limitsLimit+record.DeadLetterOverheadBytes)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("start with a DLQ too small and no provisioning: %v, want an error saying %q\n%s", err, want, out.String())
		}
		if got := recordLimitOf(t, topics["KAFKA_DLQ_TOPIC"]); got != limitsLimit {
			t.Errorf("the DLQ's limit changed to %d without provisioning", got)
		}
	})
}

func ptr(s string) *string { return &s }

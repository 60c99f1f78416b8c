package e2e

import (
	"testing"

	"github.com/IBM/sarama"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// Both binaries start against the real broker, provision both topics with
// their retention, report ready, and exit cleanly when stopped.
func TestBinariesProvisionTopicsOnRealBroker(t *testing.T) {
	topics := topicEnv(t)
	topics["KAFKA_TOPIC_PARTITIONS"] = "4"
	gw := startGateway(t, merge(topics, map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret}))
	wk := startWorker(t, merge(topics, map[string]string{"WORKER_CONTACTS_API_URL": "http://127.0.0.1:1"}))

	admin := newAdmin(t)
	want := map[string]struct {
		partitions int
		retention  string
		maxBytes   string
	}{
		topics["KAFKA_TOPIC"]:     {4, "604800000", "1179648"},  // 7 days
		topics["KAFKA_DLQ_TOPIC"]: {3, "2592000000", "1183744"}, // 30 days; 4,096 more for a copy's dlq_ headers
	}
	metas, err := admin.DescribeTopics([]string{topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range metas {
		if m.Err != sarama.ErrNoError {
			t.Errorf("topic %s: %v", m.Name, m.Err)
			continue
		}
		if got := len(m.Partitions); got != want[m.Name].partitions {
			t.Errorf("topic %s: got %d partitions, want %d", m.Name, got, want[m.Name].partitions)
		}
		entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: m.Name,
			ConfigNames: []string{"retention.ms", "max.message.bytes", "min.insync.replicas"}})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, e := range entries {
			got[e.Name] = e.Value
		}
		wantCfg := map[string]string{"retention.ms": want[m.Name].retention, "max.message.bytes": want[m.Name].maxBytes, "min.insync.replicas": "1"}
		for k, v := range wantCfg {
			if got[k] != v {
				t.Errorf("topic %s: got %s=%q, want %q", m.Name, k, got[k], v)
			}
		}
	}
	gw.stop(t)
	wk.stop(t)
}

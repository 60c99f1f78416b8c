package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// recreateTopic deletes topic and creates it again, empty, with
// partitions partitions, once the brokers have forgotten the former one.
func recreateTopic(t testing.TB, topic string, partitions int32) {
	t.Helper()
	admin := newAdmin(t)
	if err := admin.DeleteTopic(topic); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the topic created again", func() bool {
		err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
		return err == nil
	})
}

// lateCommit commits offset with metadata for group on partition 0 of topic,
// as a member of the topic's former life would in its last Cleanup.
func lateCommit(t testing.TB, group, topic string, offset int64, metadata string) {
	t.Helper()
	client := newClient(t, brokers)
	eventually(t, 30*time.Second, "the new topic's metadata", func() bool {
		ps, err := client.Partitions(topic)
		return client.RefreshMetadata(topic) == nil && err == nil && len(ps) > 0
	})
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		t.Fatal(err)
	}
	pom, err := om.ManagePartition(topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	pom.MarkOffset(offset, metadata)
	om.Commit()
	pom.AsyncClose()
	for err := range pom.Errors() {
		t.Logf("late commit: %v", err)
	}
	if err := om.Close(); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, group, topic)[0]; got != offset {
		t.Fatalf("the late commit did not land: committed %d, want %d", got, offset)
	}
}

// The events topic deleted and created again under the same name: a commit
// of the former topic (a member's last one, landing after the new topic
// exists) names the former topic's id; the worker does not trust it and
// reads the new topic from its start, so no record of it is skipped.
func TestCommitOfAFormerTopicIsNotTrusted(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	topic, group := topics["KAFKA_TOPIC"], topics["WORKER_GROUP_ID"]
	env := workerEnv(topics, url, map[string]string{"KAFKA_TOPIC_PARTITIONS": "1"})
	wk := startWorker(t, env)
	p := newProducer(t)
	for i := range 10 {
		publishAt(t, p, topic, "contact.created", fmt.Sprintf("evt_old_%d", i), fmt.Sprintf("old-%d", i), "old", "2025-05-17T17:06:39Z")
	}
	eventually(t, 30*time.Second, "the former topic's events applied and committed", func() bool {
		return appliedCount(api) == 10 && committed(t, group, topic)[0] == 10
	})
	wk.stop(t)
	meta := committedMetadata(t, group, topic)
	recreateTopic(t, topic, 1)
	lateCommit(t, group, topic, 10, meta)
	for i := range 15 {
		publishAt(t, p, topic, "contact.created", fmt.Sprintf("evt_new_%d", i), fmt.Sprintf("new-%d", i), "new", "2025-05-17T17:06:39Z")
	}
	wk = startWorker(t, env)
	eventually(t, 30*time.Second, "every event of the new topic applied", func() bool { return appliedCount(api) == 25 })
	eventually(t, 10*time.Second, "the new topic committed to its end", func() bool { return committed(t, group, topic)[0] == 15 })
	if !strings.Contains(wk.logs.String(), "committed offset belongs to a former topic") {
		t.Errorf("no log line about the former topic's commit")
	}
}

// The events topic deleted and created again while the worker runs: the
// worker goes on with the new topic from its start, losing none of its
// records.
func TestTopicRecreatedUnderARunningWorker(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	topic, group := topics["KAFKA_TOPIC"], topics["WORKER_GROUP_ID"]
	env := workerEnv(topics, url, map[string]string{"KAFKA_TOPIC_PARTITIONS": "1"})
	startWorker(t, env)
	p := newProducer(t)
	for i := range 10 {
		publishAt(t, p, topic, "contact.created", fmt.Sprintf("evt_old_%d", i), fmt.Sprintf("old-%d", i), "old", "2025-05-17T17:06:39Z")
	}
	eventually(t, 30*time.Second, "the former topic's events applied", func() bool { return appliedCount(api) == 10 })
	recreateTopic(t, topic, 1)
	for i := range 15 {
		publishAt(t, p, topic, "contact.created", fmt.Sprintf("evt_new_%d", i), fmt.Sprintf("new-%d", i), "new", "2025-05-17T17:06:39Z")
	}
	eventually(t, 90*time.Second, "every event of the new topic applied", func() bool { return appliedCount(api) == 25 })
	eventually(t, 10*time.Second, "the new topic committed to its end", func() bool { return committed(t, group, topic)[0] == 15 })
}

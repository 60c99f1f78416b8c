package kafka

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/record"
)

// TopicSpec describes a topic to create when it is missing.
type TopicSpec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int16
	Retention         time.Duration
	MaxMessageBytes   int
	// CleanupPolicy is the topic's cleanup.policy: by age (delete) when
	// empty; CompactDelete keeps the latest record of each key and deletes
	// those older than Retention too.
	CleanupPolicy string
	// Segment, when set, is segment.ms: how long a partition's active
	// segment may grow before it is rolled, so compaction and deletion by
	// age reach its records.
	Segment time.Duration
}

// StateSegment is the state topic's segment.ms: how long its newest
// records may wait, uncompacted, in the active segment.
const StateSegment = time.Hour

// CompactDelete is the cleanup.policy of a topic holding the latest record
// of each key for Retention after it was written.
const CompactDelete = "compact,delete"

// serviceTopics returns the specs of the events topic and the dead-letter
// topic; the latter holds records DeadLetterOverheadBytes larger.
func serviceTopics(c config.Kafka) []TopicSpec {
	return []TopicSpec{
		{Name: c.Topic, Partitions: int32(c.TopicPartitions), ReplicationFactor: int16(c.ReplicationFactor), Retention: c.TopicRetention, MaxMessageBytes: c.MaxMessageBytes},
		{Name: c.DLQTopic, Partitions: int32(c.DLQPartitions), ReplicationFactor: int16(c.ReplicationFactor), Retention: c.DLQRetention, MaxMessageBytes: c.MaxMessageBytes + record.DeadLetterOverheadBytes},
	}
}

// StateTopic returns the spec of contact-worker's state topic, named name:
// the latest record of each contact, kept for horizon after it was written
// (compact,delete), with partitions partitions (the events topic's when
// created, so each events partition's contacts are one state partition's).
// Its segments roll hourly (StateSegment), so compaction reaches a record
// within about an hour: a member rebuilding a partition reads about one
// record per contact plus at most an hour of writes, not a day's.
func StateTopic(c config.Kafka, name string, partitions int32, horizon time.Duration) TopicSpec {
	return TopicSpec{Name: name, Partitions: partitions, ReplicationFactor: int16(c.ReplicationFactor), MaxMessageBytes: c.MaxMessageBytes,
		CleanupPolicy: CompactDelete, Retention: horizon, Segment: StateSegment}
}

// minInSyncReplicas is the min.insync.replicas of a created topic: acks=all
// means "written to at least this many replicas", so with 3 replicas a 202
// survives the loss of one broker's disk. One for a single-replica topic.
func minInSyncReplicas(replicationFactor int16) int {
	return int(min(replicationFactor, 2))
}

// topicAdmin is the part of sarama.ClusterAdmin that provisioning needs.
type topicAdmin interface {
	ListTopics() (map[string]sarama.TopicDetail, error)
	CreateTopic(topic string, detail *sarama.TopicDetail, validateOnly bool) error
}

// ensureTopics creates the topics of specs that do not exist yet, with their
// retention.ms, max.message.bytes and min.insync.replicas, and returns the names it created. Existing topics are left as
// they are: whoever manages them decides their settings. Another replica
// creating the same topic at the same moment is not an error.
func ensureTopics(admin topicAdmin, specs []TopicSpec) ([]string, error) {
	existing, err := admin.ListTopics()
	if err != nil {
		return nil, fmt.Errorf("listing topics: %w", err)
	}
	var created []string
	for _, s := range specs {
		if _, ok := existing[s.Name]; ok {
			continue
		}
		retention := strconv.FormatInt(s.Retention.Milliseconds(), 10)
		maxBytes := strconv.Itoa(s.MaxMessageBytes)
		minISR := strconv.Itoa(minInSyncReplicas(s.ReplicationFactor))
		entries := map[string]*string{"retention.ms": &retention, "max.message.bytes": &maxBytes, "min.insync.replicas": &minISR}
		if s.CleanupPolicy != "" {
			entries["cleanup.policy"] = &s.CleanupPolicy
		}
		if s.Segment > 0 {
			segment := strconv.FormatInt(s.Segment.Milliseconds(), 10)
			entries["segment.ms"] = &segment
		}
		detail := &sarama.TopicDetail{NumPartitions: s.Partitions, ReplicationFactor: s.ReplicationFactor, ConfigEntries: entries}
		err := admin.CreateTopic(s.Name, detail, false)
		if errors.Is(err, sarama.ErrTopicAlreadyExists) {
			continue
		}
		if err != nil {
			return created, fmt.Errorf("creating topic %s: %w", s.Name, err)
		}
		created = append(created, s.Name)
	}
	return created, nil
}

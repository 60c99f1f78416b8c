package worker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// A commit's metadata names the topic it was made on by its topic ID
// (KIP-516: a topic deleted and created again under the same name gets a
// new one): "t:<topic id>/" and then the watermark's metadata, if any. A
// member of the topic's former life can commit after the new topic exists
// (its last Cleanup, landing after the deletion removed the group's
// offsets); trusted, that offset would skip the new topic's first records,
// and its finished-above set would skip others. Such a commit is not
// trusted: the partition is read from its start.
const topicIDPrefix = "t:"

// topicCheckInterval is how often a session checks that its topic is still
// the one it was assigned (not deleted and created again under its name).
const topicCheckInterval = 5 * time.Second

// bindTopic returns meta bound to the topic of id (meta alone when id is
// not known).
func bindTopic(id, meta string) string {
	if id == "" {
		return meta
	}
	return topicIDPrefix + id + "/" + meta
}

// committedTopic splits a commit's metadata into the topic ID it names
// ("" when none: a commit of a worker before topic IDs, or of another
// tool) and the rest.
func committedTopic(meta string) (id, rest string) {
	if r, ok := strings.CutPrefix(meta, topicIDPrefix); ok {
		if id, rest, ok := strings.Cut(r, "/"); ok {
			return id, rest
		}
	}
	return "", meta
}

// formerTopic reports whether a commit naming topic ID committed was made
// on another topic than the one of ID now: both known and different.
func formerTopic(committed, now string) bool {
	return committed != "" && now != "" && committed != now
}

// topicIDOf returns the topic ID of topic (its base64 form, as Kafka's
// tools print it); "" from brokers that report none (before KIP-516), and
// an error when the topic is unknown to the broker asked (deleted, or not
// yet in its metadata).
func topicIDOf(admin sarama.ClusterAdmin, topic string) (string, error) {
	md, err := admin.DescribeTopics([]string{topic})
	if err != nil {
		return "", err
	}
	for _, t := range md {
		if t.Name != topic {
			continue
		}
		switch {
		case t.Err != sarama.ErrNoError:
			return "", t.Err
		case t.Uuid == (sarama.Uuid{}):
			return "", nil // a broker before topic IDs
		}
		return t.Uuid.String(), nil
	}
	return "", fmt.Errorf("topic %s: not in the brokers' answer", topic)
}

// watchTopic ends the session (end) when topic has another ID than id: it
// was deleted and created again. A topic unknown to the broker asked (a
// deletion, or a broker behind) or an answer without IDs ends nothing: a
// deleted topic's partitions give nothing to read meanwhile. It returns
// when ctx ends.
func (h *dispatcher) watchTopic(ctx context.Context, topic, id string, end context.CancelFunc) {
	t := time.NewTicker(topicCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, err := h.topicID(topic)
		if err != nil || now == "" {
			continue
		}
		if now != id {
			h.proc.Log.Error().Str("topic", topic).Str("topic_id", id).Str("now", now).
				Msg("the topic was deleted (and maybe created again) under this session: ending it, to be assigned the topic as it is now")
			end()
			return
		}
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
)

// legacyParked is the former parked-contacts topic (KAFKA_PARKED_TOPIC),
// which the workers before the state topic shared on a cluster. While it
// exists, each partition's load adopts the parked contacts it holds that
// belong to this deployment — their head's dead letter was written by
// this group from this events topic — and that the state topic does not
// know, or knows from an older record (a former worker parked them later,
// during a rolling upgrade). The adopted states are written to the state
// topic, then the former records are tombstoned; another deployment's are
// left alone. So an upgrade, rolling or not, keeps every parked contact
// parked.
type legacyParked struct {
	Topic, DLQ string
	Owner      contactstate.Owner

	mu   sync.Mutex
	gone bool // the topic does not exist
	// checked holds the heads the DLQ was searched for: true when this
	// deployment dead-lettered them.
	checked map[string]bool // contact + "\x00" + head -> ours
}

// legacyEntry is one contact's record in the former topic.
type legacyEntry struct {
	state     contactstate.State
	written   time.Time
	partition int32 // of the former topic
}

// read returns the former topic's records (parked or not) of the contacts
// of events partition p of n; nil when the topic does not exist.
func (l *legacyParked) read(ctx context.Context, client sarama.Client, p, n int32) (map[string]legacyEntry, error) {
	l.mu.Lock()
	gone := l.gone
	l.mu.Unlock()
	if gone {
		return nil, nil
	}
	if err := client.RefreshMetadata(l.Topic); err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			l.mu.Lock()
			l.gone = true
			l.mu.Unlock()
			return nil, nil
		}
		return nil, fmt.Errorf("metadata of %s (KAFKA_PARKED_TOPIC): %w", l.Topic, err)
	}
	partitions, err := client.Partitions(l.Topic)
	if err != nil {
		return nil, fmt.Errorf("partitions of %s (KAFKA_PARKED_TOPIC): %w", l.Topic, err)
	}
	out := map[string]legacyEntry{}
	for _, q := range partitions {
		_, err := contactstate.Read(ctx, client, l.Topic, []int32{q}, l.Owner, func(c string, s contactstate.State, at time.Time) {
			if contactstate.Partition([]byte(c), n) == p {
				out[c] = legacyEntry{state: s, written: at, partition: q}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ours reports, for each contact of heads (contact -> head event id),
// whether this deployment dead-lettered that head: the DLQ is searched
// once for heads not searched for before.
func (l *legacyParked) ours(ctx context.Context, client sarama.Client, heads map[string]string) (map[string]bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.checked == nil {
		l.checked = map[string]bool{}
	}
	search := map[string]string{}
	for c, h := range heads {
		if _, done := l.checked[c+"\x00"+h]; !done {
			search[c] = h
		}
	}
	if len(search) > 0 {
		consumer, err := sarama.NewConsumerFromClient(client)
		if err != nil {
			return nil, err
		}
		defer consumer.Close()
		partitions, err := client.Partitions(l.DLQ)
		if err != nil {
			return nil, fmt.Errorf("partitions of %s: %w", l.DLQ, err)
		}
		found := map[string]bool{}
		for _, q := range partitions {
			_, err := kafka.ReadRange(ctx, client, consumer, l.DLQ, q, func(m *sarama.ConsumerMessage) {
				h, ok := search[string(m.Key)]
				if !ok {
					return
				}
				id, _ := record.Identity(m)
				group, _ := record.Header(m.Headers, record.HeaderDLQConsumerGroup)
				topic, _ := record.Header(m.Headers, record.HeaderDLQOriginalTopic)
				if id == h && group == l.Owner.Group && topic == l.Owner.Topic {
					found[string(m.Key)] = true
				}
			})
			if err != nil {
				return nil, err
			}
		}
		for c, h := range search {
			l.checked[c+"\x00"+h] = found[c]
		}
	}
	out := make(map[string]bool, len(heads))
	for c, h := range heads {
		out[c] = l.checked[c+"\x00"+h]
	}
	return out, nil
}

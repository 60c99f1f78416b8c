package contactstate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/kafka"
)

// Unreadable is a state record that could not be decoded: it is skipped
// (reported, never a stall), and the contact is known by its records
// before it, if any.
type Unreadable struct {
	Partition int32
	Offset    int64
	Key       string
	Err       error
}

// Stats counts what a Read went through.
type Stats struct {
	// Records read, tombstones included.
	Records int
	// Foreign records belong to another events topic or consumer group.
	Foreign int
	// Unreadable records, at most maxUnreadable of them listed; Skipped
	// counts them all.
	Unreadable []Unreadable
	Skipped    int
}

const maxUnreadable = 10

// Put receives a contact's state read from its record, written at written
// (the record's timestamp).
type Put func(contact string, s State, written time.Time)

// Read reads partitions of topic from their oldest record to their end as
// of the call and calls put with each contact's state, in log order (a
// later record of a contact replaces the earlier one; a tombstone is the
// zero State). Records of another owner are skipped and counted, as are
// records that cannot be decoded (listed in Stats).
func Read(ctx context.Context, client sarama.Client, topic string, partitions []int32, owner Owner, put Put) (Stats, error) {
	var st Stats
	if len(partitions) == 0 {
		return st, nil
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return st, err
	}
	defer consumer.Close()
	for _, p := range partitions {
		if err := readPartition(ctx, client, consumer, topic, p, owner, put, &st); err != nil {
			return st, err
		}
	}
	return st, nil
}

// readPartition decodes partition p's records for Read.
func readPartition(ctx context.Context, client sarama.Client, consumer sarama.Consumer, topic string, p int32, owner Owner, put Put, st *Stats) error {
	_, err := kafka.ReadRange(ctx, client, consumer, topic, p, func(m *sarama.ConsumerMessage) {
		st.Records++
		s, err := Decode(m.Value, owner)
		switch {
		case errors.Is(err, ErrForeign):
			st.Foreign++
		case err != nil:
			st.Skipped++
			if len(st.Unreadable) < maxUnreadable {
				st.Unreadable = append(st.Unreadable, Unreadable{Partition: p, Offset: m.Offset, Key: string(m.Key), Err: err})
			}
		default:
			put(string(m.Key), s, m.Timestamp)
		}
	})
	return err
}

// Contact is one contact's state, as ReadAll lists them.
type Contact struct {
	ID string
	State
}

// ReadAll returns the contacts of every partition of topic that keep
// reports true of, sorted by contact id.
func ReadAll(ctx context.Context, client sarama.Client, topic string, owner Owner, keep func(State) bool) ([]Contact, Stats, error) {
	partitions, err := client.Partitions(topic)
	if err != nil {
		return nil, Stats{}, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	latest := map[string]State{}
	st, err := Read(ctx, client, topic, partitions, owner, func(c string, s State, _ time.Time) { latest[c] = s })
	if err != nil {
		return nil, st, err
	}
	var all []Contact
	for c, s := range latest {
		if keep(s) {
			all = append(all, Contact{ID: c, State: s})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	return all, st, nil
}

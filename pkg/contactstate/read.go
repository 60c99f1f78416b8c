package contactstate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/IBM/sarama"
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

// readIdle is how long a partition may give no record before the read is
// given up (and retried by the caller).
const readIdle = 10 * time.Second

// Read reads partitions of topic from their oldest record to their end as
// of the call and calls put with each contact's latest state among them, in
// log order (a later record of a contact replaces the earlier one; a
// tombstone is the zero State). Records of another owner are skipped and
// counted, as are records that cannot be decoded (listed in Stats).
func Read(ctx context.Context, client sarama.Client, topic string, partitions []int32, owner Owner, put func(contact string, s State)) (Stats, error) {
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

func readPartition(ctx context.Context, client sarama.Client, consumer sarama.Consumer, topic string, p int32, owner Owner, put func(string, State), st *Stats) error {
	oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return fmt.Errorf("oldest offset of %s/%d: %w", topic, p, err)
	}
	end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		return fmt.Errorf("end of %s/%d: %w", topic, p, err)
	}
	if oldest >= end {
		return nil
	}
	pc, err := consumer.ConsumePartition(topic, p, oldest)
	if err != nil {
		return fmt.Errorf("reading %s/%d: %w", topic, p, err)
	}
	defer pc.AsyncClose()
	idle := time.NewTimer(readIdle)
	defer idle.Stop()
	next := oldest
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-pc.Errors():
			return fmt.Errorf("reading %s/%d: %w", topic, p, err)
		case <-idle.C:
			// Kafka keeps the last record of a log, so records up to end-1
			// exist: silence before it (sarama redispatching around a
			// leader change) is not the end. The caller retries.
			return fmt.Errorf("reading %s/%d: no record for %v at offset %d, before the end %d", topic, p, readIdle, next, end)
		case m := <-pc.Messages():
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
				put(string(m.Key), s)
			}
			if m.Offset >= end-1 {
				return nil
			}
			next = m.Offset + 1
			idle.Reset(readIdle)
		}
	}
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
	st, err := Read(ctx, client, topic, partitions, owner, func(c string, s State) { latest[c] = s })
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

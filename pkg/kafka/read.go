package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// ReadIdle is how long ReadRange waits for the next record before it
// gives up: the service writes no transactions, so every offset below a
// partition's end holds a record (compaction keeps the last one), and
// silence before the end is a broker that stalls, not the end.
const ReadIdle = 10 * time.Second

// ReadRange calls fn with every record of partition p of topic, from its
// oldest to its end as of the call, in order, and returns that end.
func ReadRange(ctx context.Context, client sarama.Client, consumer sarama.Consumer, topic string, p int32, fn func(*sarama.ConsumerMessage)) (int64, error) {
	oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return 0, fmt.Errorf("oldest offset of %s/%d: %w", topic, p, err)
	}
	end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		return 0, fmt.Errorf("end of %s/%d: %w", topic, p, err)
	}
	if oldest >= end {
		return end, nil
	}
	pc, err := consumer.ConsumePartition(topic, p, oldest)
	if err != nil {
		return 0, fmt.Errorf("reading %s/%d: %w", topic, p, err)
	}
	defer pc.AsyncClose()
	idle := time.NewTimer(ReadIdle)
	defer idle.Stop()
	next := oldest
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case err := <-pc.Errors():
			return 0, fmt.Errorf("reading %s/%d: %w", topic, p, err)
		case <-idle.C:
			return 0, fmt.Errorf("reading %s/%d: no record for %v at offset %d, before the end %d", topic, p, ReadIdle, next, end)
		case m := <-pc.Messages():
			if m.Offset >= end {
				return end, nil
			}
			fn(m)
			if m.Offset == end-1 {
				return end, nil
			}
			next = m.Offset + 1
			idle.Reset(ReadIdle)
		}
	}
}

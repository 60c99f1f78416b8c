package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// EndIdle is how long ReadRange waits for a record before taking the end
// as reached: offsets below the end that hold no record (transaction
// markers, compacted records) never arrive.
const EndIdle = 10 * time.Second

// ReadRange calls fn with every record of partition p of topic, from its
// oldest to its end as of the call, in order.
func ReadRange(ctx context.Context, client sarama.Client, consumer sarama.Consumer, topic string, p int32, fn func(*sarama.ConsumerMessage)) error {
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
	idle := time.NewTimer(EndIdle)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-pc.Errors():
			return fmt.Errorf("reading %s/%d: %w", topic, p, err)
		case <-idle.C:
			return nil // offsets without records up to the end
		case m := <-pc.Messages():
			if m.Offset >= end {
				return nil
			}
			fn(m)
			if m.Offset == end-1 {
				return nil
			}
			idle.Reset(EndIdle)
		}
	}
}

package replay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
)

// Why a dead-lettered record cannot be put back (a report's action).
const (
	// notBackTooLarge: the events topic would refuse it as too large (a
	// record near its max.message.bytes, plus the replay's headers).
	notBackTooLarge = "too_large"
	// notBackValueGone: a stub whose value is gone from its original
	// position (that topic's retention passed).
	notBackValueGone = "value_gone"
)

// putBackHeadroomBytes is what a put-back record may carry besides the
// replay's headers counted by ByteSize: its traceparent and tracestate,
// and the batch's header (61 bytes, KIP-98), with room to spare.
const putBackHeadroomBytes = 256

// originalReadTimeout bounds the read of a stub's original record.
const originalReadTimeout = 10 * time.Second

// prepare returns the record to put back for the dead letter m: m itself,
// or, for a stub (record.ValueOmitted), m with the value read from its
// original position. When it cannot go back, it returns why
// (notBackTooLarge, notBackValueGone) and no record; err is a failure to
// find out.
func (rp *run) prepare(ctx context.Context, m *sarama.ConsumerMessage) (*sarama.ConsumerMessage, string, error) {
	if record.ValueOmitted(m) {
		full, err := rp.rehydrate(ctx, m)
		if errors.Is(err, errValueGone) {
			rp.log.Error().Err(err).Str("key", string(m.Key)).Int32("dlq_partition", m.Partition).Int64("dlq_offset", m.Offset).
				Msg("a dead letter without its value (dlq_value_omitted) whose original record is gone: it cannot be put back; discard it if it is its contact's head")
			return nil, notBackValueGone, nil
		}
		if err != nil {
			return nil, "", err
		}
		m = full
	}
	if rp.limit > 0 {
		msg := record.ReplayMessage(rp.topic, m)
		if rp.through != nil {
			record.WithReleaseThrough(msg, rp.through)
		}
		if size := msg.ByteSize(2) + putBackHeadroomBytes; size > rp.limit {
			rp.log.Error().Str("key", string(m.Key)).Int32("dlq_partition", m.Partition).Int64("dlq_offset", m.Offset).Int("record_bytes", size).Int("limit", rp.limit).
				Msg("too large to put back on the events topic: raise its max.message.bytes (and KAFKA_MAX_MESSAGE_BYTES), or discard it if it is its contact's head")
			return nil, notBackTooLarge, nil
		}
	}
	return m, "", nil
}

// errValueGone: a stub's original record is no longer where it was.
var errValueGone = errors.New("the original record is gone")

// rehydrate returns the stub m with its original record's value and
// headers (its own dlq_ headers kept), read at dlq_original_*.
func (rp *run) rehydrate(ctx context.Context, m *sarama.ConsumerMessage) (*sarama.ConsumerMessage, error) {
	topic, p, off, ok := record.Original(m)
	if !ok {
		return nil, fmt.Errorf("%w: the dead letter does not say where it came from", errValueGone)
	}
	oldest, err := rp.client.GetOffset(topic, p, sarama.OffsetOldest)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return nil, fmt.Errorf("%w: %s/%d does not exist", errValueGone, topic, p)
	}
	if err != nil {
		return nil, fmt.Errorf("oldest offset of %s/%d: %w", topic, p, err)
	}
	newest, err := rp.client.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		return nil, fmt.Errorf("end of %s/%d: %w", topic, p, err)
	}
	if off < oldest || off >= newest {
		return nil, fmt.Errorf("%w: %s/%d holds offsets %d to %d now, not %d", errValueGone, topic, p, oldest, newest, off)
	}
	pc, err := rp.consumer.ConsumePartition(topic, p, off)
	if errors.Is(err, sarama.ErrOffsetOutOfRange) {
		return nil, fmt.Errorf("%w: %s/%d has no offset %d", errValueGone, topic, p, off)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s/%d at %d: %w", topic, p, off, err)
	}
	defer pc.Close()
	wait := time.NewTimer(originalReadTimeout)
	defer wait.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case err := <-pc.Errors():
		return nil, fmt.Errorf("reading %s/%d at %d: %w", topic, p, off, err)
	case <-wait.C:
		return nil, fmt.Errorf("reading %s/%d at %d: no record within %v", topic, p, off, originalReadTimeout)
	case orig := <-pc.Messages():
		// The same event, not what a topic created again under the name
		// holds at that offset now.
		wantID, _ := record.Identity(m)
		if gotID, _ := record.Identity(orig); orig.Offset != off || string(orig.Key) != string(m.Key) || gotID != wantID {
			return nil, fmt.Errorf("%w: %s/%d at %d holds another record (offset %d, key %q, event %q)", errValueGone, topic, p, off, orig.Offset, orig.Key, gotID)
		}
		full := *m
		full.Value = orig.Value
		full.Headers = nil
		for _, h := range orig.Headers {
			if h != nil && !strings.HasPrefix(string(h.Key), record.DLQHeaderPrefix) {
				full.Headers = append(full.Headers, h)
			}
		}
		for _, h := range m.Headers {
			if h != nil && strings.HasPrefix(string(h.Key), record.DLQHeaderPrefix) && string(h.Key) != record.HeaderDLQValueOmitted {
				full.Headers = append(full.Headers, h)
			}
		}
		return &full, nil
	}
}

// recordLimit is the largest record the replay can put back on topic: the
// smaller of its max.message.bytes and the producer's own limit (0: not
// known, nothing checked beforehand).
func recordLimit(client sarama.Client, topic string, producerLimit int) int {
	admin, err := sarama.NewClusterAdminFromClient(client) // closed with the client
	if err != nil {
		return producerLimit
	}
	n, err := kafka.RecordLimit(admin, topic)
	if err != nil {
		// Not known (no DescribeConfigs ACL): the producer's own limit is
		// checked, a lower topic limit would refuse the put-back itself.
		return producerLimit
	}
	return min(n, producerLimit)
}

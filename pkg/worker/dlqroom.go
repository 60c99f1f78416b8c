package worker

import (
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
)

// dlqRoom keeps the DLQ topic able to take the dead-letter copy of any
// record the events topic holds: the copy is the record plus at most
// record.DeadLetterOverheadBytes of dlq_ headers, so the DLQ's
// max.message.bytes must be the events topic's plus that. A copy that
// does not fit all the same is dead-lettered as a stub without its value
// (publisher.DeadLetter): never a partition waiting for good.
type dlqRoom struct {
	Admin       sarama.ClusterAdmin
	Events, DLQ string
	// Provision: the worker may set the DLQ's max.message.bytes
	// (KAFKA_PROVISION_TOPICS); otherwise it only says what to set.
	Provision bool
	// ProducerLimit is the dead-letter producer's Producer.MaxMessageBytes.
	ProducerLimit int
	Log           zerolog.Logger

	mu   sync.Mutex // one change of the DLQ's configuration at a time
	need int        // what check found a copy can need (bytes), 0 before
}

// batchOverheadBytes is what a record batch adds to its records (61 bytes
// of header, KIP-98), with room to spare.
const batchOverheadBytes = 512

// errRoomAlready: the DLQ already takes records of the size asked for.
var errRoomAlready = errors.New("the DLQ's max.message.bytes already takes records that large")

// check compares the DLQ's max.message.bytes with what a copy of the
// largest record of the events topic needs and raises it when allowed to;
// otherwise it logs what to set (such copies would be dead-lettered
// without their value). It also logs when the events topic takes records
// larger than this worker's producer sends (KAFKA_MAX_MESSAGE_BYTES).
// A configuration that cannot be read (no DescribeConfigs ACL) is logged.
func (r *dlqRoom) check() {
	events, err := kafka.RecordLimit(r.Admin, r.Events)
	if err != nil {
		r.Log.Warn().Err(err).Msg("reading the events topic's max.message.bytes; the DLQ's room for copies not checked")
		return
	}
	need := events + record.DeadLetterOverheadBytes
	if need > r.ProducerLimit {
		r.Log.Error().Str("topic", r.Events).Int("max_message_bytes", events).Int("kafka_max_message_bytes", r.ProducerLimit-record.DeadLetterOverheadBytes).
			Msg("the events topic takes records larger than this worker sends (KAFKA_MAX_MESSAGE_BYTES): such a record, failing, is dead-lettered without its value; set KAFKA_MAX_MESSAGE_BYTES to the topic's max.message.bytes")
	}
	r.need = need
	if err := r.grow(need); err != nil && !errors.Is(err, errRoomAlready) {
		r.Log.Error().Err(err).Str("topic", r.DLQ).Int("want_max_message_bytes", need).
			Msg("the DLQ cannot take a copy of the events topic's largest record: such a record, failing, is dead-lettered without its value")
	}
}

// refused is told that the DLQ refused a copy of size bytes as too large:
// it makes room for that copy and for any the events topic's records can
// need, or says why it cannot (errRoomAlready: the limit is not the cause).
func (r *dlqRoom) refused(size int) error {
	return r.grow(max(size+batchOverheadBytes, r.need))
}

// grow makes the DLQ take records of need bytes: errRoomAlready when it
// does, nil once it raised its max.message.bytes, an error naming what to
// set when it may not.
func (r *dlqRoom) grow(need int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	limit, err := kafka.RecordLimit(r.Admin, r.DLQ)
	if err != nil {
		return err
	}
	if limit >= need {
		return fmt.Errorf("%w (%d ≥ %d bytes)", errRoomAlready, limit, need)
	}
	if !r.Provision {
		return fmt.Errorf("topic %s's max.message.bytes is %d: the dead-letter copy of a record of %s can need %d bytes (the record plus %d of dlq_ headers); raise it to at least %d",
			r.DLQ, limit, r.Events, need, record.DeadLetterOverheadBytes, need)
	}
	if err := kafka.SetRecordLimit(r.Admin, r.DLQ, need); err != nil {
		return err
	}
	r.Log.Warn().Str("topic", r.DLQ).Int("was", limit).Int("max_message_bytes", need).Msg("DLQ's max.message.bytes raised to hold the dead-letter copy of the events topic's largest record")
	return nil
}

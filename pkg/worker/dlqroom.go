package worker

import (
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
// max.message.bytes must be the events topic's plus that. Without it, a
// record near the events topic's limit could never be dead-lettered, and
// its partition would wait for it forever.
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

// check compares the DLQ's max.message.bytes with what a copy of the
// largest record of the events topic needs, and raises it when allowed to.
// It fails, naming what to set, when the copy could not be written: the
// DLQ too small and not provisioned, or the events topic taking records
// larger than this worker's producer sends (KAFKA_MAX_MESSAGE_BYTES). A
// configuration that cannot be read (no DescribeConfigs ACL) is logged and
// trusted.
func (r *dlqRoom) check() error {
	events, err := kafka.RecordLimit(r.Admin, r.Events)
	if err != nil {
		r.Log.Warn().Err(err).Msg("reading the events topic's max.message.bytes; the DLQ's room for copies not checked")
		return nil
	}
	need := events + record.DeadLetterOverheadBytes
	if need > r.ProducerLimit {
		return fmt.Errorf("topic %s takes records up to %d bytes (max.message.bytes), more than this worker sends (KAFKA_MAX_MESSAGE_BYTES=%d): such a record could never be dead-lettered; set KAFKA_MAX_MESSAGE_BYTES to at least %d",
			r.Events, events, r.ProducerLimit-record.DeadLetterOverheadBytes, events)
	}
	r.need = need
	return r.fit(need)
}

// refused is told that the DLQ refused a copy of size bytes as too large
// (its limit lowered since the start): it makes room again for that copy
// and for any the events topic's records can need.
func (r *dlqRoom) refused(size int) error {
	return r.fit(max(size+batchOverheadBytes, r.need))
}

// fit makes the DLQ take records of need bytes: nothing when it does,
// raises its max.message.bytes when allowed to, fails naming what to set
// otherwise.
func (r *dlqRoom) fit(need int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	limit, err := kafka.RecordLimit(r.Admin, r.DLQ)
	if err != nil {
		r.Log.Warn().Err(err).Msg("reading the DLQ's max.message.bytes; not checked")
		return nil
	}
	if limit >= need {
		return nil
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

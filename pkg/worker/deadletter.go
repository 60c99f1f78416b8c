package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/pkg/telemetry"
)

// publisher writes records to one topic through a durable (acks=all,
// idempotent) producer, retrying until Kafka acknowledges or ctx ends: an
// event is never skipped because a topic was briefly unavailable, and a
// stop or a revoked partition is never held up by a send that hangs.
type publisher struct {
	Producer kafka.Enqueuer
	Topic    string
	// Failures counts failed attempts (each is retried).
	Failures prometheus.Counter
	// Room, when set, is asked to make the topic take a record of the
	// given size (bytes) that Kafka refused as too large (dlqRoom.fit);
	// its error says what an operator must set.
	Room func(size int) error
	// Tracer makes a producer span of each publish, the child of ctx's
	// span, named in the records' traceparent (nil: none, ctx's passed on).
	Tracer trace.Tracer
	Log    zerolog.Logger
}

// Publish sends the record build returns, again until it is acknowledged
// (it returns where it was written) or ctx ends (then ctx's error).
func (p *publisher) Publish(ctx context.Context, m *sarama.ConsumerMessage, build func() *sarama.ProducerMessage) (contactstate.Position, error) {
	return p.publish(ctx, m, build, nil)
}

// errTooLarge: a record Kafka refuses as too large, given up on.
var errTooLarge = errors.New("record too large for the topic")

// publish is Publish; tooLarge, when set, is told of each refusal of a
// record too large (its size in bytes, and whether the producer itself
// refused it) before the next try, and gives up (then publish returns
// errTooLarge) when it answers true.
func (p *publisher) publish(ctx context.Context, m *sarama.ConsumerMessage, build func() *sarama.ProducerMessage, tooLarge func(size int, byProducer bool) (giveUp bool)) (contactstate.Position, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0 // until it works or we stop
	id, _ := record.Identity(m)
	ctx, span := telemetry.StartSend(ctx, p.Tracer, p.Topic, trace.WithAttributes(telemetry.EventID(id), telemetry.ContactID(string(m.Key))))
	defer span.End()
	var at contactstate.Position
	// Waiting between tries, the event gives its admission back (as between
	// retries of a call), so publishes Kafka refuses for a while do not
	// hold up the events of other contacts.
	tok := tokenOf(ctx)
	defer func() { _ = tok.acquire(ctx) }() // the caller's event goes on holding one
	err := backoff.RetryNotify(func() error {
		if err := tok.acquire(ctx); err != nil {
			return backoff.Permanent(err)
		}
		// A fresh message each try: sarama keeps per-send state in it.
		msg := build()
		telemetry.Inject(ctx, msg)
		err := p.Producer.Enqueue(ctx, msg)
		if err == nil {
			telemetry.Sent(span, msg)
			at = contactstate.Position{Partition: msg.Partition, Offset: msg.Offset}
			return nil
		}
		if kafka.TooLarge(err) && tooLarge != nil && tooLarge(msg.ByteSize(2), kafka.RefusedByProducer(err)) {
			return backoff.Permanent(fmt.Errorf("%w (%d bytes): %w", errTooLarge, msg.ByteSize(2), err))
		}
		return err
	}, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		tok.release()
		span.AddEvent("publish failed, retrying", trace.WithAttributes(attribute.String("error", err.Error())))
		p.Failures.Inc()
		p.Log.Error().Err(err).Str("topic", p.Topic).Str("event_id", id).Int32("partition", m.Partition).Int64("offset", m.Offset).
			Dur("retry_in", wait).Msg("publish failed, retrying")
	})
	return at, err
}

// DeadLetter implements deadLetterer. A copy Kafka refuses as too large is
// never sent again as it is: the DLQ's limit is raised when Room can (then
// it is sent again), else its dead letter is a stub without the value
// (record.DeadLetterStub), so its contact parks and its partition goes on.
func (p *publisher) DeadLetter(ctx context.Context, m *sarama.ConsumerMessage, f record.Failure) (contactstate.Position, error) {
	stub := 0      // the size of the copy refused, once a stub it is
	roomAgain := 0 // refusals while the DLQ's limit already took the copy
	return p.publish(ctx, m, func() *sarama.ProducerMessage {
		if stub > 0 {
			return record.DeadLetterStub(p.Topic, m, f, stub)
		}
		return record.DeadLetterMessage(p.Topic, m, f)
	}, func(size int, byProducer bool) bool {
		if stub > 0 {
			return false // even the stub: the DLQ's limit below any record's; retried, logged, alerted
		}
		var room error = errors.New("the producer itself refuses it (its Producer.MaxMessageBytes, uncompressed)")
		if !byProducer {
			room = errors.New("no room can be made: raise the DLQ's max.message.bytes")
			if p.Room != nil {
				room = p.Room(size)
			}
		}
		if errors.Is(room, errRoomAlready) && roomAgain < 3 {
			// Raised a moment ago (by another event or member), and not yet
			// in force where the partition leads: the full copy again.
			roomAgain++
			room = nil
		}
		id, _ := record.Identity(m)
		log := p.Log.Error().Str("topic", p.Topic).Str("event_id", id).Int32("partition", m.Partition).Int64("offset", m.Offset).Int("record_bytes", size)
		if room == nil {
			log.Msg("dead-letter copy too large for the DLQ: sending it again (room made, or the limit raised a moment ago)")
			return false
		}
		stub = size
		log.AnErr("reason", room).Msg("dead-letter copy too large for the DLQ: dead-lettered without its value (dlq_value_omitted); the record stays at its original position until that topic's retention")
		return false
	})
}

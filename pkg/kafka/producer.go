package kafka

import (
	"context"
	"errors"
	"sync"

	"github.com/IBM/sarama"
)

// Enqueuer sends one record and returns nil only once Kafka acknowledged
// it, or the error that stopped it, or ctx's: every record of the service
// (webhook, dead letter, parked state, replay) goes through one.
// *Producer is the one to use; tests give fakes.
type Enqueuer interface {
	Enqueue(ctx context.Context, msg *sarama.ProducerMessage) error
}

// ErrProducerClosed is returned by Enqueue after Close.
var ErrProducerClosed = errors.New("producer closed")

// Producer sends records through one sarama AsyncProducer shared by all
// callers, so concurrent sends are batched into shared produce requests, and
// tells each caller when its own record was acknowledged. Unlike sarama's
// SyncProducer, a caller's wait ends with its context.
type Producer struct {
	ap     sarama.AsyncProducer
	mu     sync.RWMutex // held for reading while sending to Input, so Close never races a send
	closed bool
	done   chan struct{}
}

// NewProducer wraps ap, whose config must have Return.Successes and
// Return.Errors set.
func NewProducer(ap sarama.AsyncProducer) *Producer {
	p := &Producer{ap: ap, done: make(chan struct{})}
	go p.dispatch()
	return p
}

// dispatch hands each acknowledgement or failure to the request waiting for it.
func (p *Producer) dispatch() {
	defer close(p.done)
	successes, failures := p.ap.Successes(), p.ap.Errors()
	for successes != nil || failures != nil {
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			m.Metadata.(chan error) <- nil
		case pe, ok := <-failures:
			if !ok {
				failures = nil
				continue
			}
			pe.Msg.Metadata.(chan error) <- pe.Err
		}
	}
}

// Enqueue sends msg and waits until Kafka acknowledged it (nil), refused it,
// or ctx ended. A record whose wait ended with ctx may still be written
// later: the sender, told to retry, may then deliver it twice, which
// downstream idempotency absorbs.
func (p *Producer) Enqueue(ctx context.Context, msg *sarama.ProducerMessage) error {
	result := results.Get().(chan error)
	msg.Metadata = result
	if err := p.send(ctx, msg); err != nil {
		results.Put(result) // never handed to sarama: still empty
		return err
	}
	select {
	case err := <-result:
		results.Put(result) // empty again, and nothing else will send to it
		return err
	case <-ctx.Done():
		return ctx.Err() // result may still receive the answer: not reused
	}
}

// results are the channels a record's answer comes back on, reused: one
// per record otherwise. Buffered, so dispatch never blocks on a caller that
// gave up.
var results = sync.Pool{New: func() any { return make(chan error, 1) }}

func (p *Producer) send(ctx context.Context, msg *sarama.ProducerMessage) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrProducerClosed
	}
	select {
	case p.ap.Input() <- msg:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close flushes what is buffered, waits until every acknowledgement or
// failure has reached its caller, and closes the producer. (sarama's own
// Close would drain the result channels itself, leaving callers waiting.)
func (p *Producer) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ap.AsyncClose()
	<-p.done
}

// EnqueueAll sends msgs in their order and waits until Kafka acknowledged
// every one (nil), or returns the first refusal or ctx's error. Records of
// one partition are written in the order given (sarama's idempotent
// producer keeps a partition's order through its retries).
func (p *Producer) EnqueueAll(ctx context.Context, msgs []*sarama.ProducerMessage) error {
	pending := make([]chan error, 0, len(msgs))
	var first error
	for _, msg := range msgs {
		result := results.Get().(chan error)
		msg.Metadata = result
		if err := p.send(ctx, msg); err != nil {
			results.Put(result)
			first = err
			break
		}
		pending = append(pending, result)
	}
	for _, result := range pending {
		select {
		case err := <-result:
			results.Put(result)
			if first == nil {
				first = err
			}
		case <-ctx.Done():
			if first == nil {
				first = ctx.Err()
			}
			return first // the rest may still receive their answers: not reused
		}
	}
	return first
}

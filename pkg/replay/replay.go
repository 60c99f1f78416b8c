package replay

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/pkg/telemetry"
)

// Summary counts what a run did, and says who did it and when.
type Summary struct {
	Summary bool `json:"summary"` // always true: tells the summary line from the record lines
	// Action is what the run did: replay (the routine one), release
	// (--replay-contact-id) or list_parked.
	Action string `json:"action"`
	// Actor is who ran it (--replay-actor, else $USER@host).
	Actor string `json:"actor"`
	// At is when it started.
	At     time.Time `json:"at"`
	DryRun bool      `json:"dry_run"`
	// Read is every record read from the DLQ.
	Read int `json:"read"`
	// Replayed were republished.
	Replayed int `json:"replayed"`
	// WouldReplay would have been republished: a dry run's Replayed.
	WouldReplay int `json:"would_replay,omitempty"`
	// SkippedFilter did not match the filters; their position passes.
	SkippedFilter int `json:"skipped_filter"`
	// HeldLoopGuard had been replayed max-count times already; their position passes.
	HeldLoopGuard int `json:"held_loop_guard"`
	// LimitReached is true when --replay-limit stopped the run early; the
	// records after the last replayed one are left for a later run.
	LimitReached bool `json:"limit_reached"`
	// ParkedContacts were listed (list_parked).
	ParkedContacts int `json:"parked_contacts,omitempty"`
	// Released contacts had every parked event put back, in order (release).
	Released int `json:"released_contacts,omitempty"`
	// WouldRelease would have been: a dry run's Released.
	WouldRelease int `json:"would_release_contacts,omitempty"`
	// Discarded heads were put back marked never to apply (release).
	Discarded int `json:"discarded,omitempty"`
	// WouldDiscard would have been: a dry run's Discarded.
	WouldDiscard int `json:"would_discard,omitempty"`
	// NotParked contacts were asked for but are not parked (release).
	NotParked int `json:"not_parked,omitempty"`
	// Missing contacts have a head with no copy left in the DLQ, and were
	// left parked (release).
	Missing int `json:"missing,omitempty"`
	// TooLarge records could not be put back: Kafka refuses them on the
	// events topic as too large (a record near its max.message.bytes, with
	// the replay's headers). Reported and passed; discard its contact's head
	// (a discard carries no value) or raise the topic's limit.
	TooLarge int `json:"too_large,omitempty"`
	// ValueGone records are dead letters without their value whose
	// original record is gone (retention): reported and passed.
	ValueGone int `json:"value_gone,omitempty"`
	// Held contacts were not released: a record of theirs cannot be put
	// back (too_large, value_gone); nothing of theirs went back.
	Held int `json:"held_contacts,omitempty"`
	// Lost records were left out of a release with --replay-accept-lost:
	// their value is gone.
	Lost int `json:"lost,omitempty"`
}

// errNotBack is replay's answer for a record that cannot be put back (it
// was reported): the routine replay passes it. It wraps the report's own
// failure, if any.
type errNotBack struct{ err error }

func (e errNotBack) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return "cannot be put back"
}

// passNotBack returns err, nil for a record that cannot be put back and
// was reported.
func passNotBack(err error) error {
	var nb errNotBack
	if errors.As(err, &nb) {
		return nb.err
	}
	return err
}

// line is one JSON line of the report, per record replayed or held.
type line struct {
	Action string `json:"action"` // replayed, would_replay, held
	entry
}

// Run replays the DLQ as cfg.Fleet.Replay says, writing one JSON line per
// record replayed (or, with dry run, that would be) or held by the loop
// guard, then a summary line, to out.
func Run(ctx context.Context, cfg config.Worker, tracer trace.Tracer, log zerolog.Logger, out io.Writer) (Summary, error) {
	r := cfg.Fleet.Replay
	sum := Summary{Summary: true, Action: "replay", Actor: r.Actor, At: time.Now().UTC(), DryRun: r.DryRun}
	if r.ContactIDFile != "" {
		ids, err := readIDs(r.ContactIDFile)
		if err != nil {
			return sum, err
		}
		r.ContactIDs = append(r.ContactIDs, ids...)
	}
	if sum.Actor == "" {
		sum.Actor = defaultActor()
	}
	switch {
	case r.ListParked:
		sum.Action = "list_parked"
	case len(r.ContactIDs) > 0:
		sum.Action = "release"
	}
	filter, err := newFilter(r)
	if err != nil {
		return sum, err
	}
	client, err := connectReader(ctx, cfg, log)
	if err != nil {
		return sum, err
	}
	defer kafka.Close(client, "kafka client", log)

	dlq := cfg.Kafka.DLQTopic
	partitions, err := client.Partitions(dlq)
	if err != nil {
		return sum, fmt.Errorf("partitions of %s: %w", dlq, err)
	}
	// The end as of now: records dead-lettered during the run wait for the next one.
	ends := make(map[int32]int64, len(partitions))
	for _, p := range partitions {
		if ends[p], err = client.GetOffset(dlq, p, sarama.OffsetNewest); err != nil {
			return sum, fmt.Errorf("end of %s/%d: %w", dlq, p, err)
		}
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return sum, err
	}
	defer kafka.Close(consumer, "consumer", log)
	owner := contactstate.Owner{Topic: cfg.Kafka.Topic, Group: cfg.Fleet.GroupID}
	rp := &run{cfg: r, topic: cfg.Kafka.Topic, filter: filter, enc: json.NewEncoder(out), sum: &sum, tracer: tracer, log: log,
		client: client, consumer: consumer}
	if sum.Action == "list_parked" {
		if err := rp.listParked(ctx, client, cfg.StateTopic(), owner); err != nil {
			return sum, err
		}
		return sum, rp.enc.Encode(sum)
	}
	rp.limit = recordLimit(client, cfg.Kafka.Topic, cfg.Kafka.MaxMessageBytes) // only what puts records back needs it
	if !r.DryRun {
		psc, err := kafka.NewProducerConfig(cfg.Kafka)
		if err != nil {
			return sum, err
		}
		ap, err := sarama.NewAsyncProducer(cfg.Kafka.Brokers, psc)
		if err != nil {
			return sum, fmt.Errorf("creating producer: %w", err)
		}
		producer := kafka.NewProducer(ap)
		defer producer.Close()
		rp.producer = producer
	}
	if r.Rate > 0 {
		rp.tick = time.NewTicker(time.Duration(float64(time.Second) / r.Rate))
		defer rp.tick.Stop()
	}
	if sum.Action == "release" {
		if err := rp.release(ctx, client, consumer, cfg.StateTopic(), owner, dlq); err != nil {
			return sum, err
		}
		return sum, rp.enc.Encode(sum)
	}
	offsets, err := sarama.NewOffsetManagerFromClient(r.GroupID, client)
	if err != nil {
		return sum, fmt.Errorf("offset manager of group %s: %w", r.GroupID, err)
	}
	defer kafka.Close(offsets, "offset manager", log)
	for _, p := range partitions {
		if err := rp.partition(ctx, client, consumer, offsets, dlq, p, ends[p]); err != nil {
			return sum, err
		}
		if sum.LimitReached {
			break
		}
	}
	return sum, rp.enc.Encode(sum)
}

// connectReader connects the client that reads the DLQ and the state
// topic. Reading and writing use separate clients: the idempotent producer
// allows one request in flight per connection, and a fetch waiting for
// records would hold it. Kafka answers a connection's requests in order, so
// a fetch long-polling for records that will never come (a run stops at the
// end it saw) would delay each commit behind it: fetches wait 20 ms at most.
func connectReader(ctx context.Context, cfg config.Worker, log zerolog.Logger) (sarama.Client, error) {
	csc, err := kafka.NewConsumerConfig(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	csc.Consumer.MaxWaitTime = 20 * time.Millisecond
	return kafka.Connect(ctx, cfg.Kafka.Brokers, csc, log)
}

// endIdle is how long a partition may give no record before its end is
// taken as reached.
const endIdle = 10 * time.Second

// run is the state of one replay across partitions.
type run struct {
	cfg      config.Replay
	topic    string
	filter   filter
	producer kafka.Enqueuer
	tick     *time.Ticker
	enc      *json.Encoder
	sum      *Summary
	tracer   trace.Tracer
	log      zerolog.Logger
	// through, in a release, is how far it read the DLQ: every record it
	// puts back says so (record.WithReleaseThrough).
	through map[int32]int64
	// client and consumer read the DLQ, and a stub's original record;
	// limit is the largest record the events topic takes back (0: not
	// checked beforehand).
	client   sarama.Client
	consumer sarama.Consumer
	limit    int
}

// partition replays one DLQ partition from the remembered position (or the
// oldest record) to end, and commits the position after the republished
// records were acknowledged.
func (rp *run) partition(ctx context.Context, client sarama.Client, consumer sarama.Consumer, offsets sarama.OffsetManager, dlq string, p int32, end int64) error {
	pom, err := offsets.ManagePartition(dlq, p)
	if err != nil {
		return fmt.Errorf("position of %s/%d: %w", dlq, p, err)
	}
	defer pom.AsyncClose()
	oldest, err := client.GetOffset(dlq, p, sarama.OffsetOldest)
	if err != nil {
		return err
	}
	start, _ := pom.NextOffset()
	if rp.cfg.FromBeginning || start < oldest {
		start = oldest // also when retention deleted what the position pointed at
	}
	if start >= end {
		return nil
	}
	pc, err := consumer.ConsumePartition(dlq, p, start)
	if err != nil {
		return fmt.Errorf("reading %s/%d from %d: %w", dlq, p, start, err)
	}
	defer pc.AsyncClose()
	log := rp.log.With().Int32("partition", p).Int64("from", start).Int64("to", end).Logger()
	log.Info().Msg("replaying partition")

	for next := start; next < end; {
		var m *sarama.ConsumerMessage
		select {
		case <-ctx.Done():
			return rp.commit(offsets, pom, ctx.Err())
		case cerr := <-pc.Errors():
			return rp.commit(offsets, pom, fmt.Errorf("reading %s/%d: %w", dlq, p, cerr))
		case <-time.After(endIdle):
			// Offsets below the end that hold no record (transaction markers,
			// compaction) never arrive: do not wait for them forever.
			log.Warn().Int64("next", next).Msg("no record before the end; the rest of the partition holds none")
			return rp.commit(offsets, pom, nil)
		case m = <-pc.Messages():
		}
		if m.Offset >= end {
			break // dead-lettered after the run started: the next run's
		}
		next = m.Offset + 1
		e := entryOf(m)
		switch {
		case !rp.filter.Match(e):
			rp.sum.Read++
			rp.sum.SkippedFilter++
		case e.ReplayCount >= rp.cfg.MaxCount:
			rp.sum.Read++
			rp.sum.HeldLoopGuard++
			log.Warn().Str("event_id", e.EventID).Int("replay_count", e.ReplayCount).Msg("held by the loop guard: replayed too often")
			if err := rp.enc.Encode(line{"held", e}); err != nil {
				return err
			}
		case rp.cfg.Limit > 0 && rp.sum.Replayed+rp.sum.WouldReplay >= rp.cfg.Limit:
			rp.sum.LimitReached = true // this record stays for a later run
			return rp.commit(offsets, pom, nil)
		default:
			rp.sum.Read++
			if err := passNotBack(rp.replay(ctx, m, e)); err != nil {
				return rp.commit(offsets, pom, err)
			}
		}
		if !rp.cfg.DryRun {
			pom.MarkOffset(m.Offset+1, "")
		}
	}
	return rp.commit(offsets, pom, nil)
}

func (rp *run) replay(ctx context.Context, m *sarama.ConsumerMessage, e entry) error {
	full, why, err := rp.prepare(ctx, m)
	if err != nil {
		return fmt.Errorf("preparing %s (dlq offset %d/%d): %w", e.EventID, e.Partition, e.Offset, err)
	}
	if why != "" {
		return rp.notBack(why, e)
	}
	return rp.putOne(ctx, full, e)
}

// putOne puts back m, prepared (rp.prepare), and reports it.
func (rp *run) putOne(ctx context.Context, m *sarama.ConsumerMessage, e entry) error {
	if rp.cfg.DryRun {
		rp.sum.WouldReplay++
		return rp.enc.Encode(line{"would_replay", e})
	}
	if rp.tick != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-rp.tick.C:
		}
	}
	if err := rp.send(ctx, m, record.ReplayMessage(rp.topic, m)); err != nil {
		if kafka.TooLarge(err) {
			return rp.notBack(notBackTooLarge, e)
		}
		return fmt.Errorf("republishing %s (dlq offset %d/%d): %w", e.EventID, e.Partition, e.Offset, err)
	}
	rp.sum.Replayed++
	e.ReplayCount++
	return rp.enc.Encode(line{"replayed", e})
}

// notBack reports the record of e as one that cannot be put back (why) and
// returns errNotBack, which the routine replay passes.
func (rp *run) notBack(why string, e entry) error {
	switch why {
	case notBackTooLarge:
		rp.sum.TooLarge++
	case notBackValueGone:
		rp.sum.ValueGone++
	}
	return errNotBack{rp.enc.Encode(line{why, e})}
}

// send writes msg, put back from the DLQ record m, in a trace of its own
// linked to the traces m names (where it was dead-lettered, where the event
// arrived); the record's traceparent names the replay from then on, its
// ce_traceparent still the origin.
func (rp *run) send(ctx context.Context, m *sarama.ConsumerMessage, msg *sarama.ProducerMessage) error {
	id, _ := record.Identity(m)
	ctx, span := telemetry.StartSend(ctx, rp.tracer, rp.topic, trace.WithNewRoot(), trace.WithLinks(telemetry.Links(m)...),
		trace.WithAttributes(telemetry.EventID(id), telemetry.ContactID(string(m.Key)), attribute.String("acmecrm.replay.actor", rp.sum.Actor)))
	defer span.End()
	if rp.through != nil {
		record.WithReleaseThrough(msg, rp.through)
	}
	telemetry.Inject(ctx, msg)
	if err := rp.producer.Enqueue(ctx, msg); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	telemetry.Sent(span, msg)
	return nil
}

// commit writes the marked position (what was acknowledged) and returns
// cause, or the commit's own failure. A dry run commits nothing.
func (rp *run) commit(offsets sarama.OffsetManager, pom sarama.PartitionOffsetManager, cause error) error {
	if rp.cfg.DryRun {
		return cause
	}
	offsets.Commit()
	select {
	case cerr := <-pom.Errors():
		return errors.Join(cause, fmt.Errorf("committing the replay position: %w", cerr))
	default:
		return cause
	}
}

// readIDs reads one contact id a line from file ("-": standard input),
// blank lines skipped. An id is taken as it is, commas and spaces
// included: the gateway accepts them (docs/gateway.md).
func readIDs(file string) ([]string, error) {
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("contact id file: %w", err)
		}
		defer f.Close()
		r = f
	}
	var ids []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line := strings.TrimSuffix(sc.Text(), "\r"); strings.TrimSpace(line) != "" {
			ids = append(ids, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("contact id file: %w", err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("contact id file %s lists no contact", file)
	}
	return ids, nil
}

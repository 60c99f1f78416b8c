package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/logging"
	"github.com/acmecrm/integration-service/pkg/ops"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/pkg/replay"
	"github.com/acmecrm/integration-service/pkg/telemetry"
)

// Run is the whole contact-worker binary: it loads the configuration from
// args and getenv, logs to stdout, works until ctx ends, then stops cleanly
// and returns nil. Usage (--help) goes to stderr.
func Run(ctx context.Context, version string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.LoadWorker(args, getenv, stderr)
	if err != nil {
		return err
	}
	tracing, err := telemetry.Setup(ctx, "contact-worker", version, stderr)
	if err != nil {
		return err
	}
	tracer := tracing.Tracer("github.com/acmecrm/integration-service/pkg/worker")
	if cfg.Fleet.DLQSummary {
		log, err := logging.New(cfg.Log, "contact-worker", stderr)
		if err != nil {
			return err
		}
		log = log.With().Str("version", version).Str("mode", "dlq-summary").Logger()
		defer telemetry.Stop(tracing, log)
		if _, err := replay.Summarize(ctx, cfg, log, stdout); err != nil {
			return fmt.Errorf("dlq-summary failed: %w", err)
		}
		return nil
	}
	if cfg.Fleet.Replay.DLQ {
		// The report (one JSON line per record, then the summary) owns
		// stdout, so it can be piped; the logs go to stderr.
		log, err := logging.New(cfg.Log, "contact-worker", stderr)
		if err != nil {
			return err
		}
		log = log.With().Str("version", version).Str("mode", "replay-dlq").Logger()
		defer telemetry.Stop(tracing, log)
		sum, err := replay.Run(ctx, cfg, tracer, log, stdout)
		if err != nil {
			return fmt.Errorf("replay-dlq failed after %d replayed of %d read: %w", sum.Replayed, sum.Read, err)
		}
		log.Info().Interface("summary", sum).Msg("replay done")
		return nil
	}
	log, err := logging.New(cfg.Log, "contact-worker", stdout)
	if err != nil {
		return err
	}
	log = log.With().Str("version", version).Logger()
	defer telemetry.Stop(tracing, log)
	return work(ctx, cfg, tracing, log)
}

func work(ctx context.Context, cfg config.Worker, tracing telemetry.Tracing, log zerolog.Logger) (err error) {
	tracer := tracing.Tracer("github.com/acmecrm/integration-service/pkg/worker")
	w := cfg.Fleet
	psc, err := kafka.NewProducerConfig(cfg.Kafka)
	if err != nil {
		return err
	}
	// The dead-letter producer sends copies of records of up to
	// KAFKA_MAX_MESSAGE_BYTES with their dlq_ headers (dlqRoom).
	psc.Producer.MaxMessageBytes = cfg.Kafka.MaxMessageBytes + record.DeadLetterOverheadBytes
	csc, err := kafka.NewConsumerConfig(cfg.Kafka)
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	metrics := NewMetrics(reg)
	probe := kafka.NewProbe(cfg.Kafka, psc)
	e := ops.NewEcho()
	ops.Register(e, probe.Ready, reg)
	srv := &http.Server{Addr: w.HTTPAddr, Handler: e, ReadHeaderTimeout: 5 * time.Second}
	ln, err := ops.Listen(srv)
	if err != nil {
		return err
	}
	log.Info().Str("addr", ln.Addr().String()).Msg("listening")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Serving (health, metrics, the readiness probe) from the start, so
	// /healthz answers while Kafka is awaited; however work ends, it stops
	// last, and its failure is what work returns.
	serving, ctx := errgroup.WithContext(ctx)
	serving.Go(func() error { return ops.Serve(ctx, srv, ln, ops.Stop{Timeout: w.ShutdownTimeout, Log: log}) })
	if w.PprofAddr != "" {
		pprofSrv := ops.NewPprofServer(w.PprofAddr)
		pln, err := ops.Listen(pprofSrv)
		if err != nil {
			cancel()
			_ = serving.Wait()
			return err
		}
		log.Warn().Str("addr", pln.Addr().String()).Msg("serving /debug/pprof (WORKER_PPROF_ADDR): keep this port private")
		serving.Go(func() error { return ops.Serve(ctx, pprofSrv, pln, ops.Stop{Timeout: time.Second, Log: log}) })
	}
	defer func() {
		cancel()
		if serr := serving.Wait(); err == nil {
			err = serr
		}
	}()

	producerClient, err := kafka.Start(ctx, cfg.Kafka, psc, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for Kafka (or a part failed: that error is returned)
		}
		return err
	}
	defer kafka.Close(producerClient, "producer client", log)
	serving.Go(func() error { probe.Run(ctx, cfg.Kafka.HealthInterval); return nil })

	ap, err := sarama.NewAsyncProducerFromClient(producerClient)
	if err != nil {
		return fmt.Errorf("creating dead-letter producer: %w", err)
	}
	dlqProducer := kafka.NewProducer(ap)
	group, err := sarama.NewConsumerGroup(cfg.Kafka.Brokers, w.GroupID, csc)
	if err != nil {
		return fmt.Errorf("joining consumer group %s: %w", w.GroupID, err)
	}

	// A fault of the API stops the partitions' loops from taking records;
	// the consumer itself is not paused: sarama keeps a pause across a
	// rebalance that gives a member the same partitions, and the new
	// session would then get no record to probe with.
	health := newAPIHealth(w.Outage, func(cause contacts.Cause, why string) {
		if cause != "" {
			metrics.outage.Set(1)
			metrics.outages.Inc()
			metrics.fault.WithLabelValues(string(cause)).Set(1)
			log.Error().Str("cause", string(cause)).Str("reason", why).Msg("contacts api fault: taking no new records, dead-lettering nothing, probing")
			return
		}
		metrics.outage.Set(0)
		for _, c := range contacts.Causes {
			if apiWide(c) {
				metrics.fault.WithLabelValues(string(c)).Set(0)
			}
		}
		log.Info().Str("reason", why).Msg("contacts api fault over: resuming")
	})
	gate := newCallGate(w.MaxInFlight, health, w.MaxCallsPerSecond, w.RateLimit.MaxPause, metrics)
	// Reading committed offsets and the parked topic: a client of its own,
	// so that neither waits behind the producers' requests.
	readerClient, err := kafka.Connect(ctx, cfg.Kafka.Brokers, csc, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer kafka.Close(readerClient, "reader client", log)
	stateName := cfg.StateTopic()
	statePartitions, err := provisionState(readerClient, cfg, log)
	if err != nil {
		return err
	}
	admin, err := sarama.NewClusterAdminFromClient(readerClient) // closed with the client
	if err != nil {
		return fmt.Errorf("creating the offsets reader: %w", err)
	}
	room := &dlqRoom{Admin: admin, Events: cfg.Kafka.Topic, DLQ: cfg.Kafka.DLQTopic, Provision: cfg.Kafka.ProvisionTopics, ProducerLimit: psc.Producer.MaxMessageBytes, Log: log}
	room.check()
	// State records and forwarded events go to the partition chosen for
	// them, whatever partitioner wrote the events: a producer of its own.
	pkc := *psc
	pkc.Producer.Partitioner = sarama.NewManualPartitioner
	pkc.Producer.MaxMessageBytes = cfg.Kafka.MaxMessageBytes // its batches go to the events topic too
	stateClient, err := kafka.Connect(ctx, cfg.Kafka.Brokers, &pkc, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer kafka.Close(stateClient, "state-topic client", log)
	sap, err := sarama.NewAsyncProducerFromClient(stateClient)
	if err != nil {
		return fmt.Errorf("creating the state-topic producer: %w", err)
	}
	stateProducer := kafka.NewProducer(sap)
	defer stateProducer.Close()
	state := &stateTopic{Store: contactstate.NewStore(), Client: readerClient, Producer: stateProducer, Topic: stateName, Partitions: statePartitions,
		Owner: contactstate.Owner{Topic: cfg.Kafka.Topic, Group: w.GroupID}, Metrics: metrics, Log: log}
	state.Forwarder = &publisher{Producer: stateProducer, Topic: cfg.Kafka.Topic, Failures: metrics.forwardFailures, Tracer: tracer, Log: log}
	oldestParked := state.Store.OldestParked
	metrics.oldestParked.Store(&oldestParked)
	if cfg.Kafka.ParkedTopic != "" {
		// Looked up once: a topic that does not exist (a deployment that
		// never had one) would otherwise cost each partition's first load
		// the client's metadata retries (about 0.8 s).
		topics, err := admin.ListTopics()
		if _, exists := topics[cfg.Kafka.ParkedTopic]; err != nil || exists {
			state.Legacy = &legacyParked{Topic: cfg.Kafka.ParkedTopic, DLQ: cfg.Kafka.DLQTopic, Owner: state.Owner}
		}
	}
	api := contacts.NewClient(w.ContactsAPIURL, w.ContactsAPIToken, w.ContactsAPITimeout, w.MaxInFlight, contacts.WithTracerProvider(tracing.Provider))
	handler := newDispatcher(&processor{
		API:          api,
		Retrier:      newRetrier(w.Retry, gate, health),
		Health:       health,
		DeadLetterer: &publisher{Producer: dlqProducer, Topic: cfg.Kafka.DLQTopic, Failures: metrics.dlqPublishFailures, Room: room.refused, Tracer: tracer, Log: log},
		State:        state.Store,
		Guard:        guard{MaxClockSkew: w.StaleGuard.MaxClockSkew},
		Group:        w.GroupID,
		Metrics:      metrics,
		Tracer:       tracer,
		Log:          log,
		Now:          time.Now,
	}, w, health)
	handler.state = state
	handler.partitions = func(topic string) (int32, error) {
		// The forwarding producer's client too: sarama refuses a record for
		// a partition its cached metadata does not have (ErrInvalidPartition)
		// until its next refresh, minutes later.
		if err := readerClient.RefreshMetadata(topic); err != nil {
			return 0, err
		}
		if err := stateClient.RefreshMetadata(topic); err != nil {
			return 0, err
		}
		ps, err := readerClient.Partitions(topic)
		return int32(len(ps)), err
	}
	handler.topicID = func(topic string) (string, error) {
		id, err := topicIDOf(admin, topic)
		if err != nil {
			// The admin asks the broker the client takes for the controller;
			// after a broker restart that may be gone: ask again elsewhere.
			_, _ = readerClient.RefreshController()
		}
		return id, err
	}
	handler.oldest = func(topic string, partition int32) (int64, error) {
		return readerClient.GetOffset(topic, partition, sarama.OffsetOldest)
	}
	handler.committed = func(topic string, partition int32) (int64, string, error) {
		resp, err := admin.ListConsumerGroupOffsets(w.GroupID, map[string][]int32{topic: {partition}})
		if err != nil {
			return 0, "", err
		}
		b := resp.GetBlock(topic, partition)
		if b == nil {
			return 0, "", fmt.Errorf("no committed offset of %s/%d in the answer", topic, partition)
		}
		if b.Err != sarama.ErrNoError {
			return 0, "", b.Err
		}
		return b.Offset, b.Metadata, nil
	}
	go watchDLQ(ctx, readerClient, admin, cfg.Kafka.DLQTopic, cfg.Fleet.Replay.GroupID, 30*time.Second, metrics, log)
	log.Info().Str("group", w.GroupID).Str("topic", cfg.Kafka.Topic).Str("dlq_topic", cfg.Kafka.DLQTopic).Str("state_topic", stateName).
		Int("max_in_flight", w.MaxInFlight).Int("partition_buffer", w.PartitionBuffer).Str("ordering", w.Ordering).Msg("consuming")
	// A context of its own (a new variable: the serving goroutines read ctx).
	consuming, consumeCtx := errgroup.WithContext(ctx)
	consuming.Go(func() error { return consume(consumeCtx, group, cfg.Kafka.Topic, handler, log) })
	// When ctx ends (SIGTERM, or a part failed), the session ends: in-flight
	// events are abandoned uncommitted and Cleanup commits what is done;
	// Close waits for that session, then leaves the group.
	consuming.Go(func() error {
		<-consumeCtx.Done()
		log.Info().Msg("shutting down: abandoning the in-flight events, committing, leaving the group")
		if err := group.Close(); err != nil {
			log.Error().Err(err).Msg("leaving the consumer group")
		}
		return nil
	})
	// Stop in order, within the shutdown budget: the consumer and the
	// group, then the dead-letter producer it used.
	stopped := make(chan error, 1)
	go func() {
		err := consuming.Wait()
		dlqProducer.Close()
		stopped <- err
	}()
	select {
	case err = <-stopped:
	case <-consumeCtx.Done():
		select {
		case err = <-stopped:
		case <-time.After(w.ShutdownTimeout):
			log.Error().Dur("budget", w.ShutdownTimeout).Msg("shutdown budget spent before the group was left")
		}
	}
	log.Info().Msg("stopped")
	return err
}

// watchDLQ sets, every interval until ctx ends, what the DLQ topic retains
// and how much of it the routine replay group has not read: for dashboards
// and alerts (every member reports the same figures).
func watchDLQ(ctx context.Context, client sarama.Client, admin sarama.ClusterAdmin, topic, replayGroup string, interval time.Duration, m *Metrics, log zerolog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if b, err := bounds(client, topic); err != nil {
			log.Warn().Err(err).Str("topic", topic).Msg("reading the DLQ's size")
		} else {
			m.dlqRecords.Set(float64(b.retained()))
			if n, err := b.unread(admin, topic, replayGroup); err != nil {
				log.Warn().Err(err).Str("topic", topic).Str("group", replayGroup).Msg("reading the replay group's position in the DLQ")
			} else {
				m.dlqUnreplayed.Set(float64(n))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// offsetBounds are each partition's oldest retained and next offsets.
type offsetBounds map[int32][2]int64

// bounds reads topic's offsetBounds.
func bounds(client sarama.Client, topic string) (offsetBounds, error) {
	partitions, err := client.Partitions(topic)
	if err != nil {
		return nil, err
	}
	b := offsetBounds{}
	for _, p := range partitions {
		oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			return nil, err
		}
		newest, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, err
		}
		b[p] = [2]int64{oldest, newest}
	}
	return b, nil
}

// retained is how many records the topic holds: newest minus oldest
// offset, summed over its partitions.
func (b offsetBounds) retained() int64 {
	var n int64
	for _, o := range b {
		n += o[1] - o[0]
	}
	return n
}

// unread is how many of them group would read next: per partition, newest
// offset minus the group's committed one (or the oldest retained, when it
// committed none or one that expired).
func (b offsetBounds) unread(admin sarama.ClusterAdmin, topic, group string) (int64, error) {
	partitions := make([]int32, 0, len(b))
	for p := range b {
		partitions = append(partitions, p)
	}
	committed, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: partitions})
	if err != nil {
		return 0, err
	}
	var n int64
	for p, o := range b {
		from := o[0]
		if c := committed.GetBlock(topic, p); c != nil && c.Err == sarama.ErrNoError && c.Offset > from {
			from = c.Offset
		}
		n += max(0, o[1]-from)
	}
	return n, nil
}

// consume runs consumer-group sessions until ctx ends: a rebalance ends a
// session, and the loop joins the next one.
func consume(ctx context.Context, group sarama.ConsumerGroup, topic string, h sarama.ConsumerGroupHandler, log zerolog.Logger) error {
	go func() {
		for err := range group.Errors() {
			log.Error().Err(err).Msg("consumer group")
		}
	}()
	for {
		err := group.Consume(ctx, []string{topic}, h)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, sarama.ErrClosedConsumerGroup) {
			return err
		}
		if err != nil {
			log.Error().Err(err).Msg("consumer group session failed, rejoining")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
}

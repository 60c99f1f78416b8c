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

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contacts"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/logging"
	"github.com/acmecrm/integration-service/pkg/ops"
	"github.com/acmecrm/integration-service/pkg/replay"
)

// Run is the whole contact-worker binary: it loads the configuration from
// args and getenv, logs to stdout, works until ctx ends, then stops cleanly
// and returns nil. Usage (--help) goes to stderr.
func Run(ctx context.Context, version string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.LoadWorker(args, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.Worker.Replay.DLQ {
		// The report (one JSON line per record, then the summary) owns
		// stdout, so it can be piped; the logs go to stderr.
		log, err := logging.New(cfg.Log, "contact-worker", stderr)
		if err != nil {
			return err
		}
		log = log.With().Str("version", version).Str("mode", "replay-dlq").Logger()
		sum, err := replay.Run(ctx, cfg, log, stdout)
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
	return work(ctx, cfg, log.With().Str("version", version).Logger())
}

func work(ctx context.Context, cfg config.Worker, log zerolog.Logger) error {
	w := cfg.Worker
	psc, err := kafka.NewProducerConfig(cfg.Kafka)
	if err != nil {
		return err
	}
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
	addr, errc, err := ops.Start(srv)
	if err != nil {
		return err
	}
	log.Info().Str("addr", addr.String()).Msg("listening")
	defer ops.Shutdown(srv, w.ShutdownTimeout, log)

	producerClient, err := kafka.Start(ctx, cfg.Kafka, psc, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for Kafka
		}
		return err
	}
	defer kafka.Close(producerClient, "producer client", log)
	go probe.Run(ctx, cfg.Kafka.HealthInterval)

	ap, err := sarama.NewAsyncProducerFromClient(producerClient)
	if err != nil {
		return fmt.Errorf("creating dead-letter producer: %w", err)
	}
	dlqProducer := kafka.NewProducer(ap)
	group, err := sarama.NewConsumerGroup(cfg.Kafka.Brokers, w.GroupID, csc)
	if err != nil {
		return fmt.Errorf("joining consumer group %s: %w", w.GroupID, err)
	}

	outage := NewOutageDetector(w.Outage, func(out bool, why string) {
		if out {
			metrics.outage.Set(1)
			metrics.outages.Inc()
			group.PauseAll() // no fetching while nothing new is taken
			log.Error().Str("reason", why).Msg("contacts api outage: taking no new records, dead-lettering nothing by elapsed time, probing")
			return
		}
		metrics.outage.Set(0)
		group.ResumeAll()
		log.Info().Str("reason", why).Msg("contacts api outage over: resuming")
	})
	admin, err := sarama.NewClusterAdminFromClient(producerClient) // closed with the client
	if err != nil {
		return fmt.Errorf("creating the offsets reader: %w", err)
	}
	handler := newGroupHandler(&Processor{
		Handlers: Handlers(contacts.NewClient(w.ContactsAPIURL, w.ContactsAPIToken, w.ContactsAPITimeout, w.MaxInFlight)),
		Retrier:  NewRetrier(w.Retry, outage),
		Outage:   outage,
		DLQ:      &Publisher{Producer: dlqProducer, Topic: cfg.Kafka.DLQTopic, Metrics: metrics, Log: log},
		Group:    w.GroupID,
		Metrics:  metrics,
		Log:      log,
		Now:      time.Now,
	}, w, outage)
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
	consumed := make(chan error, 1)
	go func() { consumed <- consume(ctx, group, cfg.Kafka.Topic, handler, log) }()
	log.Info().Str("group", w.GroupID).Str("topic", cfg.Kafka.Topic).Str("dlq_topic", cfg.Kafka.DLQTopic).
		Int("max_in_flight", w.MaxInFlight).Int("partition_buffer", w.PartitionBuffer).Str("ordering", w.Ordering).Msg("consuming")

	consumeDone := false
	select {
	case <-ctx.Done():
		log.Info().Msg("shutting down: abandoning the in-flight events, committing, leaving the group")
	case err = <-errc:
	case err = <-consumed:
		consumeDone = true
	}
	// Ending ctx ends the session: in-flight events are abandoned uncommitted
	// and Cleanup commits what is done. Close waits for that session, then
	// leaves the group. All of it within the shutdown budget.
	stopped := make(chan error, 1)
	go func() {
		cerr := group.Close()
		if !consumeDone {
			<-consumed
		}
		dlqProducer.Close()
		stopped <- cerr
	}()
	select {
	case cerr := <-stopped:
		if cerr != nil {
			log.Error().Err(cerr).Msg("leaving the consumer group")
		}
	case <-time.After(w.ShutdownTimeout):
		log.Error().Dur("budget", w.ShutdownTimeout).Msg("shutdown budget spent before the group was left")
	}
	log.Info().Msg("stopped")
	return err
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

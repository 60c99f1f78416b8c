package worker

import (
	"context"
	"io"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/logging"
	"github.com/acmecrm/integration-service/pkg/ops"
)

// Run is the whole contact-worker binary: it loads the configuration from
// args and getenv, logs to stdout, works until ctx ends, then stops cleanly
// and returns nil. Usage (--help) goes to stderr.
func Run(ctx context.Context, version string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.LoadWorker(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := logging.New(cfg.Log, "contact-worker", stdout)
	if err != nil {
		return err
	}
	return work(ctx, cfg, log.With().Str("version", version).Logger())
}

func work(ctx context.Context, cfg config.Worker, log zerolog.Logger) error {
	sc, err := kafka.NewProducerConfig(cfg.Kafka)
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	probe := kafka.NewProbe(cfg.Kafka, sc)
	e := ops.NewEcho()
	ops.Register(e, probe.Ready, reg)
	w := cfg.Worker
	srv := &http.Server{Addr: w.HTTPAddr, Handler: e, ReadHeaderTimeout: cfg.Kafka.DialTimeout}
	addr, errc, err := ops.Start(srv)
	if err != nil {
		return err
	}
	log.Info().Str("addr", addr.String()).Msg("listening")

	client, err := kafka.Start(ctx, cfg.Kafka, sc, log)
	if err != nil {
		ops.Shutdown(srv, w.ShutdownTimeout, log)
		if ctx.Err() != nil {
			return nil // stopped while waiting for Kafka
		}
		return err
	}
	go probe.Run(ctx, cfg.Kafka.HealthInterval)

	select {
	case <-ctx.Done():
		log.Info().Msg("shutting down")
	case err = <-errc:
	}
	ops.Shutdown(srv, w.ShutdownTimeout, log)
	kafka.Close(client, "kafka client", log)
	return err
}

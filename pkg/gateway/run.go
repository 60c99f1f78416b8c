package gateway

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

// Run is the whole webhook-gateway binary: it loads the configuration from
// args and getenv, logs to stdout, serves until ctx ends, then drains and
// returns nil. Usage (--help) goes to stderr.
func Run(ctx context.Context, version string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.LoadGateway(args, getenv, stderr)
	if err != nil {
		return err
	}
	log, err := logging.New(cfg.Log, "webhook-gateway", stdout)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log.With().Str("version", version).Logger())
}

func serve(ctx context.Context, cfg config.Gateway, log zerolog.Logger) error {
	sc, err := kafka.NewProducerConfig(cfg.Kafka)
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	probe := kafka.NewProbe(cfg.Kafka, sc)

	e := ops.NewEcho()
	ops.Register(e, probe.Ready, reg)
	g := cfg.Gateway
	srv := &http.Server{
		Addr:              g.ListenAddr,
		Handler:           e,
		ReadHeaderTimeout: g.ReadHeaderTimeout,
		ReadTimeout:       g.ReadTimeout,
		WriteTimeout:      g.WriteTimeout,
		IdleTimeout:       g.IdleTimeout,
	}
	addr, errc, err := ops.Start(srv)
	if err != nil {
		return err
	}
	log.Info().Str("addr", addr.String()).Msg("listening")

	client, err := kafka.Start(ctx, cfg.Kafka, sc, log)
	if err != nil {
		ops.Shutdown(srv, g.ShutdownTimeout, log)
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
	// Order matters: stop taking requests and drain them before the Kafka
	// client they use goes away.
	ops.Shutdown(srv, g.ShutdownTimeout, log)
	kafka.Close(client, "kafka client", log)
	return err
}

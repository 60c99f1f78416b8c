package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/logging"
	"github.com/acmecrm/integration-service/pkg/ops"
	"github.com/acmecrm/integration-service/pkg/telemetry"
	"github.com/acmecrm/integration-service/pkg/webhook"
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
	log = log.With().Str("version", version).Logger()
	tracing, err := telemetry.Setup(ctx, "webhook-gateway", version, stderr)
	if err != nil {
		return err
	}
	defer telemetry.Stop(tracing, log)
	return serve(ctx, cfg, tracing, log)
}

func serve(ctx context.Context, cfg config.Gateway, tracing telemetry.Tracing, log zerolog.Logger) error {
	g := cfg.Server
	verifier, err := webhook.NewVerifier(g.WebhookSecrets, g.TimestampTolerance)
	if err != nil {
		return err
	}
	sc, err := kafka.NewProducerConfig(cfg.Kafka)
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	metrics := NewMetrics(reg)
	probe := kafka.NewProbe(cfg.Kafka, sc)
	lameDuck := &lameDuck{}
	enqueuer := &lateEnqueuer{}
	receiver := &receiver{
		Verifier:       verifier,
		Enqueuer:       enqueuer,
		Topic:          cfg.Kafka.Topic,
		MaxBodyBytes:   int64(g.MaxBodyBytes),
		EnqueueTimeout: g.EnqueueTimeout,
		RetryAfter:     g.RetryAfter,
		StrictTypes:    g.StrictEventTypes,
		Budget:         semaphore.NewWeighted(g.MaxInflightBytes),
		Metrics:        metrics,
		Tracer:         tracing.Tracer("github.com/acmecrm/integration-service/pkg/gateway"),
		Now:            time.Now,
		Log:            log,
	}

	srv := &http.Server{
		Addr:              g.ListenAddr,
		Handler:           newEcho(receiver, g.WebhookPath, lameDuck.ready(receiver.authorized(probe.Ready)), lameDuck, metricsOn(g.MetricsAddr, reg), tracing, log),
		ReadHeaderTimeout: g.ReadHeaderTimeout,
		ReadTimeout:       g.ReadTimeout,
		WriteTimeout:      g.WriteTimeout,
		IdleTimeout:       g.IdleTimeout,
	}

	// Serve from the start, so /healthz answers while Kafka is awaited;
	// webhooks get 503 until the producer exists.
	ln, err := ops.Listen(srv)
	if err != nil {
		return err
	}
	log.Info().Str("addr", ln.Addr().String()).Str("path", g.WebhookPath).Msg("listening")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	group, ctx := errgroup.WithContext(ctx)
	group.Go(func() error {
		return ops.Serve(ctx, srv, ln, ops.Stop{
			// Lame duck: not ready at once, so the load balancer stops
			// sending; still serving what it sends meanwhile, each answer
			// closing its connection so that no client is left with a
			// kept-alive one the drain would cut.
			Stopping: func() {
				lameDuck.on.Store(true)
				log.Info().Dur("delay", g.ShutdownDelay).Msg("shutting down: not ready; serving for the lame-duck delay, then draining")
			},
			Delay: g.ShutdownDelay, Timeout: g.ShutdownTimeout, Log: log,
		})
	})
	if g.MetricsAddr != "" {
		metricsSrv := ops.NewMetricsServer(g.MetricsAddr, reg)
		mln, err := ops.Listen(metricsSrv)
		if err != nil {
			cancel()
			_ = group.Wait()
			return err
		}
		log.Info().Str("addr", mln.Addr().String()).Msg("serving /metrics (GATEWAY_METRICS_ADDR)")
		group.Go(func() error { return ops.Serve(ctx, metricsSrv, mln, ops.Stop{Timeout: time.Second, Log: log}) })
	}
	if g.PprofAddr != "" {
		pprofSrv := ops.NewPprofServer(g.PprofAddr)
		pln, err := ops.Listen(pprofSrv)
		if err != nil {
			cancel()
			_ = group.Wait()
			return err
		}
		log.Warn().Str("addr", pln.Addr().String()).Msg("serving /debug/pprof (GATEWAY_PPROF_ADDR): keep this port private")
		group.Go(func() error { return ops.Serve(ctx, pprofSrv, pln, ops.Stop{Timeout: time.Second, Log: log}) })
	}

	// Start the parts in order, then wait; stop in the reverse order:
	// requests drained, then the producer they used flushed, then the
	// client under it closed.
	client, err := kafka.Start(ctx, cfg.Kafka, sc, log)
	if err != nil {
		stopped := ctx.Err() != nil
		cancel()
		if werr := group.Wait(); werr != nil {
			return werr
		}
		if stopped {
			return nil // stopped while waiting for Kafka
		}
		return err
	}
	defer kafka.Close(client, "kafka client", log)
	if err := checkRecordLimit(client, cfg.Kafka.Topic, g.MaxBodyBytes, log); err != nil {
		cancel()
		_ = group.Wait()
		return err
	}
	ap, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		cancel()
		_ = group.Wait()
		return fmt.Errorf("creating producer: %w", err)
	}
	producer := kafka.NewProducer(ap)
	enqueuer.p.Store(producer)
	group.Go(func() error { probe.Run(ctx, cfg.Kafka.HealthInterval); return nil })

	err = group.Wait()
	producer.Close()
	log.Info().Msg("stopped")
	return err
}

// metricsOn returns reg when /metrics is served on the webhook port
// (GATEWAY_METRICS_ADDR empty), nil when it has a port of its own.
func metricsOn(metricsAddr string, reg *prometheus.Registry) *prometheus.Registry {
	if metricsAddr != "" {
		return nil
	}
	return reg
}

// newEcho routes the webhook path (every method: the handler answers 405)
// and the probes — and /metrics when reg is not nil —, behind request ids,
// metrics and recovery.
func newEcho(h *receiver, path string, ready ops.ReadyFunc, ld *lameDuck, reg *prometheus.Registry, tracing telemetry.Tracing, log zerolog.Logger) *echo.Echo {
	e := ops.NewEcho()
	e.HTTPErrorHandler = renderErrors(log)
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{Generator: requestIDs()}), ld.closeConnections,
		h.Metrics.Observe(log, tracing), middleware.Recover())
	if reg != nil {
		ops.Register(e, ready, reg)
	} else {
		ops.RegisterProbes(e, ready)
	}
	e.Any(path, h.Serve)
	return e
}

// requestIDs returns a generator of request ids: a random prefix drawn once
// per process and a counter, unique across processes without reading
// crypto/rand for every request (echo's default draws 32 characters).
func requestIDs() func() string {
	var seed [8]byte
	_, _ = rand.Read(seed[:]) // never fails (crypto/rand)
	prefix := hex.EncodeToString(seed[:])
	var n atomic.Uint64
	return func() string {
		b := make([]byte, 0, 40)
		b = append(append(b, prefix...), '-')
		return string(strconv.AppendUint(b, n.Add(1), 36))
	}
}

// lameDuck is the phase between SIGTERM and the drain.
type lameDuck struct{ on atomic.Bool }

// errShuttingDown makes /readyz answer 503 during the lame-duck phase.
var errShuttingDown = errors.New("shutting down")

// ready is probe, or errShuttingDown once the lame-duck phase began.
func (l *lameDuck) ready(probe ops.ReadyFunc) ops.ReadyFunc {
	return func() error {
		if l.on.Load() {
			return errShuttingDown
		}
		return probe()
	}
}

// closeConnections asks clients not to reuse their connection once the
// lame-duck phase began (Connection: close on every answer).
func (l *lameDuck) closeConnections(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if l.on.Load() {
			c.Response().Header().Set(echo.HeaderConnection, "close")
		}
		return next(c)
	}
}

// errKafkaNotConnected answers webhooks that arrive before Kafka does.
var errKafkaNotConnected = errors.New("kafka not connected yet")

// lateEnqueuer enqueues through a producer that exists only once Kafka has
// been reached.
type lateEnqueuer struct {
	p atomic.Pointer[kafka.Producer]
}

func (l *lateEnqueuer) Enqueue(ctx context.Context, msg *sarama.ProducerMessage) error {
	p := l.p.Load()
	if p == nil {
		return errKafkaNotConnected
	}
	return p.Enqueue(ctx, msg)
}

// checkRecordLimit refuses to start when the events topic's
// max.message.bytes cannot hold the largest body the gateway accepts
// (GATEWAY_MAX_BODY_BYTES) with its key and headers: such a webhook would
// be answered "try again" forever. A topic whose configuration cannot be
// read (no DescribeConfigs ACL) is logged and trusted.
func checkRecordLimit(client sarama.Client, topic string, maxBody int, log zerolog.Logger) error {
	admin, err := sarama.NewClusterAdminFromClient(client) // closed with the client
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	limit, err := kafka.RecordLimit(admin, topic)
	if err != nil {
		log.Warn().Err(err).Str("topic", topic).Msg("reading the topic's max.message.bytes; not checked against GATEWAY_MAX_BODY_BYTES")
		return nil
	}
	if need := maxBody + config.RecordOverheadBytes; limit < need {
		return fmt.Errorf("topic %s's max.message.bytes is %d: it cannot hold a body of GATEWAY_MAX_BODY_BYTES=%d plus %d bytes of key and headers; lower GATEWAY_MAX_BODY_BYTES to %d or raise the topic's max.message.bytes to %d",
			topic, limit, maxBody, config.RecordOverheadBytes, max(0, limit-config.RecordOverheadBytes), need)
	}
	return nil
}

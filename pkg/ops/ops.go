package ops

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The paths both binaries serve; probes and scrapers are configured with them.
const (
	HealthPath  = "/healthz"
	ReadyPath   = "/readyz"
	MetricsPath = "/metrics"
)

// ReadyFunc returns nil when the process can do its work, else why not.
type ReadyFunc func() error

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors, so each binary exposes only its own metrics plus these.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Register adds /healthz, /readyz and /metrics to e.
func Register(e *echo.Echo, ready ReadyFunc, reg *prometheus.Registry) {
	RegisterProbes(e, ready)
	e.GET(MetricsPath, echo.WrapHandler(MetricsHandler(reg)))
}

// MetricsHandler serves reg's metrics in Prometheus' text format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// NewMetricsServer returns a server of /metrics alone on addr: a port of its
// own, for binaries whose main port faces outside callers.
func NewMetricsServer(addr string, reg *prometheus.Registry) *http.Server {
	mux := http.NewServeMux()
	mux.Handle(MetricsPath, MetricsHandler(reg))
	return &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}

// RegisterProbes adds /healthz and /readyz to e.
func RegisterProbes(e *echo.Echo, ready ReadyFunc) {
	e.GET(HealthPath, func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET(ReadyPath, func(c echo.Context) error {
		if err := ready(); err != nil {
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
}

// NewEcho returns an echo instance without its banner and default logger:
// the binaries log through zerolog.
func NewEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	return e
}

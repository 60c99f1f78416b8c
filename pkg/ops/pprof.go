package ops

import (
	"net/http"
	"net/http/pprof"
	"time"
)

// NewPprofServer returns a server of Go's profiling endpoints
// (/debug/pprof/...) on addr: for a listener of its own, opt in, never the
// port webhooks or scrapes arrive on (a profile is costly to take and says
// much about the process).
func NewPprofServer(addr string) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}

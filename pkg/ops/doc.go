// Package ops provides the operational HTTP endpoints both binaries serve:
// /healthz (the process is alive), /readyz (it can do its work) and
// /metrics (Prometheus).
//
// It offers the paths (HealthPath, ReadyPath, MetricsPath), NewRegistry,
// NewEcho and Register for the endpoints, Listen and Serve to run an HTTP
// server until its context ends (Stop: lame duck and drain), and
// NewPprofServer, Go's profiles on a listener of their own.
package ops

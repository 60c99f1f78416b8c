package ops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// Listen opens srv's address, so that a port in use is an error at start
// and the address chosen for ":0" is known before serving.
func Listen(srv *http.Server) (net.Listener, error) {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", srv.Addr, err)
	}
	return ln, nil
}

// Stop says how Serve stops once its context ends.
type Stop struct {
	// Stopping, when set, is called as soon as the context ends (e.g. to
	// answer /readyz with 503).
	Stopping func()
	// Delay is how long it goes on serving after that (the lame duck).
	Delay time.Duration
	// Timeout bounds the drain of the requests in flight; a drain cut short
	// is logged to Log, not returned: what it cut is retried by its sender.
	Timeout time.Duration
	Log     zerolog.Logger
}

// Serve serves srv on ln until ctx ends, then stops as stop says: it owns
// the server's whole life. It returns nil once stopped, or the error that
// stopped serving before.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, stop Stop) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	if stop.Stopping != nil {
		stop.Stopping()
	}
	select {
	case err := <-served:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-time.After(stop.Delay):
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), stop.Timeout)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		stop.Log.Error().Err(err).Str("addr", ln.Addr().String()).Msg("http drain incomplete")
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	return nil
}

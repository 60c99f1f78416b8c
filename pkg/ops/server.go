package ops

import (
	"context"
	"time"

	"errors"
	"fmt"
	"github.com/rs/zerolog"
	"net"
	"net/http"
)

// Start listens on srv.Addr and serves in the background. The returned
// channel yields the error that stopped the server, if it was not a Shutdown,
// and is closed when serving ends.
func Start(srv *http.Server) (net.Addr, <-chan error, error) {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listening on %s: %w", srv.Addr, err)
	}
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving on %s: %w", srv.Addr, err)
		}
	}()
	return ln.Addr(), errc, nil
}

// Shutdown stops srv accepting and drains in-flight requests within timeout.
func Shutdown(srv *http.Server, timeout time.Duration, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Error().Err(err).Msg("http drain incomplete")
	}
}

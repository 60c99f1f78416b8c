package logging

import (
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/config"
)

// New returns a logger writing to w at the configured level and format,
// stamped with the service name.
func New(c config.Log, service string, w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("parsing log level: %w", err)
	}
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(level).With().
		Timestamp().
		Str("service", service).
		Logger(), nil
}

func init() {
	// RFC 3339 with nanoseconds: readable by every log pipeline, and fine
	// enough to order the lines of one request.
	zerolog.TimeFieldFormat = time.RFC3339Nano
}

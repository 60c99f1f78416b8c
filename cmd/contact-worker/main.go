// Command contact-worker applies AcmeCRM contact events from Kafka to the
// Contacts API as a member of a consumer group; with --replay-dlq it
// republishes dead-lettered events instead.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/worker"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := worker.Run(ctx, version, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if config.IsHelp(err) {
			return
		}
		fmt.Fprintf(os.Stderr, "contact-worker: %v\n", err)
		os.Exit(1)
	}
}

// Command webhook-gateway receives AcmeCRM webhooks, authenticates them
// (Standard Webhooks), validates them and enqueues them durably into Kafka.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/gateway"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := gateway.Run(ctx, version, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if config.IsHelp(err) {
			return
		}
		fmt.Fprintf(os.Stderr, "webhook-gateway: %v\n", err)
		os.Exit(1)
	}
}

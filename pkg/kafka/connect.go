package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"
)

// Connect creates a sarama client, retrying with backoff until the brokers
// answer or ctx ends: a pod that starts before Kafka is reachable waits (not
// ready) instead of crash-looping.
func Connect(ctx context.Context, brokers []string, sc *sarama.Config, log zerolog.Logger) (sarama.Client, error) {
	if sc.Net.TLS.Enable && sc.Net.TLS.Config != nil && sc.Net.TLS.Config.InsecureSkipVerify {
		log.Warn().Msg("KAFKA_TLS_INSECURE_SKIP_VERIFY is true: the brokers' certificates are NOT checked; anyone on the path can read and change the records. Tests only.")
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0 // until ctx ends
	var client sarama.Client
	op := func() error {
		c, err := newClient(ctx, brokers, sc)
		if err != nil {
			log.Warn().Err(err).Strs("brokers", brokers).Str("security_protocol", protocolOf(sc)).Msg("kafka not reachable yet, retrying")
			return err
		}
		client = c
		return nil
	}
	if err := backoff.Retry(op, backoff.WithContext(b, ctx)); err != nil {
		return nil, fmt.Errorf("connecting to kafka %v: %w", brokers, err)
	}
	return client, nil
}

// Provision creates the missing topics of specs through client, logs what
// it did and returns the names of the topics it created.
func Provision(client sarama.Client, specs []TopicSpec, log zerolog.Logger) ([]string, error) {
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("kafka admin: %w", err)
	}
	// Closing the admin would close the shared client; it holds nothing else.
	created, err := ensureTopics(admin, specs)
	for _, name := range created {
		log.Info().Str("topic", name).Msg("created topic")
	}
	if err != nil {
		return created, fmt.Errorf("provisioning topics: %w", err)
	}
	return created, nil
}

// newClient is sarama.NewClient that gives up when ctx ends: one attempt
// against an unreachable broker can take its dial timeout times every
// metadata retry, and a SIGTERM must not wait for that.
func newClient(ctx context.Context, brokers []string, sc *sarama.Config) (sarama.Client, error) {
	type result struct {
		c   sarama.Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := sarama.NewClient(brokers, sc)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-ctx.Done():
		go func() { // close the client if it connects after all
			if r := <-done; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, backoff.Permanent(ctx.Err())
	}
}

// protocolOf names sc's security protocol as Kafka does, for logs.
func protocolOf(sc *sarama.Config) string {
	switch {
	case sc.Net.TLS.Enable && sc.Net.SASL.Enable:
		return "SASL_SSL/" + string(sc.Net.SASL.Mechanism)
	case sc.Net.TLS.Enable:
		return "SSL"
	case sc.Net.SASL.Enable:
		return "SASL_PLAINTEXT/" + string(sc.Net.SASL.Mechanism)
	default:
		return "PLAINTEXT"
	}
}

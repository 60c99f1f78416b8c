package kafka

import (
	"context"
	"io"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/config"
)

// Start connects to the brokers (waiting for them) and provisions the topics
// when configured to. The caller closes the client.
func Start(ctx context.Context, c config.Kafka, sc *sarama.Config, log zerolog.Logger) (sarama.Client, error) {
	client, err := Connect(ctx, c.Brokers, sc, log)
	if err != nil {
		return nil, err
	}
	if c.ProvisionTopics {
		if _, err := Provision(client, serviceTopics(c), log); err != nil {
			client.Close()
			return nil, err
		}
	}
	log.Info().Strs("brokers", c.Brokers).Str("kafka_version", sc.Version.String()).Str("security_protocol", protocolOf(sc)).Msg("connected to kafka")
	return client, nil
}

// Close closes c, logging rather than returning a failure: it is called on
// the way out, when nothing else can be done about it.
func Close(c io.Closer, what string, log zerolog.Logger) {
	if err := c.Close(); err != nil {
		log.Error().Err(err).Str("closing", what).Msg("close failed")
	}
}

package kafka

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
)

// RecordLimit returns topic's max.message.bytes: the largest record batch,
// in bytes, its partitions accept (the topic's own setting, else the
// broker's message.max.bytes, as DescribeConfigs reports it). It fails when
// the configuration cannot be read (e.g. no DescribeConfigs ACL).
func RecordLimit(admin sarama.ClusterAdmin, topic string) (int, error) {
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"max.message.bytes"}})
	if err != nil {
		return 0, fmt.Errorf("max.message.bytes of %s: %w", topic, err)
	}
	for _, e := range entries {
		if e.Name == "max.message.bytes" {
			n, err := strconv.Atoi(e.Value)
			if err != nil {
				return 0, fmt.Errorf("max.message.bytes of %s: %w", topic, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("max.message.bytes of %s: not in the brokers' answer", topic)
}

// SetRecordLimit sets topic's max.message.bytes to n bytes
// (IncrementalAlterConfigs, KIP-339; needs the AlterConfigs ACL).
func SetRecordLimit(admin sarama.ClusterAdmin, topic string, n int) error {
	v := strconv.Itoa(n)
	err := admin.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"max.message.bytes": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &v},
	}, false)
	if err != nil {
		return fmt.Errorf("setting max.message.bytes=%d on %s: %w", n, topic, err)
	}
	return nil
}

// TooLarge reports whether err says a record is larger than Kafka accepts:
// the broker's MESSAGE_TOO_LARGE (the topic's max.message.bytes), or the
// producer's own check against Producer.MaxMessageBytes. Sending the same
// record again cannot succeed.
func TooLarge(err error) bool {
	return errors.Is(err, sarama.ErrMessageSizeTooLarge) || RefusedByProducer(err)
}

// RefusedByProducer reports whether err is the producer's own refusal of a
// record larger than its Producer.MaxMessageBytes (sarama measures the
// record uncompressed, the broker the compressed batch): no topic setting
// cures it.
func RefusedByProducer(err error) bool {
	var ce sarama.ConfigurationError
	return errors.As(err, &ce) && strings.Contains(string(ce), "larger than configured Producer.MaxMessageBytes")
}

package kafka

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
)

// TopicConfig returns topic's configuration entries named names (all of
// them when none is named), by name, as the brokers report them
// (DescribeConfigs, KIP-133); it fails when they cannot be read (e.g. no
// DescribeConfigs ACL) or the brokers answer with an error for the topic.
func TopicConfig(admin sarama.ClusterAdmin, topic string, names ...string) (map[string]string, error) {
	results, err := admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: topic, ConfigNames: names}}, sarama.DescribeConfigsOptions{})
	if err != nil {
		return nil, fmt.Errorf("configuration of %s: %w", topic, err)
	}
	out := map[string]string{}
	for _, r := range results {
		if r.ErrorCode != sarama.ErrNoError {
			return nil, fmt.Errorf("configuration of %s: %w: %s", topic, r.ErrorCode, r.ErrorMsg)
		}
		for _, e := range r.Configs {
			out[e.Name] = e.Value
		}
	}
	return out, nil
}

// RecordLimit returns topic's max.message.bytes: the largest record batch,
// in bytes, its partitions accept (the topic's own setting, else the
// broker's message.max.bytes, as DescribeConfigs reports it). It fails when
// the configuration cannot be read (e.g. no DescribeConfigs ACL).
func RecordLimit(admin sarama.ClusterAdmin, topic string) (int, error) {
	cfg, err := TopicConfig(admin, topic, "max.message.bytes")
	if err != nil {
		return 0, err
	}
	v, ok := cfg["max.message.bytes"]
	if !ok {
		return 0, fmt.Errorf("max.message.bytes of %s: not in the brokers' answer", topic)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("max.message.bytes of %s: %w", topic, err)
	}
	return n, nil
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

package worker

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/kafka"
)

// provisionState makes sure the state topic exists (created with the events
// topic's partitions when provisioning) and is cleaned as the guard needs:
// compact,delete with a retention of at least the horizon. It returns the
// topic's partition count.
func provisionState(client sarama.Client, cfg config.Worker, log zerolog.Logger) (int32, error) {
	c, name, horizon := cfg.Kafka, cfg.StateTopic(), cfg.Fleet.StaleGuard.Horizon
	events, err := client.Partitions(c.Topic)
	if err != nil {
		return 0, fmt.Errorf("partitions of %s: %w", c.Topic, err)
	}
	if c.ProvisionTopics {
		if _, err := kafka.Provision(client, []kafka.TopicSpec{kafka.StateTopic(c, name, int32(len(events)), horizon)}, log); err != nil {
			return 0, err
		}
	}
	if err := client.RefreshMetadata(name); err != nil {
		return 0, fmt.Errorf("state topic %s (KAFKA_STATE_TOPIC): %w", name, err)
	}
	partitions, err := client.Partitions(name)
	if err != nil {
		return 0, fmt.Errorf("partitions of %s (KAFKA_STATE_TOPIC): %w", name, err)
	}
	if err := checkStateCleanup(client, name, horizon.Milliseconds(), c.ProvisionTopics, log); err != nil {
		return 0, err
	}
	return int32(len(partitions)), nil
}

// checkStateCleanup checks the state topic's cleanup.policy (compact,delete:
// one record a contact, forgotten after the horizon) and retention.ms (at
// least the horizon). When provisioning, it sets them; otherwise it logs
// what to set: a compact-only topic grows forever, a shorter retention
// forgets contacts before the horizon.
func checkStateCleanup(client sarama.Client, name string, horizonMs int64, provision bool, log zerolog.Logger) error {
	admin, err := sarama.NewClusterAdminFromClient(client) // closed with the client
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	cfg, err := kafka.TopicConfig(admin, name, "cleanup.policy", "retention.ms", "segment.ms")
	if err != nil {
		return err
	}
	var policy []string
	for _, p := range strings.Split(cfg["cleanup.policy"], ",") {
		policy = append(policy, strings.TrimSpace(p))
	}
	retention, segment := int64(-1), int64(-1)
	if v, err := strconv.ParseInt(cfg["retention.ms"], 10, 64); err == nil {
		retention = v
	}
	if v, err := strconv.ParseInt(cfg["segment.ms"], 10, 64); err == nil {
		segment = v
	}
	segmentMs := kafka.StateSegment.Milliseconds()
	cleanupOK := slices.Contains(policy, "compact") && slices.Contains(policy, "delete") && retention >= horizonMs
	if cleanupOK && segment > 0 && segment <= segmentMs {
		return nil
	}
	was := log.With().Str("topic", name).Strs("cleanup_policy", policy).Int64("retention_ms", retention).Int64("want_retention_ms", horizonMs).
		Int64("segment_ms", segment).Int64("want_segment_ms", segmentMs).Logger()
	if !provision {
		was.Error().Msg("the state topic should have cleanup.policy=compact,delete, retention.ms of at least WORKER_STALE_GUARD_HORIZON and segment.ms of at most an hour: set them (compact only, it grows forever; a shorter retention forgets contacts before the horizon; longer segments leave more records uncompacted for each rebuild)")
		return nil
	}
	set := sarama.IncrementalAlterConfigsOperationSet
	policyValue, retentionValue := kafka.CompactDelete, strconv.FormatInt(max(retention, horizonMs), 10)
	segmentValue := strconv.FormatInt(segmentMs, 10)
	err = admin.IncrementalAlterConfig(sarama.TopicResource, name, map[string]sarama.IncrementalAlterConfigsEntry{
		"cleanup.policy": {Operation: set, Value: &policyValue},
		"retention.ms":   {Operation: set, Value: &retentionValue},
		"segment.ms":     {Operation: set, Value: &segmentValue},
	}, false)
	switch {
	case err != nil && cleanupOK:
		// Only the segments are longer than wanted (a topic of an earlier
		// release): rebuilds read more, nothing is wrong. Said, not fatal.
		was.Warn().Err(err).Msg("setting the state topic's segment.ms to an hour failed: set it (rebuilds read what was written since a segment last rolled)")
		return nil
	case err != nil:
		return fmt.Errorf("setting cleanup.policy=%s, retention.ms=%s and segment.ms=%s on %s: %w", policyValue, retentionValue, segmentValue, name, err)
	}
	was.Warn().Str("set_cleanup_policy", policyValue).Str("set_retention_ms", retentionValue).Str("set_segment_ms", segmentValue).Msg("state topic's cleanup set as the guard needs")
	return nil
}

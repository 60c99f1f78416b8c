package worker

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
)

// provisionState makes sure the state topic exists (created with the events
// topic's partitions when provisioning) and is cleaned as the guard needs:
// compact,delete with a retention of at least the horizon. It returns the
// topic's partition count, and whether nothing was ever written to it.
func provisionState(client sarama.Client, cfg config.Worker, log zerolog.Logger) (int32, bool, error) {
	c, name, horizon := cfg.Kafka, cfg.StateTopic(), cfg.Fleet.StaleGuard.Horizon
	events, err := client.Partitions(c.Topic)
	if err != nil {
		return 0, false, fmt.Errorf("partitions of %s: %w", c.Topic, err)
	}
	if c.ProvisionTopics {
		if _, err := kafka.Provision(client, []kafka.TopicSpec{kafka.StateTopic(c, name, int32(len(events)), horizon)}, log); err != nil {
			return 0, false, err
		}
	}
	if err := client.RefreshMetadata(name); err != nil {
		return 0, false, fmt.Errorf("state topic %s (KAFKA_STATE_TOPIC): %w", name, err)
	}
	partitions, err := client.Partitions(name)
	if err != nil {
		return 0, false, fmt.Errorf("partitions of %s (KAFKA_STATE_TOPIC): %w", name, err)
	}
	if err := checkStateCleanup(client, name, horizon.Milliseconds(), c.ProvisionTopics, log); err != nil {
		return 0, false, err
	}
	// A topic just created may not have its leaders yet: ask again a while.
	fresh := true
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxElapsedTime = 100*time.Millisecond, 30*time.Second
	for _, p := range partitions {
		end, err := backoff.RetryWithData(func() (int64, error) {
			if err := client.RefreshMetadata(name); err != nil {
				return 0, err
			}
			return client.GetOffset(name, p, sarama.OffsetNewest)
		}, b)
		if err != nil {
			return 0, false, fmt.Errorf("end of %s/%d: %w", name, p, err)
		}
		fresh = fresh && end == 0
	}
	return int32(len(partitions)), fresh, nil
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
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: name})
	if err != nil {
		return fmt.Errorf("configuration of %s: %w", name, err)
	}
	var policy []string
	retention := int64(-1)
	for _, e := range entries {
		switch e.Name {
		case "cleanup.policy":
			for _, p := range strings.Split(e.Value, ",") {
				policy = append(policy, strings.TrimSpace(p))
			}
		case "retention.ms":
			if v, err := strconv.ParseInt(e.Value, 10, 64); err == nil {
				retention = v
			}
		}
	}
	if slices.Contains(policy, "compact") && slices.Contains(policy, "delete") && retention >= horizonMs {
		return nil
	}
	was := log.With().Str("topic", name).Strs("cleanup_policy", policy).Int64("retention_ms", retention).Int64("want_retention_ms", horizonMs).Logger()
	if !provision {
		was.Error().Msg("the state topic should have cleanup.policy=compact,delete and retention.ms of at least WORKER_STALE_GUARD_HORIZON: set them (compact only, it grows forever; a shorter retention forgets contacts before the horizon)")
		return nil
	}
	set := sarama.IncrementalAlterConfigsOperationSet
	policyValue, retentionValue := kafka.CompactDelete, strconv.FormatInt(max(retention, horizonMs), 10)
	err = admin.IncrementalAlterConfig(sarama.TopicResource, name, map[string]sarama.IncrementalAlterConfigsEntry{
		"cleanup.policy": {Operation: set, Value: &policyValue},
		"retention.ms":   {Operation: set, Value: &retentionValue},
	}, false)
	if err != nil {
		return fmt.Errorf("setting cleanup.policy=%s and retention.ms=%s on %s: %w", policyValue, retentionValue, name, err)
	}
	was.Warn().Str("set_cleanup_policy", policyValue).Str("set_retention_ms", retentionValue).Msg("state topic's cleanup set as the guard needs")
	return nil
}

// importParked moves the parked contacts of the former parked topic
// (KAFKA_PARKED_TOPIC, one topic every deployment on a cluster shared) into
// the new state topic: those whose head was dead-lettered by this group
// from this events topic (the head's DLQ copy says so), so another
// deployment's are left alone. It runs when the state topic was never
// written to.
func importParked(ctx context.Context, client sarama.Client, cfg config.Worker, t *stateTopic, log zerolog.Logger) error {
	legacy := cfg.Kafka.ParkedTopic
	if legacy == "" {
		return nil
	}
	if err := client.RefreshMetadata(legacy); err != nil {
		return nil // no former parked topic
	}
	parked, st, err := contactstate.ReadAll(ctx, client, legacy, t.Owner, contactstate.State.IsParked)
	if err != nil {
		return err
	}
	if len(parked) == 0 {
		return nil
	}
	// Which heads this deployment dead-lettered.
	heads := map[string]string{} // contact -> head event id
	for _, c := range parked {
		heads[c.ID] = c.Parked.Head.EventID
	}
	ours := map[string]bool{}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return err
	}
	defer consumer.Close()
	dlqPartitions, err := client.Partitions(cfg.Kafka.DLQTopic)
	if err != nil {
		return fmt.Errorf("partitions of %s: %w", cfg.Kafka.DLQTopic, err)
	}
	for _, p := range dlqPartitions {
		err := kafka.ReadRange(ctx, client, consumer, cfg.Kafka.DLQTopic, p, func(m *sarama.ConsumerMessage) {
			head, ok := heads[string(m.Key)]
			if !ok {
				return
			}
			id, _ := record.Identity(m)
			group, _ := record.Header(m.Headers, record.HeaderDLQConsumerGroup)
			topic, _ := record.Header(m.Headers, record.HeaderDLQOriginalTopic)
			if id == head && group == t.Owner.Group && topic == t.Owner.Topic {
				ours[string(m.Key)] = true
			}
		})
		if err != nil {
			return err
		}
	}
	var msgs []*sarama.ProducerMessage
	for _, c := range parked {
		if ours[c.ID] {
			msgs = append(msgs, contactstate.Message(t.Topic, contactstate.Partition([]byte(c.ID), t.Partitions), t.Owner, c.ID, c.State))
		}
	}
	if err := t.Producer.EnqueueAll(ctx, msgs); err != nil {
		return err
	}
	log.Warn().Str("from", legacy).Str("to", t.Topic).Int("moved", len(msgs)).Int("left", len(parked)-len(msgs)).Int("unreadable", st.Skipped).
		Msg("parked contacts moved from the former parked topic into the state topic (those whose head another deployment dead-lettered were left)")
	return nil
}

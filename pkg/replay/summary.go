package replay

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/acmecrm/integration-service/pkg/config"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/kafka"
)

// topErrors is how many distinct error messages a DLQ summary lists.
const topErrors = 10

// errorWidth is how much of an error message a summary groups by and shows.
const errorWidth = 160

// DLQSummary is what `contact-worker --dlq-summary` reports: the DLQ at a
// glance, read once from its oldest record to its end. It changes nothing.
type DLQSummary struct {
	Action string    `json:"action"` // dlq_summary
	At     time.Time `json:"at"`
	Topic  string    `json:"topic"`
	// Records are the records the DLQ retains.
	Records int `json:"records"`
	// ByKind, ByEventType count them by dlq_error_kind and event type.
	ByKind      map[string]int `json:"by_kind"`
	ByEventType map[string]int `json:"by_event_type"`
	// TopErrors are the most frequent dlq_error messages (their first 160
	// characters), most first.
	TopErrors []ErrorCount `json:"top_errors"`
	// OldestFailedAt and NewestFailedAt bound dlq_failed_at; nil when empty.
	OldestFailedAt *time.Time `json:"oldest_failed_at,omitempty"`
	NewestFailedAt *time.Time `json:"newest_failed_at,omitempty"`
	// ParkedContacts are parked now (the state topic); OldestParked is the
	// one parked the longest.
	ParkedContacts int         `json:"parked_contacts"`
	OldestParked   *parkedLine `json:"oldest_parked,omitempty"`
	// ReplayGroup is the routine replay's group; WouldReplay are the
	// records a routine --replay-dlq would replay now (from the group's
	// position, not held by the loop guard), HeldLoopGuard those it would
	// hold.
	ReplayGroup   string `json:"replay_group"`
	WouldReplay   int    `json:"would_replay"`
	HeldLoopGuard int    `json:"held_loop_guard"`
}

// ErrorCount is one error message and how many records carry it.
type ErrorCount struct {
	Error   string `json:"error"`
	Records int    `json:"records"`
}

// Summarize reads the DLQ, the routine replay group's position and the
// parked contacts, and writes a DLQSummary to out as JSON (one line) or as
// a table (cfg.Fleet.Output).
func Summarize(ctx context.Context, cfg config.Worker, log zerolog.Logger, out io.Writer) (DLQSummary, error) {
	sum := DLQSummary{Action: "dlq_summary", At: time.Now().UTC(), Topic: cfg.Kafka.DLQTopic, ReplayGroup: cfg.Fleet.Replay.GroupID,
		ByKind: map[string]int{}, ByEventType: map[string]int{}}
	client, err := connectReader(ctx, cfg, log)
	if err != nil {
		return sum, err
	}
	defer kafka.Close(client, "kafka client", log)
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return sum, err
	}
	defer kafka.Close(consumer, "consumer", log)
	admin, err := sarama.NewClusterAdminFromClient(client) // closed with the client
	if err != nil {
		return sum, err
	}
	dlq := cfg.Kafka.DLQTopic
	partitions, err := client.Partitions(dlq)
	if err != nil {
		return sum, fmt.Errorf("partitions of %s: %w", dlq, err)
	}
	positions, err := admin.ListConsumerGroupOffsets(sum.ReplayGroup, map[string][]int32{dlq: partitions})
	if err != nil {
		return sum, fmt.Errorf("position of group %s: %w", sum.ReplayGroup, err)
	}
	errs := map[string]int{}
	for _, p := range partitions {
		from := int64(-1) // the group's next offset; -1: none, the oldest
		if b := positions.GetBlock(dlq, p); b != nil && b.Err == sarama.ErrNoError {
			from = b.Offset
		}
		if _, err := kafka.ReadRange(ctx, client, consumer, dlq, p, func(m *sarama.ConsumerMessage) {
			e := entryOf(m)
			sum.Records++
			sum.ByKind[cmp.Or(e.ErrorKind, "unknown")]++
			sum.ByEventType[cmp.Or(e.EventType, "unknown")]++
			errs[firstRunes(e.Error, errorWidth)]++
			if !e.FailedAt.IsZero() {
				if sum.OldestFailedAt == nil || e.FailedAt.Before(*sum.OldestFailedAt) {
					sum.OldestFailedAt = &e.FailedAt
				}
				if sum.NewestFailedAt == nil || e.FailedAt.After(*sum.NewestFailedAt) {
					sum.NewestFailedAt = &e.FailedAt
				}
			}
			if m.Offset >= from {
				if e.ReplayCount >= cfg.Fleet.Replay.MaxCount {
					sum.HeldLoopGuard++
				} else {
					sum.WouldReplay++
				}
			}
		}); err != nil {
			return sum, err
		}
	}
	for _, e := range slices.SortedFunc(maps.Keys(errs), func(a, b string) int { return cmp.Or(cmp.Compare(errs[b], errs[a]), cmp.Compare(a, b)) }) {
		if len(sum.TopErrors) == topErrors {
			break
		}
		sum.TopErrors = append(sum.TopErrors, ErrorCount{Error: e, Records: errs[e]})
	}
	parked, st, err := contactstate.ReadAll(ctx, client, cfg.StateTopic(), contactstate.Owner{Topic: cfg.Kafka.Topic, Group: cfg.Fleet.GroupID}, contactstate.State.IsParked)
	for _, u := range st.Unreadable {
		log.Error().Err(u.Err).Int32("partition", u.Partition).Int64("offset", u.Offset).Str("contact_id", u.Key).Msg("unreadable state record skipped")
	}
	if err != nil {
		return sum, err
	}
	sum.ParkedContacts = len(parked)
	for _, c := range parked {
		if sum.OldestParked == nil || c.Parked.Since.Before(sum.OldestParked.Since) {
			sum.OldestParked = &parkedLine{Action: "parked", ContactID: c.ID, Head: c.Parked.Head.EventID, HeadKind: c.Parked.HeadKind, ParkedRecords: c.Parked.Records, Since: c.Parked.Since}
		}
	}
	if cfg.Fleet.Output == "json" {
		return sum, json.NewEncoder(out).Encode(sum)
	}
	return sum, sum.table(out)
}

// table writes the summary for a terminal.
func (s DLQSummary) table(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	ts := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), time.Since(*t).Round(time.Minute))
	}
	fmt.Fprintf(w, "DLQ\t%s\t%d records\n", s.Topic, s.Records)
	fmt.Fprintf(w, "oldest dead letter\t%s\n", ts(s.OldestFailedAt))
	fmt.Fprintf(w, "newest dead letter\t%s\n", ts(s.NewestFailedAt))
	fmt.Fprintf(w, "routine replay (%s)\twould replay %d, hold %d (loop guard)\n", s.ReplayGroup, s.WouldReplay, s.HeldLoopGuard)
	parked := fmt.Sprintf("%d", s.ParkedContacts)
	if c := s.OldestParked; c != nil {
		parked += fmt.Sprintf("; oldest %s behind %s (%s, %d parked), since %s", c.ContactID, c.Head, c.HeadKind, c.ParkedRecords, ts(&c.Since))
	}
	fmt.Fprintf(w, "parked contacts\t%s\n", parked)
	fmt.Fprintln(w, "\nkind\trecords")
	for _, k := range slices.Sorted(maps.Keys(s.ByKind)) {
		fmt.Fprintf(w, "%s\t%d\n", k, s.ByKind[k])
	}
	fmt.Fprintln(w, "\nevent type\trecords")
	for _, k := range slices.Sorted(maps.Keys(s.ByEventType)) {
		fmt.Fprintf(w, "%s\t%d\n", k, s.ByEventType[k])
	}
	fmt.Fprintln(w, "\nrecords\terror (most frequent first)")
	for _, e := range s.TopErrors {
		fmt.Fprintf(w, "%d\t%s\n", e.Records, strings.ReplaceAll(e.Error, "\n", " "))
	}
	return w.Flush()
}

// firstRunes is s cut to n runes at most.
func firstRunes(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}

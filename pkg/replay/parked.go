package replay

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/parking"
	"github.com/acmecrm/integration-service/pkg/record"
)

// parkedLine is one line of --replay-list-parked.
type parkedLine struct {
	Action       string    `json:"action"` // parked
	ContactID    string    `json:"contact_id"`
	Head         string    `json:"head"`
	HeadKind     string    `json:"head_kind"`
	ParkedEvents int       `json:"parked_events"` // behind the head
	Events       []string  `json:"events"`        // head first, in order
	Since        time.Time `json:"since"`
}

// contactLine is a line about a contact asked for: not_parked, or missing
// (parked events without a copy in the DLQ).
type contactLine struct {
	Action    string   `json:"action"`
	ContactID string   `json:"contact_id"`
	Missing   []string `json:"missing,omitempty"`
}

// listParked prints the parked contacts, one line each, sorted by contact.
func (rp *run) listParked(ctx context.Context, client sarama.Client, topic string) error {
	entries, err := parking.ReadAll(ctx, client, topic)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Parked() {
			continue // remembers discarded events only
		}
		rp.sum.ParkedContacts++
		if err := rp.enc.Encode(parkedLine{"parked", e.ContactID, e.Head(), e.HeadKind, len(e.Events) - 1, e.Events, e.Since}); err != nil {
			return err
		}
	}
	return nil
}

// release puts each chosen parked contact's events back on the events
// topic in their order, head first: the latest DLQ copy of each event the
// parked record lists (an event dead-lettered again has a newer copy). The
// worker applies them in that order and releases the contact after the
// last. With DiscardEventID, the head goes back marked never to apply. A
// contact one of whose events has no copy left in the DLQ (retention) is
// not touched: its events could not be applied in order. The routine
// replay position is neither read nor moved.
func (rp *run) release(ctx context.Context, client sarama.Client, consumer sarama.Consumer, parkedTopic, dlq string) error {
	entries, err := parking.ReadAll(ctx, client, parkedTopic)
	if err != nil {
		return err
	}
	parked := map[string]parking.Entry{}
	for _, e := range entries {
		if e.Parked() {
			parked[e.ContactID] = e
		}
	}
	want := map[string]parking.Entry{}
	for _, c := range rp.cfg.ContactIDs {
		e, ok := parked[c]
		if !ok {
			rp.sum.NotParked++
			if err := rp.enc.Encode(contactLine{Action: "not_parked", ContactID: c}); err != nil {
				return err
			}
			continue
		}
		if d := rp.cfg.DiscardEventID; d != "" && d != e.Head() {
			return fmt.Errorf("%s is not the head of contact %s (its head is %s): only the head can be discarded", d, c, e.Head())
		}
		want[c] = e
	}
	if len(want) == 0 {
		return nil
	}
	latest, err := latestCopies(ctx, client, consumer, dlq, want)
	if err != nil {
		return err
	}
	for _, c := range rp.cfg.ContactIDs {
		e, ok := want[c]
		if !ok {
			continue
		}
		var missing []string
		for _, id := range e.Events {
			if latest[c][id] == nil {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			rp.sum.Missing++
			rp.log.Error().Str("contact_id", c).Strs("missing", missing).Msg("parked events without a copy in the DLQ: contact left parked")
			if err := rp.enc.Encode(contactLine{Action: "missing", ContactID: c, Missing: missing}); err != nil {
				return err
			}
			continue
		}
		for _, id := range e.Events {
			if err := rp.putBack(ctx, latest[c][id], id == rp.cfg.DiscardEventID); err != nil {
				return err
			}
		}
		if rp.cfg.DryRun {
			rp.sum.WouldRelease++
		} else {
			rp.sum.Released++
		}
	}
	return nil
}

// putBack republishes one dead-lettered record (as a discard when told).
func (rp *run) putBack(ctx context.Context, m *sarama.ConsumerMessage, discard bool) error {
	e := entryOf(m)
	if !discard {
		rp.sum.Read++
		return rp.replay(ctx, m, e)
	}
	if rp.cfg.DryRun {
		rp.sum.WouldDiscard++
		return rp.enc.Encode(line{"would_discard", e})
	}
	rp.sum.Discarded++
	if err := rp.send(ctx, m, record.DiscardMessage(rp.topic, m)); err != nil {
		return fmt.Errorf("discarding %s: %w", e.EventID, err)
	}
	e.ReplayCount++ // it went back, as a discard, like a replayed record
	return rp.enc.Encode(line{"discarded", e})
}

// latestCopies reads the whole DLQ and returns, for each contact of want
// and each event it has parked, the newest dead-letter record of it.
func latestCopies(ctx context.Context, client sarama.Client, consumer sarama.Consumer, dlq string, want map[string]parking.Entry) (map[string]map[string]*sarama.ConsumerMessage, error) {
	out := map[string]map[string]*sarama.ConsumerMessage{}
	partitions, err := client.Partitions(dlq)
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", dlq, err)
	}
	for _, p := range partitions {
		err := readRange(ctx, client, consumer, dlq, p, func(m *sarama.ConsumerMessage) {
			e, ok := want[string(m.Key)]
			if !ok {
				return
			}
			id, _ := record.Identity(m)
			for _, parked := range e.Events {
				if parked == id {
					if out[e.ContactID] == nil {
						out[e.ContactID] = map[string]*sarama.ConsumerMessage{}
					}
					out[e.ContactID][id] = m // later offsets are newer copies
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readRange calls fn with every record of partition p from its oldest to
// its end as of the call.
func readRange(ctx context.Context, client sarama.Client, consumer sarama.Consumer, topic string, p int32, fn func(*sarama.ConsumerMessage)) error {
	oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return err
	}
	end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		return err
	}
	if oldest >= end {
		return nil
	}
	pc, err := consumer.ConsumePartition(topic, p, oldest)
	if err != nil {
		return fmt.Errorf("reading %s/%d: %w", topic, p, err)
	}
	defer pc.AsyncClose()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-pc.Errors():
			return fmt.Errorf("reading %s/%d: %w", topic, p, err)
		case <-time.After(endIdle):
			return nil // offsets without records up to the end
		case m := <-pc.Messages():
			if m.Offset >= end {
				return nil
			}
			fn(m)
			if m.Offset == end-1 {
				return nil
			}
		}
	}
}

// defaultActor names who runs a replay when --replay-actor is not given.
func defaultActor() string {
	host, _ := os.Hostname()
	user := os.Getenv("USER")
	if user == "" {
		user = "unknown"
	}
	return user + "@" + host
}

package replay

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/kafka"
	"github.com/acmecrm/integration-service/pkg/record"
)

// parkedLine is one line of --replay-list-parked.
type parkedLine struct {
	Action    string `json:"action"` // parked
	ContactID string `json:"contact_id"`
	Head      string `json:"head"`
	HeadKind  string `json:"head_kind"`
	// HeadTimestamp is the head event's AcmeCRM timestamp (absent when
	// the head could not be parsed).
	HeadTimestamp *time.Time `json:"head_timestamp,omitempty"`
	// ParkedRecords were parked behind the head (a parked event put back
	// and parked again counts again).
	ParkedRecords int       `json:"parked_records"`
	Since         time.Time `json:"since"`
}

// contactLine is a line about a contact asked for: not_parked, or missing
// (its head has no copy left in the DLQ).
type contactLine struct {
	Action    string `json:"action"`
	ContactID string `json:"contact_id"`
	Head      string `json:"head,omitempty"`
}

// listParked prints the parked contacts, one line each, sorted by contact.
func (rp *run) listParked(ctx context.Context, client sarama.Client, topic string, owner contactstate.Owner) error {
	parked, err := rp.parked(ctx, client, topic, owner)
	if err != nil {
		return err
	}
	for _, c := range parked {
		rp.sum.ParkedContacts++
		line := parkedLine{Action: "parked", ContactID: c.ID, Head: c.Parked.Head.EventID, HeadKind: c.Parked.HeadKind, ParkedRecords: c.Parked.Records, Since: c.Parked.Since}
		if at := c.Parked.Head.At; !at.IsZero() {
			line.HeadTimestamp = &at
		}
		if err := rp.enc.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

// parked reads the parked contacts of the state topic, logging the records
// it could not read.
func (rp *run) parked(ctx context.Context, client sarama.Client, topic string, owner contactstate.Owner) ([]contactstate.Contact, error) {
	parked, st, err := contactstate.ReadAll(ctx, client, topic, owner, contactstate.State.IsParked)
	for _, u := range st.Unreadable {
		rp.log.Error().Err(u.Err).Str("topic", topic).Int32("partition", u.Partition).Int64("offset", u.Offset).Str("contact_id", u.Key).Msg("unreadable state record skipped")
	}
	return parked, err
}

// release puts each chosen parked contact's events back on the events
// topic, head first: the latest DLQ copy of its head, then the latest copy
// of each event parked behind it, in the order they were first parked. The
// worker applies the head when it comes back, which releases the contact,
// then the others in turn (each one older than what the contact holds by
// then is stale). With DiscardEventID, the head goes back marked never to
// apply. A contact whose head has no copy left in the DLQ (retention) is
// not touched by a release (reported missing); a discard needs no copy and
// releases it all the same (the copies parked behind it that are left go
// back). The routine replay position is neither read nor moved.
func (rp *run) release(ctx context.Context, client sarama.Client, consumer sarama.Consumer, stateTopic string, owner contactstate.Owner, dlq string) error {
	all, err := rp.parked(ctx, client, stateTopic, owner)
	if err != nil {
		return err
	}
	parked := map[string]contactstate.State{}
	for _, c := range all {
		parked[c.ID] = c.State
	}
	want := map[string]contactstate.State{}
	for _, c := range rp.cfg.ContactIDs {
		s, ok := parked[c]
		if !ok {
			rp.sum.NotParked++
			if err := rp.enc.Encode(contactLine{Action: "not_parked", ContactID: c}); err != nil {
				return err
			}
			continue
		}
		if d := rp.cfg.DiscardEventID; d != "" && d != s.Parked.Head.EventID {
			return fmt.Errorf("%s is not the head of contact %s (its head is %s): only the head can be discarded", d, c, s.Parked.Head.EventID)
		}
		want[c] = s
	}
	if len(want) == 0 {
		return nil
	}
	copies, through, err := parkedCopies(ctx, client, consumer, dlq, want)
	if err != nil {
		return err
	}
	rp.through = through
	for _, c := range rp.cfg.ContactIDs {
		s, ok := want[c]
		if !ok {
			continue
		}
		cc := copies[c]
		if (cc == nil || cc.head == nil) && rp.cfg.DiscardEventID != "" {
			// The head's copy is gone (the DLQ's retention passed): a
			// discard needs none, only the head's id and contact.
			rp.log.Warn().Str("contact_id", c).Str("head", s.Parked.Head.EventID).Msg("the head has no copy left in the DLQ: discarding it by its id")
			cc = cmp.Or(cc, &contactCopies{})
			cc.head = expiredHead(c, s.Parked.Head.EventID)
		}
		if cc == nil || cc.head == nil {
			rp.sum.Missing++
			rp.log.Error().Str("contact_id", c).Str("head", s.Parked.Head.EventID).Msg("the head has no copy in the DLQ (its retention passed): contact left parked; discard it (--replay-discard-event-id) to release what is parked behind it")
			if err := rp.enc.Encode(contactLine{Action: "missing", ContactID: c, Head: s.Parked.Head.EventID}); err != nil {
				return err
			}
			continue
		}
		// Every record of the contact is made ready (a stub's value read
		// back, sizes checked) before any goes back: one that cannot go
		// back would otherwise be left behind a released contact.
		discard := rp.cfg.DiscardEventID != ""
		all := append([]*sarama.ConsumerMessage{cc.head}, cc.parked...)
		ready := make([]*sarama.ConsumerMessage, len(all))
		held := ""
		for i, m := range all {
			if i == 0 && discard {
				ready[i] = m // a discard carries no value
				continue
			}
			full, why, err := rp.prepare(ctx, m)
			if err != nil {
				return err
			}
			rp.sum.Read++
			if why != "" {
				if err := passNotBack(rp.notBack(why, entryOf(m))); err != nil {
					return err
				}
				if why == notBackValueGone && rp.cfg.AcceptLost {
					rp.sum.Lost++ // the SRE accepted it: put back without it
					rp.log.Warn().Str("contact_id", c).Str("event_id", entryOf(m).EventID).Msg("released without this record: its value is gone (--replay-accept-lost)")
					continue
				}
				held = cmp.Or(held, why)
				continue
			}
			ready[i] = full
		}
		if held != "" {
			rp.sum.Held++
			rp.log.Error().Str("contact_id", c).Str("head", s.Parked.Head.EventID).Str("reason", held).
				Msg("contact left parked: a record of it cannot be put back; nothing of it went back (too_large: raise the events topic's limit, or discard the head if it is the one; value_gone: --replay-accept-lost releases it without those, or discard the head if it is the one)")
			if err := rp.enc.Encode(contactLine{Action: "held_" + held, ContactID: c, Head: s.Parked.Head.EventID}); err != nil {
				return err
			}
			continue
		}
		if ready[0] == nil { // the head's value gone, accepted lost: the contact goes on without it
			ready[0], discard = expiredHead(c, s.Parked.Head.EventID), true
		}
		if err := rp.putBack(ctx, ready[0], all[0], discard); err != nil {
			if err := passNotBack(err); err != nil {
				return err
			}
			continue // refused after all: the contact stays parked, the rest in the DLQ
		}
		for i, m := range ready[1:] {
			if m == nil {
				continue // accepted lost
			}
			if err := passNotBack(rp.putBack(ctx, m, all[i+1], false)); err != nil {
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

// expiredHead stands for the DLQ copy of a contact's head (one retention
// deleted, or any, for a discard): its key and event id (ce_id), no value.
// Only a discard is built from it: the worker decides a discard by the
// head's id alone.
func expiredHead(contact, eventID string) *sarama.ConsumerMessage {
	return &sarama.ConsumerMessage{Key: []byte(contact), Headers: []*sarama.RecordHeader{{Key: []byte(record.HeaderID), Value: []byte(eventID)}}}
}

// putBack republishes m, the dead-lettered record dl made ready
// (rp.prepare), or discards dl when told.
func (rp *run) putBack(ctx context.Context, m, dl *sarama.ConsumerMessage, discard bool) error {
	e := entryOf(dl)
	if !discard {
		rp.sum.Read++
		return rp.putOne(ctx, m, e)
	}
	if rp.cfg.DryRun {
		rp.sum.WouldDiscard++
		return rp.enc.Encode(line{"would_discard", e})
	}
	rp.sum.Discarded++
	// Without its value (the worker decides a discard by the event's id):
	// a record near the events topic's limit can be discarded too.
	if err := rp.send(ctx, m, record.DiscardMessage(rp.topic, expiredHead(string(m.Key), e.EventID))); err != nil {
		return fmt.Errorf("discarding %s: %w", e.EventID, err)
	}
	e.ReplayCount++ // it went back, as a discard, like a replayed record
	return rp.enc.Encode(line{"discarded", e})
}

// contactCopies are the DLQ records a release of one contact puts back.
type contactCopies struct {
	// head is the latest copy of the head: its own dead letter, or its
	// latest parked copy when it has none.
	head, headParked *sarama.ConsumerMessage
	// parked is the latest copy of each event parked behind the head, in
	// the order they were first parked.
	parked []*sarama.ConsumerMessage
	seen   map[string]int // event id -> index in parked
}

// parkedCopies reads the whole DLQ and returns, for each contact of want,
// the copies of its head and of the events parked behind it, and how far
// it read (partition -> end offset): records parked after that are not
// among them, and the worker keeps their contact parked.
func parkedCopies(ctx context.Context, client sarama.Client, consumer sarama.Consumer, dlq string, want map[string]contactstate.State) (map[string]*contactCopies, map[int32]int64, error) {
	out := map[string]*contactCopies{}
	partitions, err := client.Partitions(dlq)
	if err != nil {
		return nil, nil, fmt.Errorf("partitions of %s: %w", dlq, err)
	}
	through := map[int32]int64{}
	for _, p := range partitions {
		end, err := kafka.ReadRange(ctx, client, consumer, dlq, p, func(m *sarama.ConsumerMessage) {
			s, ok := want[string(m.Key)]
			if !ok {
				return
			}
			id, _ := record.Identity(m)
			kind, _ := record.Header(m.Headers, record.HeaderDLQErrorKind)
			behind, _ := record.Header(m.Headers, record.HeaderDLQParkedBehind)
			head := s.Parked.Head.EventID
			c := out[string(m.Key)]
			if c == nil {
				c = &contactCopies{seen: map[string]int{}}
				out[string(m.Key)] = c
			}
			switch {
			case id == head && kind != string(record.KindParked):
				c.head = m // later offsets are newer copies
			case id == head:
				c.headParked = m // a head that was parked itself, once (a release under way when it was recorded)
			case id != head && kind == string(record.KindParked) && behind == head:
				if i, ok := c.seen[id]; ok {
					c.parked[i] = m
				} else {
					c.seen[id] = len(c.parked)
					c.parked = append(c.parked, m)
				}
			}
		})
		if err != nil {
			return nil, nil, err
		}
		through[p] = end
	}
	for _, c := range out {
		if c.head == nil {
			c.head = c.headParked
		}
	}
	return out, through, nil
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

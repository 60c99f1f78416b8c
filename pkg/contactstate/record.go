package contactstate

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	jsonv2 "github.com/go-json-experiment/json"
)

// Owner is who a state record belongs to: the events topic and the
// consumer group whose worker wrote it. Two deployments on one cluster
// never act on each other's records, even when pointed at one state topic.
type Owner struct {
	Topic string `json:"topic"`
	Group string `json:"group"`
}

// formatVersion is the version of the record's JSON written by Message.
// Records without a version are those of the former parked topic, read by
// Decode as well.
const formatVersion = 1

// currentPrefix starts every record Message writes.
var currentPrefix = []byte(`{"v":1,`)

// stored is a state record's value: JSON, so that kcat shows it as it is
// (encoding/json/v2, github.com/go-json-experiment/json: a third of v1's
// time to decode, which bounds a partition's rebuild).
type stored struct {
	V           int      `json:"v"`
	Topic       string   `json:"topic"`
	Group       string   `json:"group"`
	Newest      *Mark    `json:"newest,omitzero"`
	SameInstant []string `json:"same_instant,omitzero"`
	Deleted     bool     `json:"deleted,omitzero"`
	Parked      *Parked  `json:"parked,omitzero"`
	Discarded   []Mark   `json:"discarded,omitzero"`
}

// legacy is a record of the former parked topic (no "v"): the parked event
// ids in order, head first; released ids are not needed any more (the
// guard covers them).
type legacy struct {
	Events    []string  `json:"events"`
	HeadKind  string    `json:"head_kind"`
	Since     time.Time `json:"since"`
	Discarded []string  `json:"discarded"`
}

// Message returns the record of contact's state s for partition p of topic
// (Partition of the contact among the topic's partitions): its JSON, or a
// tombstone when s holds nothing.
func Message(topic string, p int32, owner Owner, contact string, s State) *sarama.ProducerMessage {
	m := &sarama.ProducerMessage{Topic: topic, Partition: p, Key: sarama.StringEncoder(contact)}
	if s.IsZero() {
		return m
	}
	v := stored{V: formatVersion, Topic: owner.Topic, Group: owner.Group, SameInstant: s.SameInstant, Deleted: s.Deleted, Discarded: s.Discarded}
	if !s.Newest.IsZero() {
		v.Newest = &s.Newest
	}
	if s.IsParked() {
		v.Parked = &s.Parked
	}
	b, _ := jsonv2.Marshal(v) // strings, times, ints: cannot fail
	m.Value = sarama.ByteEncoder(b)
	return m
}

// ErrForeign is returned by Decode for a record another deployment wrote
// (another events topic or consumer group).
var ErrForeign = errors.New("state record of another owner")

// Decode reads the value of contact's state record for owner; a tombstone
// (nil value) is the zero State. A record of another owner returns
// ErrForeign; one that cannot be read, an error saying why.
func Decode(value []byte, owner Owner) (State, error) {
	if value == nil {
		return State{}, nil
	}
	var version struct {
		V int `json:"v"`
	}
	if bytes.HasPrefix(value, currentPrefix) { // as Message writes it: one parse, not two
		version.V = formatVersion
	} else if err := jsonv2.Unmarshal(value, &version); err != nil {
		return State{}, fmt.Errorf("not a state record: %w", err)
	}
	switch version.V {
	case formatVersion:
	case 0:
		return decodeLegacy(value)
	default:
		return State{}, fmt.Errorf("state record format %d is not this worker's (%d)", version.V, formatVersion)
	}
	var v stored
	if err := jsonv2.Unmarshal(value, &v); err != nil {
		return State{}, fmt.Errorf("not a state record: %w", err)
	}
	if v.Topic != owner.Topic || v.Group != owner.Group {
		return State{}, fmt.Errorf("%w (topic %q, group %q)", ErrForeign, v.Topic, v.Group)
	}
	s := State{SameInstant: v.SameInstant, Deleted: v.Deleted, Discarded: v.Discarded}
	if v.Newest != nil {
		s.Newest = *v.Newest
	}
	if v.Parked != nil {
		if v.Parked.Head.EventID == "" {
			return State{}, errors.New("parked state without a head event id")
		}
		s.Parked = *v.Parked
	}
	return s, nil
}

// decodeLegacy reads a record of the former parked topic. Its discarded
// events have no timestamp (unknown): they are kept until MaxDiscarded
// newer ones push them out.
func decodeLegacy(value []byte) (State, error) {
	var l legacy
	if err := jsonv2.Unmarshal(value, &l); err != nil {
		return State{}, fmt.Errorf("not a parked record: %w", err)
	}
	var s State
	if len(l.Events) > 0 {
		if l.Events[0] == "" {
			return State{}, errors.New("parked record without a head event id")
		}
		s.Parked = Parked{Head: Mark{EventID: l.Events[0]}, HeadKind: l.HeadKind, Since: l.Since, Records: len(l.Events) - 1}
	}
	for _, id := range l.Discarded {
		s.Discarded = append(s.Discarded, Mark{EventID: id})
	}
	if len(s.Discarded) > MaxDiscarded {
		s.Discarded = s.Discarded[len(s.Discarded)-MaxDiscarded:]
	}
	return s, nil
}

// Package parking provides the parked contacts: contacts whose events wait
// behind one of theirs that was dead-lettered, so that a contact's events
// are applied in their order even through the dead-letter topic.
//
// The state lives in Kafka only, in a compacted topic co-partitioned with
// the events topic: the record of contact X is keyed by X and written to
// the partition number of X's events, so the member that holds an events
// partition rebuilds its parked contacts from the same partition of the
// parked topic before it applies anything. A released contact's record
// keeps the ids its releases applied, so that no later copy of them is
// applied again; a record left with nothing is a tombstone.
//
// It offers Store (which contacts are parked, per partition, and behind
// which head event), Entry and Decode, Read and ReadAll (a partition, or
// all, of the parked topic) and Message (its record of a contact).
package parking

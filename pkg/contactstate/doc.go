// Package contactstate provides what contact-worker knows of each contact
// beyond the event in hand, kept in Kafka so that it outlives restarts and
// rebalances:
//
//   - the newest AcmeCRM event applied to the contact (its event id and
//     timestamp, and whether it was a delete): the stale-event guard's
//     high-water mark, so that an older snapshot never overwrites a newer
//     one however late it arrives;
//   - whether the contact is parked behind a dead-lettered event (its head),
//     so that its later events wait in the dead-letter topic in order;
//   - the events an SRE discarded, while the high-water mark does not
//     cover them.
//
// The state lives in a topic of its own, compacted and deleted by age
// (cleanup.policy=compact,delete): one record per contact, keyed by contact
// id, rewritten whenever the contact's state changes; a contact not changed
// for longer than the topic's retention (the guard's horizon) is forgotten.
// A contact's record is in the partition its key hashes to among the state
// topic's partitions, the way sarama's hash partitioner places the
// contact's events (Partition), so whatever the events topic's partition
// count, the member holding an events partition knows which state
// partitions can hold its contacts (Sources). Each record names the events
// topic and consumer group it belongs to (Owner); records of another owner
// are ignored.
//
// It offers State, Message and Decode (a contact's record), Store (the
// states of the partitions a member holds, kept compact in memory), Read
// and ReadAll (rebuilding them from the topic).
package contactstate

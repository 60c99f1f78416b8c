package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/acmecrm"
	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/tests/standin"
)

// Growing contact-events while a contact is parked and the fleet is under
// load (the fleet lags behind: that is why partitions are added). Nothing
// stalls (a member that ran before the growth forwards to the new
// partitions too), each contact's applied events go forward in time and
// end with its last one (moved contacts' overtaken events are stale), the
// parked contact's new events stay parked behind its head (wherever its
// key now hashes to), and its release applies them in order.
func TestPartitionsAddedUnderLoadWhileParked(t *testing.T) {
	began := time.Now()
	const (
		before, after = int32(4), int32(8)
		contactsN     = 200                    // the steady load's contacts, "g-000" …
		rounds        = 40                     // one event of each contact per round
		interval      = 100 * time.Millisecond // between rounds (besides each round's send)
		growAt        = 10                     // the round published first on 8 partitions
		restartAt     = 14                     // the round after which one worker is restarted
	)
	// The parked contact: one whose key hashes to another partition once
	// the topic has grown, so that its new events land in a partition
	// nobody consumed while it was parked.
	var parked string
	for i := 0; parked == ""; i++ {
		if k := fmt.Sprintf("parked-%d", i); contactstate.Partition([]byte(k), before) != contactstate.Partition([]byte(k), after) {
			parked = k
		}
	}
	pRounds := map[int]string{1: "evt_pk_01", 4: "evt_pk_02", 7: "evt_pk_03", 12: "evt_pk_04", 18: "evt_pk_05", 30: "evt_pk_06"}
	var pIDs []string
	for r := 0; r < rounds; r++ {
		if id, ok := pRounds[r]; ok {
			pIDs = append(pIDs, id)
		}
	}
	moved := 0
	for c := 0; c < contactsN; c++ {
		k := []byte(fmt.Sprintf("g-%03d", c))
		if contactstate.Partition(k, before) != contactstate.Partition(k, after) {
			moved++
		}
	}
	t.Logf("parked contact %s (partition %d, then %d); %d of the %d load contacts change partition", parked,
		contactstate.Partition([]byte(parked), before), contactstate.Partition([]byte(parked), after), moved, contactsN)

	api, url := contactsAPI(t)
	// A Contacts API of 10 ms and 4 calls in flight per worker: at most 800
	// events/s for the fleet of two, less than the load publishes, so the
	// old partitions still hold a backlog when the fleet takes the new ones.
	api.SetLatency(10 * time.Millisecond)
	_ = api.Fail(standin.Failure{ContactID: parked, Status: 422}) // its first event dead-lettered: parked
	topics := topicEnv(t)
	topic, dlq, group := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"], topics["WORKER_GROUP_ID"]
	createTopic(t, topic, before)
	env := workerEnv(topics, url, map[string]string{"WORKER_MAX_IN_FLIGHT": "4"})
	a := startWorker(t, env)
	b := startWorker(t, env)
	eventually(t, 30*time.Second, "both members holding partitions", func() bool { return holdsPartitions(a) && holdsPartitions(b) })

	// The gateway's producer: sarama's hash partitioner (the default), its
	// client refreshed once the topic has grown, as the gateway's is within
	// its metadata refresh.
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_9_0_0
	sc.Producer.Return.Successes = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	client, err := sarama.NewClient(strings.Split(brokers, ","), sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	p, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	admin := newAdmin(t)

	// The load, in a goroutine of its own: round by round, each contact's
	// event later (by its AcmeCRM timestamp) than the one before; the
	// topic grown before round growAt.
	base := time.Date(2025, 5, 17, 17, 0, 0, 0, time.UTC)
	message := func(id, contact, name string, round int) (*sarama.ProducerMessage, error) {
		body := fmt.Sprintf(`{"event_type":"contact.updated","event_id":%q,"timestamp":%q,"data":{"contact_id":%q,"acme_first_name":%q}}`,
			id, base.Add(time.Duration(round)*time.Second).Format(time.RFC3339), contact, name)
		ev, err := acmecrm.Parse([]byte(body))
		if err != nil {
			return nil, err
		}
		return record.NewEventMessage(topic, ev, []byte(body), "msg_"+id, time.Now()), nil
	}
	published := make(chan int, rounds) // each round once it is acknowledged
	loadDone := make(chan error, 1)
	stopLoad, loadEnded := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(stopLoad); <-loadEnded }) // before the producer is closed
	go func() {
		defer close(loadEnded)
		loadDone <- func() error {
			defer close(published)
			for r := 0; r < rounds; r++ {
				select {
				case <-stopLoad:
					return errors.New("the test ended first")
				default:
				}
				if r == growAt {
					if err := admin.CreatePartitions(topic, after, nil, false); err != nil {
						return fmt.Errorf("growing %s to %d partitions: %w", topic, after, err)
					}
					deadline := time.Now().Add(10 * time.Second)
					for {
						if err := client.RefreshMetadata(topic); err == nil {
							if ps, err := client.Partitions(topic); err == nil && len(ps) == int(after) {
								break
							}
						}
						if time.Now().After(deadline) {
							return fmt.Errorf("the producer does not see %d partitions of %s", after, topic)
						}
						time.Sleep(100 * time.Millisecond)
					}
				}
				var msgs []*sarama.ProducerMessage
				for c := 0; c < contactsN; c++ {
					contact := fmt.Sprintf("g-%03d", c)
					m, err := message(fmt.Sprintf("evt_%s_%04d", contact, r), contact, fmt.Sprintf("v%04d", r), r)
					if err != nil {
						return err
					}
					msgs = append(msgs, m)
				}
				if id, ok := pRounds[r]; ok {
					m, err := message(id, parked, "p"+strings.TrimPrefix(id, "evt_pk_"), r)
					if err != nil {
						return err
					}
					msgs = append(msgs, m)
				}
				if err := p.SendMessages(msgs); err != nil {
					return fmt.Errorf("round %d: %w", r, err)
				}
				published <- r
				time.Sleep(interval)
			}
			return nil
		}()
	}()
	waitRound := func(want int) {
		t.Helper()
		for r := range published {
			if r >= want {
				return
			}
		}
		if err := <-loadDone; err != nil {
			t.Fatalf("publishing the load: %v", err)
		}
		t.Fatalf("the load ended before round %d", want)
	}

	waitRound(restartAt)
	t.Logf("%v: topic grown to %d partitions at round %d; restarting one worker after round %d", time.Since(began).Round(time.Millisecond), after, growAt, restartAt)
	// The members would notice the new partitions themselves only after
	// sarama's partition-count check: the group leader compares its
	// client's cached metadata every Metadata.RefreshFrequency, which the
	// worker sets to a minute (pkg/kafka: NewConsumerConfig), i.e. one to
	// two minutes after the growth. Within this test's time the operator
	// rolls the deployment instead: a member leaving and one joining each
	// make the leader rebalance, and it reads fresh metadata to assign.
	a.stop(t)
	a2 := startWorker(t, env)
	eventually(t, 45*time.Second, "the fleet holding all 8 partitions between its two members", func() bool {
		gs, err := admin.DescribeConsumerGroups([]string{group})
		if err != nil || len(gs) != 1 || gs[0].State != "Stable" || len(gs[0].Members) != 2 {
			return false
		}
		held := map[int32]bool{}
		for _, m := range gs[0].Members {
			as, err := m.GetMemberAssignment()
			if err != nil || as == nil || len(as.Topics[topic]) == 0 {
				return false
			}
			for _, part := range as.Topics[topic] {
				held[part] = true
			}
		}
		return len(held) == int(after)
	})
	t.Logf("%v: the fleet holds all %d partitions", time.Since(began).Round(time.Millisecond), after)
	for range published {
	}
	if err := <-loadDone; err != nil {
		t.Fatalf("publishing the load: %v", err)
	}
	loadEnd := time.Now()
	t.Logf("%v: the load published (%d events, and %d of %s)", loadEnd.Sub(began).Round(time.Millisecond), contactsN*rounds, len(pIDs), parked)

	// Nothing stalls: every partition, old and new, is processed to its end
	// and committed (forwarded records count in their new partition).
	toEnd := func(what string, within time.Duration) string {
		t.Helper()
		var last string
		deadline := time.Now().Add(within)
		for {
			ends, done, err := positions(client, admin, group, topic, after)
			if err == nil {
				last = fmt.Sprintf("ends %v, committed %v", ends, done)
				all := true
				for part, end := range ends {
					all = all && (done[part] == end || end == 0) // an empty partition has nothing to commit
				}
				if all {
					return last
				}
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				t.Fatalf("not within %v: %s (%s)%s", within, what, last, publishFailures(a, a2, b))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	pos := toEnd("every partition processed and committed to its end after the load", 45*time.Second)
	t.Logf("%v: every partition committed to its end (%s), %v after the load's end", time.Since(began).Round(time.Millisecond), pos, time.Since(loadEnd).Round(time.Millisecond))

	// What the fleet did with the records (a's counters went with it: its log).
	forwarded := strings.Count(a.logs.String(), "forwarded to the partition its key belongs to") + int(outcomes(t, b, "forwarded")+outcomes(t, a2, "forwarded"))
	stale := strings.Count(a.logs.String(), `"message":"stale: `) + int(outcomes(t, b, "stale")+outcomes(t, a2, "stale"))
	t.Logf("records forwarded to the partition their key belongs to: %d; events found stale: %d", forwarded, stale)

	// The load, by the stale-event guard's rule (SPEC: an event older than
	// the newest applied to its contact is not applied): a contact that
	// kept its partition has every event applied, in the order sent. One
	// that moved may have events still waiting in its old partition when
	// its newer ones are applied in the new one: those, forwarded, arrive
	// after them and are stale. Either way each contact's applied events go
	// forward in time, none twice, each event is applied or stale, and the
	// contact ends with its last event.
	got := applied(api)
	var notes []string
	lost := 0
	for c := 0; c < contactsN; c++ {
		contact := fmt.Sprintf("g-%03d", c)
		movedContact := contactstate.Partition([]byte(contact), before) != contactstate.Partition([]byte(contact), after)
		ids := got[contact]
		prev := ""
		for _, id := range ids {
			if id <= prev { // evt_<contact>_<round, 4 digits>: in time order
				t.Errorf("%s: applied %s after %s (older after newer, or twice): %v", contact, id, prev, ids)
				break
			}
			prev = id
		}
		if last := fmt.Sprintf("evt_%s_%04d", contact, rounds-1); prev != last || firstName(t, api, contact) != fmt.Sprintf("v%04d", rounds-1) {
			t.Errorf("%s: last applied %s holding %q, want its last event %s", contact, prev, firstName(t, api, contact), last)
		}
		if n := rounds - len(ids); n != 0 {
			lost += n
			if !movedContact {
				t.Errorf("%s kept its partition, yet %d of its events were not applied: %v", contact, n, ids)
			} else if len(notes) < 3 {
				notes = append(notes, fmt.Sprintf("%s: %d stale", contact, n))
			}
		}
	}
	// Each event not applied was found stale (a copy delivered again after
	// the restart is stale too: more stale than not applied is fine).
	staleIDs := map[string]bool{}
	for _, w := range []*binary{a, a2, b} {
		for _, l := range strings.Split(w.logs.String(), "\n") {
			if strings.Contains(l, `"message":"stale: `) {
				var v struct {
					EventID string `json:"event_id"`
				}
				if json.Unmarshal([]byte(l), &v) == nil {
					staleIDs[v.EventID] = true
				}
			}
		}
	}
	for c := 0; c < contactsN; c++ {
		contact := fmt.Sprintf("g-%03d", c)
		done := map[string]bool{}
		for _, id := range got[contact] {
			done[id] = true
		}
		for r := 0; r < rounds; r++ {
			if id := fmt.Sprintf("evt_%s_%04d", contact, r); !done[id] && !staleIDs[id] {
				t.Errorf("%s: %s neither applied nor found stale", contact, id)
			}
		}
	}
	if lost > stale {
		t.Errorf("%d events of the load not applied, but only %d found stale: every event is applied or stale", lost, stale)
	}
	if o := api.Overlaps(); len(o) != 0 {
		t.Errorf("%d calls started while another call of the same contact was in progress (first: %s)", len(o), o[0])
	}
	t.Logf("events of moved contacts overtaken in their new partition and found stale: %d (%s)", lost, strings.Join(notes, "; "))

	// The parked contact: its head dead-lettered (the 422), every later
	// event, before and after the growth, parked behind it in the order
	// sent, none applied. Nothing else dead-lettered.
	wantDLQ := []string{pIDs[0] + "/permanent/"}
	for _, id := range pIDs[1:] {
		wantDLQ = append(wantDLQ, id+"/parked/"+pIDs[0])
	}
	if got := dlqOf(t, dlq, parked); strings.Join(got, " ") != strings.Join(wantDLQ, " ") {
		t.Errorf("dead letters of %s:\n got %v\nwant %v", parked, got, wantDLQ)
	}
	dead := readAll(t, brokers, dlq)
	for _, m := range dead {
		if string(m.Key) != parked {
			t.Errorf("unexpected dead letter: %s (%s) %s", m.Key, headerMap(m)["ce_id"], headerMap(m)["dlq_error_kind"])
		}
	}
	var pCalls []string
	for _, c := range api.Calls() {
		if c.ContactID == parked {
			pCalls = append(pCalls, fmt.Sprintf("%s:%d", c.IdempotencyKey, c.Status))
		}
	}
	if want := pIDs[0] + ":422"; strings.Join(pCalls, ",") != want {
		t.Errorf("calls of %s while parked: %v, want only its head's, refused: %s", parked, pCalls, want)
	}
	if t.Failed() {
		t.FailNow() // releasing on top of this would only blur it
	}

	// The cause fixed, the contact released with the replay verb: its head,
	// then everything parked behind it, applied in order; it ends with its
	// last event.
	api.ClearFailures()
	releasedAt := time.Now()
	lines, sum := runReplay(t, parkingEnv(topics, t), "--replay-contact-id", parked)
	sorted := append([]string(nil), pIDs...)
	sort.Strings(sorted)
	if sum.Action != "release" || sum.Released != 1 || sum.Replayed != len(pIDs) || ids(lines, "replayed") != strings.Join(sorted, ",") {
		t.Errorf("release: %+v, summary %+v; want %d replayed, 1 released", lines, sum, len(pIDs))
	}
	eventually(t, 30*time.Second, parked+"'s events applied after the release", func() bool { return len(applied(api)[parked]) >= len(pIDs) })
	if got := strings.Join(applied(api)[parked], ","); got != strings.Join(pIDs, ",") {
		t.Errorf("%s applied %s, want %s in this order", parked, got, strings.Join(pIDs, ","))
	}
	if want := "p" + strings.TrimPrefix(pIDs[len(pIDs)-1], "evt_pk_"); firstName(t, api, parked) != want {
		t.Errorf("%s holds %q, want its last event's %q", parked, firstName(t, api, parked), want)
	}
	t.Logf("%v: %s released and applied, %v after the release started", time.Since(began).Round(time.Millisecond), parked, time.Since(releasedAt).Round(time.Millisecond))
	eventually(t, 15*time.Second, parked+" released in the state", func() bool {
		return metric(t, b, "worker_parked_contacts")+metric(t, a2, "worker_parked_contacts") == 0
	})
	// Everything, the put-back records included, committed to the end;
	// nothing more dead-lettered.
	toEnd("every partition committed to its end after the release", 30*time.Second)
	if n := len(readAll(t, brokers, dlq)); n != len(dead) {
		t.Errorf("%d dead letters after the release, want the %d before it", n, len(dead))
	}
	if got := applied(api); len(got[parked]) != len(pIDs) {
		t.Errorf("%s applied %v after everything settled, want %v once each", parked, got[parked], pIDs)
	}
	t.Logf("done in %v", time.Since(began).Round(time.Millisecond))
}

// positions returns the high-water mark and the group's committed offset
// of each of the topic's n partitions.
func positions(client sarama.Client, admin sarama.ClusterAdmin, group, topic string, n int32) (ends, done map[int32]int64, err error) {
	if err := client.RefreshMetadata(topic); err != nil {
		return nil, nil, err
	}
	ends, done = map[int32]int64{}, map[int32]int64{}
	var parts []int32
	for part := int32(0); part < n; part++ {
		hwm, err := client.GetOffset(topic, part, sarama.OffsetNewest)
		if err != nil {
			return nil, nil, fmt.Errorf("end of %s/%d: %w", topic, part, err)
		}
		ends[part] = hwm
		parts = append(parts, part)
	}
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
	if err != nil {
		return nil, nil, err
	}
	for _, part := range parts {
		if b := resp.GetBlock(topic, part); b != nil {
			done[part] = b.Offset
		}
	}
	return ends, done, nil
}

// publishFailures sums up the workers' failed publishes (forwards, dead
// letters), which hold their partitions back: the first one's error.
func publishFailures(workers ...*binary) string {
	n, first := 0, ""
	for _, w := range workers {
		for _, line := range strings.Split(w.logs.String(), "\n") {
			if strings.Contains(line, `"message":"publish failed, retrying"`) {
				if n++; first == "" {
					first = line
				}
			}
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; the workers logged %d failed publishes, the first: %s", n, first)
}

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/contactstate"
	"github.com/acmecrm/integration-service/pkg/worker"
	"github.com/acmecrm/integration-service/tests/standin"
)

// Records that break the events topic's record contract (SPEC: keyed by
// data.contact_id, a JSON event as the value), published straight to the
// topic as a broken producer would: each is dead-lettered as invalid, and
// none parks a contact: the later events of its key, and of the contact its
// body names, are applied in order, nothing is listed as parked, a release
// finds nothing to do, and the committed offsets pass them all.
func TestRecordContract(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	createTopic(t, topic, 4)
	// px is the control: a contact that does park (its head refused with
	// 422), so that "nothing parked" below is not an empty list by accident.
	_ = api.Fail(standin.Failure{ContactID: "px", Status: 422})
	wk := startWorker(t, workerEnv(topics, url, nil))
	p := newProducer(t)
	ts := func(minute int) string { return fmt.Sprintf("2025-05-17T17:%02d:00Z", minute) }
	send := func(m *sarama.ProducerMessage) {
		t.Helper()
		if _, _, err := p.SendMessage(m); err != nil {
			t.Fatal(err)
		}
	}

	// Before: one valid event of each contact, then the breaches.
	for _, c := range []string{"c-tomb", "c-junk", "c-a", "c-b", "c-nokey"} {
		publishAt(t, p, topic, "contact.updated", "evt_"+c+"_1", c, "v1", ts(1))
	}
	publishAt(t, p, topic, "contact.updated", "evt_px_1", "px", "v1", ts(1))
	send(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("c-tomb")}) // a tombstone: no value
	publishRaw(t, p, topic, "c-junk", "this is not JSON")
	// Keyed c-a, about c-b, and newer than anything either gets: applied,
	// it would change c-b and, as the newest of key c-a, make c-a's later
	// events stale.
	publishRaw(t, p, topic, "c-a", fmt.Sprintf(`{"event_type":"contact.updated","event_id":"evt_ab","timestamp":%q,"data":{"contact_id":"c-b","acme_first_name":"wrong"}}`, ts(30)))
	send(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder( // no key at all
		fmt.Sprintf(`{"event_type":"contact.updated","event_id":"evt_nokey","timestamp":%q,"data":{"contact_id":"c-nokey","acme_first_name":"wrong"}}`, ts(30)))})

	// breaches are the dead letters expected: by key, and what each
	// one's dlq_error must say.
	breaches := []struct{ key, says string }{
		{"c-tomb", "a tombstone (no value) is not an event"},
		{"c-junk", "no event id can be read"},
		{"c-a", `key "c-a" is not data.contact_id "c-b"`},
		{"", "no key"},
	}
	// Finished (applied, dead-lettered or parked) is committed: the
	// watermark is past them all, whatever became of them.
	admin, client := newAdmin(t), newClient(t, brokers)
	eventually(t, 30*time.Second, "the records before and the breaches committed", func() bool {
		return caughtUp(admin, client, topics["WORKER_GROUP_ID"], topic)
	})

	// After: two more valid events of each contact, px's parked behind its head.
	for _, c := range []string{"c-tomb", "c-junk", "c-a", "c-b", "c-nokey"} {
		publishAt(t, p, topic, "contact.updated", "evt_"+c+"_2", c, "v2", ts(2))
		publishAt(t, p, topic, "contact.updated", "evt_"+c+"_3", c, "v3", ts(3))
	}
	publishAt(t, p, topic, "contact.updated", "evt_px_2", "px", "v2", ts(2))
	eventually(t, 30*time.Second, "the later events committed", func() bool {
		return caughtUp(admin, client, topics["WORKER_GROUP_ID"], topic)
	})

	t.Run("dead-lettered as invalid", func(t *testing.T) {
		dl := readAll(t, brokers, dlq)
		byKey := map[string][]*sarama.ConsumerMessage{}
		for _, m := range dl {
			byKey[string(m.Key)] = append(byKey[string(m.Key)], m)
		}
		for _, b := range breaches {
			ms := byKey[b.key]
			if len(ms) != 1 {
				t.Errorf("key %q: %d dead letters, want 1", b.key, len(ms))
				continue
			}
			h := headerMap(ms[0])
			if h["dlq_error_kind"] != "invalid" || !strings.Contains(h["dlq_error"], "record contract") || !strings.Contains(h["dlq_error"], b.says) {
				t.Errorf("key %q: dlq_error_kind %q, dlq_error %q; want invalid, naming the breach (%q)", b.key, h["dlq_error_kind"], h["dlq_error"], b.says)
			}
			if h["dlq_original_topic"] != topic || h["dlq_attempts"] != "0" || h["dlq_parked_behind"] != "" {
				t.Errorf("key %q: headers %v", b.key, h)
			}
		}
		if m := byKey["c-tomb"]; len(m) == 1 && m[0].Value != nil {
			t.Errorf("c-tomb's dead letter has value %q, want the tombstone as it was", m[0].Value)
		}
		if m := byKey["c-junk"]; len(m) == 1 && string(m[0].Value) != "this is not JSON" {
			t.Errorf("c-junk's dead letter has value %q, want the original", m[0].Value)
		}
		// Nothing else: px's head and its one parked event.
		if len(dl) != 6 {
			t.Errorf("%d dead letters, want 6 (4 breaches, px's head and px's parked event)", len(dl))
		}
		want := "evt_px_1/permanent/ evt_px_2/parked/evt_px_1"
		if got := strings.Join(dlqOf(t, dlq, "px"), " "); got != want {
			t.Errorf("px's dead letters %s, want %s", got, want)
		}
		if got := metric(t, wk, `worker_dead_lettered_total{kind="invalid"}`); got != 4 {
			t.Errorf(`worker_dead_lettered_total{kind="invalid"} %v, want 4`, got)
		}
	})

	t.Run("later events applied in order", func(t *testing.T) {
		got := applied(api)
		for _, c := range []string{"c-tomb", "c-junk", "c-a", "c-b", "c-nokey"} {
			want := fmt.Sprintf("evt_%s_1,evt_%s_2,evt_%s_3", c, c, c)
			if strings.Join(got[c], ",") != want {
				t.Errorf("%s: applied %v, want %s", c, got[c], want)
			}
			if fn := firstName(t, api, c); fn != "v3" {
				t.Errorf("%s holds first_name %q, want v3", c, fn)
			}
		}
		if len(got["px"]) != 0 {
			t.Errorf("px applied %v while parked", got["px"])
		}
	})

	t.Run("nothing parked behind them", func(t *testing.T) {
		if got := metric(t, wk, "worker_parked_contacts"); got != 1 {
			t.Errorf("worker_parked_contacts %v, want 1 (px)", got)
		}
		lines, sum := runReplay(t, parkingEnv(topics, t), "--replay-list-parked")
		if len(lines) != 1 || lines[0].ContactID != "px" || lines[0].Head != "evt_px_1" || sum.ParkedContacts != 1 {
			t.Errorf("parked: %+v, summary %+v; want px alone", lines, sum)
		}
	})

	t.Run("a release finds nothing to do", func(t *testing.T) {
		before := highWaterMarks(t, topic)
		env := parkingEnv(topics, t)
		lines, sum := runReplay(t, env, "--replay-contact-id", "c-junk")
		if len(lines) != 1 || lines[0].Action != "not_parked" || lines[0].ContactID != "c-junk" ||
			sum.NotParked != 1 || sum.Released != 0 || sum.Discarded != 0 || sum.Replayed != 0 || sum.Missing != 0 {
			t.Errorf("release of c-junk: %+v, summary %+v; want not_parked, nothing released or discarded", lines, sum)
		}
		lines, sum = runReplay(t, env, "--replay-contact-id", "c-tomb,c-a,c-b,c-nokey")
		if len(lines) != 4 || sum.NotParked != 4 || sum.Released != 0 || sum.Discarded != 0 || sum.Replayed != 0 {
			t.Errorf("release of the others: %+v, summary %+v; want 4 not_parked", lines, sum)
		}
		if after := highWaterMarks(t, topic); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("events topic went from %v to %v records: the releases put something back", before, after)
		}
		// c-junk is still an ordinary contact: its next event is applied.
		publishAt(t, p, topic, "contact.updated", "evt_c-junk_4", "c-junk", "v4", ts(4))
		eventually(t, 30*time.Second, "c-junk's next event applied", func() bool { return firstName(t, api, "c-junk") == "v4" })
		if got := strings.Join(applied(api)["c-junk"], ","); got != "evt_c-junk_1,evt_c-junk_2,evt_c-junk_3,evt_c-junk_4" {
			t.Errorf("c-junk applied %s", got)
		}
	})

	t.Run("committed past them", func(t *testing.T) {
		wk.stop(t)
		hwm := highWaterMarks(t, topic)
		got := committed(t, topics["WORKER_GROUP_ID"], topic)
		for p, end := range hwm {
			if c, ok := got[p]; (ok || end > 0) && c != end {
				t.Errorf("partition %d: committed %v, want its end %d (committed %v, ends %v)", p, c, end, got, hwm)
			}
		}
	})
}

// caughtUp reports whether group's committed offset of every partition of
// topic that holds records is its end.
func caughtUp(admin sarama.ClusterAdmin, client sarama.Client, group, topic string) bool {
	partitions, err := client.Partitions(topic)
	if err != nil {
		return false
	}
	resp, err := admin.ListConsumerGroupOffsets(group, nil)
	if err != nil {
		return false
	}
	for _, p := range partitions {
		end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return false
		}
		if b := resp.GetBlock(topic, p); end > 0 && (b == nil || b.Offset != end) {
			return false
		}
	}
	return true
}

// highWaterMarks returns each partition's next offset of topic.
func highWaterMarks(t testing.TB, topic string) map[int32]int64 {
	t.Helper()
	client := newClient(t, brokers)
	partitions, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	for _, p := range partitions {
		if out[p], err = client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// unreadableLogged returns the positions ("partition/offset") of the
// unreadable state records of contact that a log reports skipped, from
// its JSON lines (the worker names the partition state_partition, the
// replay partition).
func unreadableLogged(logs, contact string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		var l struct {
			Message        string `json:"message"`
			Level          string `json:"level"`
			Error          string `json:"error"`
			ContactID      string `json:"contact_id"`
			Partition      *int32 `json:"partition"`
			StatePartition *int32 `json:"state_partition"`
			Offset         int64  `json:"offset"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || !strings.HasPrefix(l.Message, "unreadable state record skipped") ||
			l.ContactID != contact || l.Level != "error" || l.Error == "" {
			continue
		}
		p := l.Partition
		if l.StatePartition != nil {
			p = l.StatePartition
		}
		if p != nil {
			out = append(out, fmt.Sprintf("%d/%d", *p, l.Offset))
		}
	}
	return out
}

// replayLogs runs the replay like runReplay, and returns its log as well.
func replayLogs(t testing.TB, env map[string]string, args ...string) ([]replayLine, replayLine, string) {
	t.Helper()
	full := merge(map[string]string{"KAFKA_BROKERS": brokers}, env)
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := worker.Run(ctx, "test", append([]string{"--replay-dlq"}, args...), func(k string) string { return full[k] }, &stdout, &stderr); err != nil {
		t.Fatalf("replay %v: %v\nlogs:\n%s", args, err, stderr.String())
	}
	var lines []replayLine
	var sum replayLine
	for _, raw := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var l replayLine
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", raw, err)
		}
		if l.Summary {
			sum = l
		} else {
			lines = append(lines, l)
		}
	}
	return lines, sum, stderr.String()
}

// Unreadable records on the state topic (a hand edit, a rollback to a
// worker writing another format), in the partition the worker reads for
// their contact and stamped with its owner where they parse: the worker
// loads its partitions all the same, skips and counts them, logs where
// they are, and knows the contact by its records before them; the records
// after them are read; --replay-list-parked still lists the parked
// contacts, logging the unreadable records.
func TestStateUnreadableRecordSkipped(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	topic, dlq := topics["KAFKA_TOPIC"], topics["KAFKA_DLQ_TOPIC"]
	group, stateTopic := topics["WORKER_GROUP_ID"], stateTopicOf(topics)
	createTopic(t, topic, 4)
	env := workerEnv(topics, url, nil)
	p := newProducer(t)
	ts := func(minute, second int) string { return fmt.Sprintf("2025-05-17T17:%02d:%02dZ", minute, second) }
	const garbage = "c-garbage"
	others := []string{"c-o-0", "c-o-1", "c-o-2", "c-o-3", "c-o-4", "c-o-5"}
	publishOthers := func(round int) {
		t.Helper()
		for _, c := range others {
			publishAt(t, p, topic, "contact.updated", fmt.Sprintf("evt_%s_%d", c, round), c, fmt.Sprintf("v%d", round), ts(round, 0))
		}
	}
	othersApplied := func(n int) bool {
		got := applied(api)
		for _, c := range others {
			if len(got[c]) < n {
				return false
			}
		}
		return true
	}

	// 1. A first worker applies two events of c-garbage: its state record
	// (newest evt_g_2) is the last readable one before the garbage.
	wk := startWorker(t, env)
	publishAt(t, p, topic, "contact.updated", "evt_g_1", garbage, "g1", ts(1, 0))
	publishAt(t, p, topic, "contact.updated", "evt_g_2", garbage, "g2", ts(2, 0))
	publishOthers(1)
	admin, client := newAdmin(t), newClient(t, brokers)
	eventually(t, 30*time.Second, "c-garbage's and the others' events applied and committed", func() bool {
		return firstName(t, api, garbage) == "g2" && othersApplied(1) && caughtUp(admin, client, group, topic)
	})
	wk.stop(t) // writes its last states

	if err := client.RefreshMetadata(stateTopic); err != nil {
		t.Fatal(err)
	}
	statePartitions, err := client.Partitions(stateTopic)
	if err != nil {
		t.Fatal(err)
	}
	owner := contactstate.Owner{Topic: topic, Group: group}
	part := contactstate.Partition([]byte(garbage), int32(len(statePartitions)))
	var before contactstate.State
	for _, m := range readAll(t, brokers, stateTopic) {
		if string(m.Key) == garbage {
			if m.Partition != part {
				t.Fatalf("c-garbage's state record in partition %d, want %d (contactstate.Partition)", m.Partition, part)
			}
			if before, err = contactstate.Decode(m.Value, owner); err != nil {
				t.Fatal(err)
			}
		}
	}
	if before.Newest.EventID != "evt_g_2" {
		t.Fatalf("c-garbage's state before the garbage %+v, want newest evt_g_2", before)
	}

	// 2. Garbage in c-garbage's state partition, keyed c-garbage: not
	// JSON, not even text, a format from the future, and a record of this
	// owner's (else it would be foreign, not unreadable) parked behind no
	// event.
	manual := syncProducer(t, func(sc *sarama.Config) { sc.Producer.Partitioner = sarama.NewManualPartitioner })
	values := [][]byte{
		[]byte("not json"),
		{0x00, 0xff, 0x13, 0x37, 0xc3, 0x28, 0x8f, 0x01},
		fmt.Appendf(nil, `{"v":2,"topic":%q,"group":%q,"newest":{"event_id":"evt_g_9","at":"2025-05-17T18:00:00Z"}}`, topic, group),
		fmt.Appendf(nil, `{"v":1,"topic":%q,"group":%q,"parked":{"head":{"event_id":"","at":"0001-01-01T00:00:00Z"},"head_kind":"permanent","since":"2025-05-17T18:00:00Z","records":0}}`, topic, group),
	}
	var positions []string
	for _, v := range values {
		sp, off, err := manual.SendMessage(&sarama.ProducerMessage{Topic: stateTopic, Partition: part, Key: sarama.StringEncoder(garbage), Value: sarama.ByteEncoder(v)})
		if err != nil {
			t.Fatal(err)
		}
		positions = append(positions, fmt.Sprintf("%d/%d", sp, off))
	}
	for _, v := range values {
		if _, err := contactstate.Decode(v, owner); err == nil || errors.Is(err, contactstate.ErrForeign) {
			t.Fatalf("garbage %q decodes (%v): not unreadable", v, err)
		}
	}

	// A contact that parks, whose state record lands after the garbage,
	// in the same partition.
	px := ""
	for i := 0; px == ""; i++ {
		if c := fmt.Sprintf("px-%d", i); contactstate.Partition([]byte(c), int32(len(statePartitions))) == part {
			px = c
		}
	}
	_ = api.Fail(standin.Failure{ContactID: px, Status: 422})

	// 3. A worker started on that state: it loads, skips the garbage,
	// knows c-garbage by its record before it, and parks px.
	wk = startWorker(t, env)
	publishAt(t, p, topic, "contact.updated", "evt_g_0", garbage, "g0", ts(0, 0)) // older than evt_g_2: stale
	publishAt(t, p, topic, "contact.updated", "evt_g_3", garbage, "g3", ts(3, 0))
	publishAt(t, p, topic, "contact.updated", "evt_px_1", px, "p1", ts(1, 0))
	publishAt(t, p, topic, "contact.updated", "evt_px_2", px, "p2", ts(2, 0))
	publishOthers(2)
	eventually(t, 30*time.Second, "events applied after the garbage was loaded", func() bool {
		return firstName(t, api, garbage) == "g3" && othersApplied(2) && len(dlqOf(t, dlq, px)) >= 2
	})
	t.Run("loaded past the garbage", func(t *testing.T) {
		if got := strings.Join(applied(api)[garbage], ","); got != "evt_g_1,evt_g_2,evt_g_3" {
			t.Errorf("c-garbage applied %s, want evt_g_1,evt_g_2,evt_g_3 (evt_g_0 older than evt_g_2, known from the record before the garbage)", got)
		}
		if got := outcomes(t, wk, "stale"); got != 1 {
			t.Errorf("%v stale, want 1 (evt_g_0)", got)
		}
		if got := metric(t, wk, `worker_state_records_skipped_total{reason="unreadable"}`); got != float64(len(values)) {
			t.Errorf(`worker_state_records_skipped_total{reason="unreadable"} %v, want %d`, got, len(values))
		}
		if got := metric(t, wk, `worker_state_records_skipped_total{reason="foreign"}`); got != 0 {
			t.Errorf(`worker_state_records_skipped_total{reason="foreign"} %v, want 0`, got)
		}
		if got := strings.Join(unreadableLogged(wk.logs.String(), garbage), " "); got != strings.Join(positions, " ") {
			t.Errorf("unreadable records logged at %q, want each of %q", got, strings.Join(positions, " "))
		}
		if got := strings.Join(dlqOf(t, dlq, px), " "); got != "evt_px_1/permanent/ evt_px_2/parked/evt_px_1" {
			t.Errorf("%s's dead letters %s, want its head and one parked", px, got)
		}
		if got := metric(t, wk, "worker_parked_contacts"); got != 1 {
			t.Errorf("worker_parked_contacts %v, want 1", got)
		}
	})

	t.Run("list parked", func(t *testing.T) {
		var lines []replayLine
		var sum replayLine
		var logs string
		eventually(t, 10*time.Second, px+" parked in the state topic", func() bool {
			lines, sum, logs = replayLogs(t, parkingEnv(topics, t), "--replay-list-parked")
			return len(lines) > 0
		})
		if len(lines) != 1 || lines[0].ContactID != px || lines[0].Head != "evt_px_1" || lines[0].ParkedRecords != 1 || sum.ParkedContacts != 1 {
			t.Errorf("parked: %+v, summary %+v; want %s behind evt_px_1", lines, sum, px)
		}
		if got := strings.Join(unreadableLogged(logs, garbage), " "); got != strings.Join(positions, " ") {
			t.Errorf("the replay logged unreadable records at %q, want each of %q; logs:\n%s", got, strings.Join(positions, " "), logs)
		}
	})

	// 4. Restarted once more: the worker reads the records after the
	// garbage (c-garbage's newest evt_g_3, px parked) as well.
	eventually(t, 30*time.Second, "everything committed", func() bool { return caughtUp(admin, client, group, topic) })
	wk.stop(t)
	wk = startWorker(t, env)
	publishAt(t, p, topic, "contact.updated", "evt_g_2b", garbage, "g2b", ts(2, 30)) // after evt_g_2, before evt_g_3: stale
	publishAt(t, p, topic, "contact.updated", "evt_g_4", garbage, "g4", ts(4, 0))
	publishAt(t, p, topic, "contact.updated", "evt_px_3", px, "p3", ts(3, 0))
	publishOthers(3)
	eventually(t, 30*time.Second, "events applied after the restart", func() bool {
		return firstName(t, api, garbage) == "g4" && othersApplied(3) && len(dlqOf(t, dlq, px)) >= 3
	})
	t.Run("records after the garbage read", func(t *testing.T) {
		if got := strings.Join(applied(api)[garbage], ","); got != "evt_g_1,evt_g_2,evt_g_3,evt_g_4" {
			t.Errorf("c-garbage applied %s, want evt_g_1,evt_g_2,evt_g_3,evt_g_4 (evt_g_2b older than evt_g_3)", got)
		}
		if got := dlqOf(t, dlq, px)[2]; got != "evt_px_3/parked/evt_px_1" {
			t.Errorf("%s's new event went to the DLQ as %s, want parked behind evt_px_1", px, got)
		}
		if len(applied(api)[px]) != 0 {
			t.Errorf("%s applied %v while parked", px, applied(api)[px])
		}
		if got := metric(t, wk, `worker_state_records_skipped_total{reason="unreadable"}`); got != float64(len(values)) {
			t.Errorf(`worker_state_records_skipped_total{reason="unreadable"} %v, want %d`, got, len(values))
		}
		if got := metric(t, wk, "worker_parked_contacts"); got != 1 {
			t.Errorf("worker_parked_contacts %v, want 1", got)
		}
		for _, c := range others {
			if got := strings.Join(applied(api)[c], ","); got != fmt.Sprintf("evt_%s_1,evt_%s_2,evt_%s_3", c, c, c) {
				t.Errorf("%s applied %s", c, got)
			}
		}
	})
}

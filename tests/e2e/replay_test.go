package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/record"
	"github.com/acmecrm/integration-service/pkg/worker"
	"github.com/acmecrm/integration-service/tests/standin"
)

// dead is one dead letter to seed the DLQ with.
type dead struct {
	id, typ, contact string
	kind             record.Kind
	failedAt         time.Time
	replayCount      int
}

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// mixed are dead letters of several kinds, types and times.
var mixed = []dead{
	{"evt_a", "contact.created", "c-a", record.KindTransient, t0, 0},
	{"evt_b", "contact.updated", "c-b", record.KindPermanent, t0.Add(1 * time.Hour), 0},
	{"evt_c", "contact.deleted", "c-c", record.KindTransient, t0.Add(2 * time.Hour), 0},
	{"evt_d", "contact.updated", "c-d", record.KindInvalid, t0.Add(3 * time.Hour), 0},
	{"evt_e", "contact.created", "c-e", record.KindPermanent, t0.Add(4 * time.Hour), 1},
	{"evt_f", "contact.updated", "c-a", record.KindTransient, t0.Add(5 * time.Hour), 0},
}

func body(d dead) string {
	return fmt.Sprintf(`{"event_type":%q,"event_id":%q,"timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":%q,"acme_first_name":"R"}}`, d.typ, d.id, d.contact)
}

// seedDLQ writes dead letters as the worker writes them (record.DeadLetterMessage).
func seedDLQ(t testing.TB, p sarama.SyncProducer, dlq string, ds ...dead) {
	t.Helper()
	for i, d := range ds {
		orig := &sarama.ConsumerMessage{Topic: "contact-events", Partition: 0, Offset: int64(i), Key: []byte(d.contact), Value: []byte(body(d)),
			Headers: []*sarama.RecordHeader{
				{Key: []byte("ce_specversion"), Value: []byte("1.0")}, {Key: []byte("ce_id"), Value: []byte(d.id)},
				{Key: []byte("ce_source"), Value: []byte("acmecrm")}, {Key: []byte("ce_type"), Value: []byte(d.typ)},
				{Key: []byte("ce_time"), Value: []byte("2025-05-17T17:06:39Z")}, {Key: []byte("content-type"), Value: []byte("application/json")},
				{Key: []byte("webhook_id"), Value: []byte("msg_" + d.id)},
			}}
		if d.replayCount > 0 {
			orig.Headers = append(orig.Headers, &sarama.RecordHeader{Key: []byte("dlq_replay_count"), Value: []byte(fmt.Sprint(d.replayCount))})
		}
		m := record.DeadLetterMessage(dlq, orig, record.Failure{Err: errors.New("failed: " + d.id), Kind: d.kind, Attempts: 1, FailedAt: d.failedAt, Group: "contact-worker"})
		if _, _, err := p.SendMessage(m); err != nil {
			t.Fatal(err)
		}
	}
}

type replayLine struct {
	Action      string    `json:"action"`
	Summary     bool      `json:"summary"`
	Key         string    `json:"key"`
	EventID     string    `json:"event_id"`
	EventType   string    `json:"event_type"`
	ErrorKind   string    `json:"error_kind"`
	Error       string    `json:"error"`
	FailedAt    time.Time `json:"failed_at"`
	ReplayCount int       `json:"replay_count"`
	Read        int       `json:"read"`
	Replayed    int       `json:"replayed"`
	WouldReplay int       `json:"would_replay"`
	Skipped     int       `json:"skipped_filter"`
	Held        int       `json:"held_loop_guard"`
	Limit       bool      `json:"limit_reached"`
	// release and list_parked
	Released       int    `json:"released_contacts"`
	Discarded      int    `json:"discarded"`
	NotParked      int    `json:"not_parked"`
	Missing        int    `json:"missing"`
	TooLarge       int    `json:"too_large"`
	ValueGone      int    `json:"value_gone"`
	HeldContacts   int    `json:"held_contacts"`
	Lost           int    `json:"lost"`
	ParkedContacts int    `json:"parked_contacts"`
	Actor          string `json:"actor"`
	At             string `json:"at"`
	ContactID      string `json:"contact_id"`
	Head           string `json:"head"`
	HeadKind       string `json:"head_kind"`
	ParkedRecords  int    `json:"parked_records"`
}

// runReplay runs the worker binary's Run with args, as an SRE would, and
// returns the record lines and the summary it printed.
func runReplay(t testing.TB, env map[string]string, args ...string) ([]replayLine, replayLine) {
	t.Helper()
	stdout, err := runReplayErr(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	var lines []replayLine
	var sum replayLine
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var l replayLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", sc.Text(), err)
		}
		if l.Summary {
			sum = l
		} else {
			lines = append(lines, l)
		}
	}
	if !sum.Summary {
		t.Fatalf("no summary line in %q", stdout)
	}
	return lines, sum
}

// runReplayErr runs the replay and returns its standard output, or its error.
func runReplayErr(t testing.TB, env map[string]string, args ...string) (string, error) {
	t.Helper()
	full := merge(map[string]string{"KAFKA_BROKERS": brokers}, env)
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := worker.Run(ctx, "test", append([]string{"--replay-dlq"}, args...), func(k string) string { return full[k] }, &stdout, &stderr)
	if err != nil {
		return "", fmt.Errorf("replay %v: %w\nlogs:\n%s", args, err, stderr.String())
	}
	return stdout.String(), nil
}

func ids(lines []replayLine, action string) string {
	var out []string
	for _, l := range lines {
		if l.Action == action {
			out = append(out, l.EventID)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func eventIDsOn(t testing.TB, topic string) string {
	var out []string
	for _, m := range readAll(t, brokers, topic) {
		out = append(out, headerMap(m)["ce_id"])
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func replayEnv(t testing.TB, dlq string) map[string]string {
	return map[string]string{"KAFKA_TOPIC": uniqueName(t, "events"), "KAFKA_DLQ_TOPIC": dlq, "WORKER_REPLAY_GROUP_ID": uniqueName(t, "replay")}
}

// The dry run prints exactly the expected lines and moves nothing; the real
// run that follows still sees everything.
func TestReplayDryRunMovesNothing(t *testing.T) {
	dlq := uniqueName(t, "dlq")
	createTopic(t, dlq, 1)
	seedDLQ(t, newProducer(t), dlq, mixed...)
	env := replayEnv(t, dlq)
	createTopic(t, env["KAFKA_TOPIC"], 3)

	lines, sum := runReplay(t, env, "--replay-dry-run")
	if len(lines) != len(mixed) || sum.WouldReplay != len(mixed) || sum.Replayed != 0 || sum.Read != len(mixed) || sum.Skipped != 0 || sum.Held != 0 {
		t.Fatalf("dry run: %d lines, summary %+v; want %d would_replay", len(lines), sum, len(mixed))
	}
	for i, l := range lines {
		d := mixed[i]
		want := replayLine{Action: "would_replay", Key: d.contact, EventID: d.id, EventType: d.typ, ErrorKind: string(d.kind), Error: "failed: " + d.id, FailedAt: d.failedAt, ReplayCount: d.replayCount}
		if !reflect.DeepEqual(l, want) {
			t.Errorf("line %d: got %+v, want %+v", i, l, want)
		}
	}
	if got := eventIDsOn(t, env["KAFKA_TOPIC"]); got != "" {
		t.Fatalf("the dry run wrote to the events topic: %s", got)
	}
	_, sum = runReplay(t, env)
	if sum.Replayed != len(mixed) {
		t.Errorf("the real run after the dry run replayed %d, want all %d (the dry run committed something)", sum.Replayed, len(mixed))
	}
}

// Each filter replays exactly the matching records, in the right format.
func TestReplayFilters(t *testing.T) {
	dlq := uniqueName(t, "dlq")
	createTopic(t, dlq, 2)
	seedDLQ(t, newProducer(t), dlq, mixed...)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"everything", nil, "evt_a,evt_b,evt_c,evt_d,evt_e,evt_f"},
		{"event type", []string{"--replay-event-type", "contact.updated"}, "evt_b,evt_d,evt_f"},
		{"event types repeated", []string{"--replay-event-type", "contact.created", "--replay-event-type=contact.deleted"}, "evt_a,evt_c,evt_e"},
		{"event ids comma-separated", []string{"--replay-event-id", "evt_b,evt_e"}, "evt_b,evt_e"},
		{"error kind", []string{"--replay-error-kind", "transient"}, "evt_a,evt_c,evt_f"},
		{"since", []string{"--replay-since", t0.Add(3 * time.Hour).Format(time.RFC3339)}, "evt_d,evt_e,evt_f"},
		{"window", []string{"--replay-since", t0.Add(time.Hour).Format(time.RFC3339), "--replay-until", t0.Add(3 * time.Hour).Format(time.RFC3339)}, "evt_b,evt_c"},
		{"combined", []string{"--replay-error-kind", "transient", "--replay-event-type", "contact.updated"}, "evt_f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := replayEnv(t, dlq)
			createTopic(t, env["KAFKA_TOPIC"], 3)
			lines, sum := runReplay(t, env, tt.args...)
			if got := ids(lines, "replayed"); got != tt.want {
				t.Errorf("report: replayed %s, want %s", got, tt.want)
			}
			if got := eventIDsOn(t, env["KAFKA_TOPIC"]); got != tt.want {
				t.Errorf("events topic holds %s, want %s", got, tt.want)
			}
			if sum.Replayed+sum.Skipped != len(mixed) {
				t.Errorf("summary %+v does not add up to %d", sum, len(mixed))
			}
			byID := map[string]dead{}
			for _, d := range mixed {
				byID[d.id] = d
			}
			for _, m := range readAll(t, brokers, env["KAFKA_TOPIC"]) {
				h := headerMap(m)
				d := byID[h["ce_id"]]
				if string(m.Key) != d.contact || !bytes.Equal(m.Value, []byte(body(d))) {
					t.Errorf("%s: key %q value %s; want the original", d.id, m.Key, m.Value)
				}
				for k := range h {
					if strings.HasPrefix(k, "dlq_") && k != "dlq_replay_count" {
						t.Errorf("%s: replayed record keeps %s", d.id, k)
					}
				}
				if h["ce_type"] != d.typ || h["ce_specversion"] != "1.0" || h["ce_source"] != "acmecrm" || h["webhook_id"] != "msg_"+d.id {
					t.Errorf("%s: headers %v", d.id, h)
				}
				if h["dlq_replay_count"] != fmt.Sprint(d.replayCount+1) {
					t.Errorf("%s: dlq_replay_count %q, want %d", d.id, h["dlq_replay_count"], d.replayCount+1)
				}
			}
		})
	}
}

// A second run replays nothing; --replay-limit leaves the rest for the next
// run; a record replayed --replay-max-count times is held and reported.
func TestReplayRemembersPositionAndGuardsLoops(t *testing.T) {
	dlq := uniqueName(t, "dlq")
	createTopic(t, dlq, 1)
	p := newProducer(t)
	seedDLQ(t, p, dlq, mixed...)
	env := replayEnv(t, dlq)
	createTopic(t, env["KAFKA_TOPIC"], 3)

	_, sum := runReplay(t, env, "--replay-limit", "2")
	if sum.Replayed != 2 || !sum.Limit {
		t.Fatalf("limited run: %+v, want 2 replayed and the limit reached", sum)
	}
	lines, sum := runReplay(t, env)
	if got := ids(lines, "replayed"); got != "evt_c,evt_d,evt_e,evt_f" {
		t.Errorf("second run replayed %s, want the 4 the limit left", got)
	}
	_, sum = runReplay(t, env)
	if sum.Read != 0 || sum.Replayed != 0 {
		t.Errorf("third run: %+v, want nothing read or replayed", sum)
	}

	seedDLQ(t, p, dlq, dead{"evt_loop", "contact.updated", "c-loop", record.KindTransient, t0, 3}, dead{"evt_new", "contact.created", "c-new", record.KindTransient, t0, 2})
	lines, sum = runReplay(t, env, "--replay-max-count", "3")
	if ids(lines, "held") != "evt_loop" || ids(lines, "replayed") != "evt_new" || sum.Held != 1 || sum.Replayed != 1 {
		t.Errorf("guard: lines %+v summary %+v; want evt_loop held, evt_new replayed", lines, sum)
	}
	// From the beginning, the whole DLQ is read again; the guard still holds.
	_, sum = runReplay(t, env, "--replay-from-beginning", "--replay-dry-run")
	if sum.Read != len(mixed)+2 || sum.Held != 1 {
		t.Errorf("from the beginning: %+v, want %d read, 1 held", sum, len(mixed)+2)
	}
}

// The run stops at the DLQ's end as of its start, even while dead letters
// keep arriving.
func TestReplayStopsAtTheEndAsOfItsStart(t *testing.T) {
	dlq := uniqueName(t, "dlq")
	createTopic(t, dlq, 1)
	p := newProducer(t)
	const before = 20
	for i := 0; i < before; i++ {
		seedDLQ(t, p, dlq, dead{fmt.Sprintf("evt_%02d", i), "contact.updated", "c", record.KindTransient, t0, 0})
	}
	env := replayEnv(t, dlq)
	createTopic(t, env["KAFKA_TOPIC"], 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var added atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			seedDLQ(t, p, dlq, dead{fmt.Sprintf("evt_late_%03d", i), "contact.updated", "c", record.KindTransient, t0, 0})
			added.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	_, sum := runReplay(t, env, "--replay-rate", "40") // about a second of replaying while records arrive
	cancel()
	<-done
	if added.Load() < 10 {
		t.Fatalf("only %d records arrived during the run", added.Load())
	}
	if sum.Replayed < before || sum.Replayed >= before+int(added.Load()) {
		t.Errorf("replayed %d: want the %d there before the start and those that arrived before it, not the %d that kept arriving", sum.Replayed, before, added.Load())
	}
}

// End to end: the Contacts API rejects the events (a bug of its own, 422),
// they are dead-lettered; the fix deployed, a replay puts them through the
// worker again and every one is applied. (An API down for everyone is an
// outage, which dead-letters nothing: TestWorkerOutageDeadLettersNothing.)
func TestReplayEndToEndWithWorker(t *testing.T) {
	api, url := contactsAPI(t)
	topics := topicEnv(t)
	_ = api.Fail(standin.Failure{Status: 422})
	startWorker(t, workerEnv(topics, url, nil))
	p := newProducer(t)
	for i := 0; i < 10; i++ {
		publishEvent(t, p, topics["KAFKA_TOPIC"], "contact.created", fmt.Sprintf("evt_%d", i), fmt.Sprintf("c-%d", i), fmt.Sprintf("n%d", i))
	}
	eventually(t, 30*time.Second, "10 dead letters", func() bool { return len(readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"])) >= 10 })

	api.ClearFailures()
	_, sum := runReplay(t, merge(topics, map[string]string{"WORKER_REPLAY_GROUP_ID": uniqueName(t, "replay")}))
	if sum.Replayed != 10 {
		t.Fatalf("replayed %d, want 10", sum.Replayed)
	}
	eventually(t, 30*time.Second, "every replayed event applied", func() bool {
		for i := 0; i < 10; i++ {
			if firstName(t, api, fmt.Sprintf("c-%d", i)) != fmt.Sprintf("n%d", i) {
				return false
			}
		}
		return true
	})
	if n := len(readAll(t, brokers, topics["KAFKA_DLQ_TOPIC"])); n != 10 {
		t.Errorf("DLQ holds %d records after the replay, want the 10 original (nothing failed again)", n)
	}
}

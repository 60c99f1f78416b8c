package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"golang.org/x/time/rate"

	"github.com/acmecrm/integration-service/tests/standin"
)

// The soak (make soak, opt-in: SOAK=1): the built webhook-gateway and two
// contact-workers run as processes for SOAK_DURATION (30m) under a steady
// signed load (SOAK_RATE webhooks a second, 300) over a bounded universe of
// 2,000 contacts (so that memory must plateau), while, in every cycle,
// a few contacts are refused (422: dead-lettered, their later events
// parked) and then released with `contact-worker --replay-dlq
// --replay-contact-id`, a shard of the contacts fails 503 for a short
// spell, and the second worker leaves (SIGTERM) and joins again (two
// rebalances). Every SOAK_INTERVAL (1m) it samples each process's RSS, Go
// heap, goroutines, open files and metric series, and the state topic's
// size; it fails when one of the processes' measures keeps growing (the
// rule: soakRules), when the state topic grows faster than the events do
// (soakStateRule), or when the promises break: an accepted webhook not
// applied, a contact's events applied out of order, a dead letter that
// is not a refused contact's, a request hung, a process that crashed or
// did not stop cleanly. The report is bench/out/soak.md.

// soakConfig is the soak's shape, from the environment.
type soakConfig struct {
	duration, interval time.Duration
	cycle              time.Duration // one round of faults: refuse, spell, rebalance, release
	rate               float64       // webhooks per second
	contacts           int
}

func soakSettings(t *testing.T) soakConfig {
	c := soakConfig{duration: 30 * time.Minute, interval: time.Minute, rate: 300, contacts: 2000}
	for key, into := range map[string]*time.Duration{"SOAK_DURATION": &c.duration, "SOAK_INTERVAL": &c.interval} {
		if v := os.Getenv(key); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a positive Go duration, e.g. 30m", key, v)
			}
			*into = d
		}
	}
	if v := os.Getenv("SOAK_RATE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			t.Fatalf("SOAK_RATE=%q: want webhooks per second, e.g. 300", v)
		}
		c.rate = f
	}
	// Six cycles in a run (a 30 min run: one every 5 min), none shorter
	// than 40 s (a rebalance and a release must fit in one).
	c.cycle = min(max(c.duration/6, 40*time.Second), 5*time.Minute)
	if n := int(c.duration/c.interval) + 1; n < 8 {
		t.Fatalf("SOAK_DURATION %v / SOAK_INTERVAL %v gives %d samples; the growth rule needs at least 8", c.duration, c.interval, n)
	}
	return c
}

// soakContact is one contact of the load: its events are sent one after
// another, the next only after the one before was accepted (202).
type soakContact struct {
	id   string
	mu   sync.Mutex // held while one of its events is being sent
	held bool       // under mu: send nothing (its release is under way)
	last int        // under mu: the sequence number of its last accepted event
}

func soakEventID(contact string, seq int) string { return fmt.Sprintf("evt_%s_%06d", contact, seq) }

// soakLoad sends signed webhooks through the gateway at a steady rate.
type soakLoad struct {
	// One sender (its own connection pool) per loader, each sending one
	// request at a time: the gateway holds one connection per loader from
	// the first second on, not a shared pool growing to the load's peak
	// concurrency over the run (which its open files would show as slow
	// growth).
	senders  []*sender
	limiter  *rate.Limiter
	stop     atomic.Bool
	contacts []*soakContact

	mu      sync.Mutex
	ok      int // webhooks accepted (202): each event once
	u503    int // answered 503 (retried)
	refused int // no answer: connection failed (retried)
	hung    int // a request that took more than 25 s
	otherN  int
	other   []string // the first other answers
}

func (l *soakLoad) run(first, step int, wg *sync.WaitGroup) {
	defer wg.Done()
	s := l.senders[first]
	for i := first; !l.stop.Load(); i += step {
		c := l.contacts[i%len(l.contacts)]
		if err := l.limiter.Wait(context.Background()); err != nil {
			return
		}
		c.mu.Lock()
		if !c.held {
			l.sendNext(s, c)
		}
		c.mu.Unlock()
	}
}

// sendNext sends the contact's next event until it is accepted, as
// AcmeCRM would (the same event, the same snapshot, again). c.mu is held.
func (l *soakLoad) sendNext(s *sender, c *soakContact) {
	seq := c.last + 1
	id := soakEventID(c.id, seq)
	body := fmt.Sprintf(`{"event_type":"contact.updated","event_id":%q,"timestamp":%q,"data":{"contact_id":%q,"acme_first_name":"v%06d","acme_email":"%s@example.com"}}`,
		id, time.Now().UTC().Format(time.RFC3339), c.id, seq, c.id)
	for try := 0; ; try++ {
		start := time.Now()
		r, err := s.send(body, nil)
		took := time.Since(start)
		l.mu.Lock()
		if took > 25*time.Second {
			l.hung++
		}
		switch {
		case err != nil:
			l.refused++
		case r.status == http.StatusAccepted:
			l.ok++
		case r.status == http.StatusServiceUnavailable:
			l.u503++
		default:
			if l.otherN++; len(l.other) < 10 {
				l.other = append(l.other, fmt.Sprintf("%s: %d %v", id, r.status, r.body))
			}
		}
		l.mu.Unlock()
		if err == nil && r.status == http.StatusAccepted {
			c.last = seq
			return
		}
		if l.stop.Load() && try >= 50 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// accepted returns the webhooks accepted so far.
func (l *soakLoad) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok
}

// soakProc is a process the soak samples: its pid is known only while it
// is up (the sampler must not read proc's fields while it is restarted).
type soakProc struct {
	*proc
	label       string
	metricsAddr string
	notJudged   string // why the growth rule does not apply to it, if it does not

	mu       sync.Mutex
	pid      int           // 0 while stopped or starting
	exitedCh chan struct{} // closed when the current process has exited
	stopping bool          // it was told to stop
}

func (sp *soakProc) up(t testing.TB) time.Duration {
	start := time.Now()
	sp.start(t)
	sp.mu.Lock()
	sp.pid, sp.exitedCh, sp.stopping = sp.cmd.Process.Pid, sp.exited, false
	sp.mu.Unlock()
	return time.Since(start)
}

// term sends SIGTERM and waits (30 s at most) for a clean exit.
func (sp *soakProc) term() (time.Duration, error) {
	sp.mu.Lock()
	sp.pid, sp.stopping = 0, true
	sp.mu.Unlock()
	start := time.Now()
	sp.signal(syscall.SIGTERM)
	if !sp.stopped(30 * time.Second) {
		return time.Since(start), fmt.Errorf("%s did not exit within 30 s of SIGTERM", sp.label)
	}
	if code := sp.cmd.ProcessState.ExitCode(); code != 0 {
		return time.Since(start), fmt.Errorf("%s exited %d after SIGTERM, want 0", sp.label, code)
	}
	return time.Since(start), nil
}

// crashed reports whether the process exited without being told to.
func (sp *soakProc) crashed() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.stopping || sp.exitedCh == nil {
		return false
	}
	select {
	case <-sp.exitedCh:
		return true
	default:
		return false
	}
}

// procSample is one process's measures at one instant.
type procSample struct {
	state                                             string // "up", "stopped" (by the soak), "exited" (by itself), or what failed
	pid                                               int
	rss, heapInuse, heapGoal, goroutines, fds, series float64
}

var soakHTTP = &http.Client{Timeout: 10 * time.Second}

func (sp *soakProc) sample() procSample {
	sp.mu.Lock()
	pid, exited := sp.pid, sp.exitedCh
	sp.mu.Unlock()
	if pid == 0 {
		return procSample{state: "stopped"}
	}
	select {
	case <-exited:
		return procSample{state: "exited", pid: pid}
	default:
	}
	s := procSample{state: "up", pid: pid}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{state: "unreadable: " + err.Error(), pid: pid}
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			s.rss = kb * 1024
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return procSample{state: "unreadable: " + err.Error(), pid: pid}
	}
	s.fds = float64(len(fds))
	resp, err := soakHTTP.Get("http://" + sp.metricsAddr + "/metrics")
	if err != nil {
		return procSample{state: "no /metrics: " + err.Error(), pid: pid}
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s.series++
		name, value, _ := strings.Cut(line, " ")
		v, _ := strconv.ParseFloat(value, 64)
		switch name {
		case "go_memstats_heap_inuse_bytes":
			s.heapInuse = v
		case "go_memstats_next_gc_bytes":
			s.heapGoal = v
		case "go_goroutines":
			s.goroutines = v
		}
	}
	return s
}

// keepTail drops all but the last n bytes of the logs once they exceed 4n:
// the processes log every event at info, and the soak keeps only the tail
// for a failure report.
func (b *syncBuffer) keepTail(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() <= 4*n {
		return
	}
	tail := append([]byte(nil), b.buf.Bytes()[b.buf.Len()-n:]...)
	b.buf = *bytes.NewBuffer(tail)
}

// soakDLQ follows the dead-letter topic from its start.
type soakDLQ struct {
	mu    sync.Mutex
	ids   map[string]bool // event ids dead-lettered (any copy)
	kinds map[string]int  // dlq_error_kind -> records
	keys  map[string]int  // contact -> records
	n     int
}

func (d *soakDLQ) has(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ids[id]
}

func followDLQ(t testing.TB, topic string) *soakDLQ {
	t.Helper()
	d := &soakDLQ{ids: map[string]bool{}, kinds: map[string]int{}, keys: map[string]int{}}
	client := newClient(t, brokers)
	if err := client.RefreshMetadata(topic); err != nil {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	partitions, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	var pcs []sarama.PartitionConsumer
	for _, p := range partitions {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, pc)
		go func() {
			for range pc.Errors() {
			}
		}()
		go func() {
			for m := range pc.Messages() {
				h := headerMap(m)
				d.mu.Lock()
				d.ids[h["ce_id"]] = true
				d.kinds[h["dlq_error_kind"]]++
				d.keys[string(m.Key)]++
				d.n++
				d.mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() {
		for _, pc := range pcs {
			pc.AsyncClose()
		}
		consumer.Close()
	})
	return d
}

// topicSizes is what the topics hold at one instant: records (the sum over
// partitions of newest − oldest offset) and the state topic's bytes on disk.
type topicSizes struct {
	events, state, dlq int64
	stateBytes         int64 // -1: unknown
	err                string
}

type soakTopics struct {
	client             sarama.Client
	admin              sarama.ClusterAdmin
	events, state, dlq string
	brokerIDs          []int32
}

func (st *soakTopics) sizes() topicSizes {
	out := topicSizes{stateBytes: -1}
	count := func(topic string) int64 {
		partitions, err := st.client.Partitions(topic)
		if err != nil {
			out.err = err.Error()
			return -1
		}
		var n int64
		for _, p := range partitions {
			newest, err1 := st.client.GetOffset(topic, p, sarama.OffsetNewest)
			oldest, err2 := st.client.GetOffset(topic, p, sarama.OffsetOldest)
			if err1 != nil || err2 != nil {
				out.err = fmt.Sprint(err1, err2)
				return -1
			}
			n += newest - oldest
		}
		return n
	}
	out.events, out.state, out.dlq = count(st.events), count(st.state), count(st.dlq)
	if dirs, err := st.admin.DescribeLogDirs(st.brokerIDs); err == nil {
		out.stateBytes = 0
		for _, ds := range dirs {
			for _, d := range ds {
				for _, tp := range d.Topics {
					if tp.Topic == st.state {
						for _, p := range tp.Partitions {
							out.stateBytes += p.Size
						}
					}
				}
			}
		}
	} else if out.err == "" {
		out.err = "log dirs: " + err.Error()
	}
	return out
}

// soakRow is one sample: every process, the topics, the load.
type soakRow struct {
	at       time.Duration
	procs    []procSample
	topics   topicSizes
	accepted int // webhooks accepted so far
	calls    int // calls the Contacts API answered so far
}

// soakMeasure is one measure of a process the growth rule judges.
type soakMeasure struct {
	name  string
	unit  float64 // shown in this unit
	unitN string
	rel   float64 // growth allowed, relative to the baseline ...
	abs   float64 // ... or this much, whichever is larger (noise of small figures)
	value func(procSample) float64
}

// soakRules: after a warm-up (the first 20 % of the samples: start-up,
// every contact seen once, the first cycle of faults), the median of the
// last quarter of the samples may exceed the median of the quarter right
// after the warm-up by at most rel (or abs). A leak keeps growing, so the
// late median leaves the early one behind; a process that has plateaued
// stays within the noise. Medians, not single samples: heap in use swings
// with the GC cycle, goroutines and series with the partitions a worker
// holds between rebalances. The absolute slack covers what the load alone
// moves: a worker's goroutines and open files follow its pool of
// connections to the Contacts API (as many as calls were in flight at
// once, up to WORKER_MAX_IN_FLIGHT; idle ones closed after 90 s), a small
// heap's figures the GC's minimum heap (4 MiB).
var soakRules = []soakMeasure{
	{"RSS", 1 << 20, "MiB", 0.25, 8 << 20, func(s procSample) float64 { return s.rss }},
	{"Go heap in use", 1 << 20, "MiB", 0.25, 4 << 20, func(s procSample) float64 { return s.heapInuse }},
	{"Go heap goal (next GC)", 1 << 20, "MiB", 0.25, 4 << 20, func(s procSample) float64 { return s.heapGoal }},
	{"goroutines", 1, "", 0.10, 25, func(s procSample) float64 { return s.goroutines }},
	{"open files", 1, "", 0.10, 10, func(s procSample) float64 { return s.fds }},
	{"metric series", 1, "", 0.10, 10, func(s procSample) float64 { return s.series }},
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// soakWindows returns the sample indexes of the baseline (right after the
// warm-up) and of the last quarter.
func soakWindows(n int) (early, late [2]int) {
	warm := int(math.Ceil(0.2 * float64(n)))
	q := max(2, n/4)
	return [2]int{warm, min(n, warm+q)}, [2]int{max(warm+q, n-q), n}
}

// judgeGrowth applies a measure's rule to its values (NaN where the
// process was not up).
func judgeGrowth(vals []float64, m soakMeasure) (early, late, limit float64, ok bool, why string) {
	ew, lw := soakWindows(len(vals))
	pick := func(w [2]int) []float64 {
		var out []float64
		for _, v := range vals[w[0]:w[1]] {
			if !math.IsNaN(v) {
				out = append(out, v)
			}
		}
		return out
	}
	e, l := pick(ew), pick(lw)
	if len(e) == 0 || len(l) == 0 {
		return math.NaN(), math.NaN(), math.NaN(), true, "not judged: no sample while up in a window"
	}
	early, late = median(e), median(l)
	limit = early + max(m.rel*early, m.abs)
	if late > limit {
		return early, late, limit, false, fmt.Sprintf("grows: %.1f%% above the baseline", 100*(late-early)/early)
	}
	return early, late, limit, true, ""
}

// soakStateRule judges the state topic. It is compacted only when its
// segments roll (segment.ms an hour, segment.bytes 1 GiB), so within a
// soak its record count grows with the events applied: that is expected
// and reported, not failed. What would be a leak is more state records
// than events: the worker writes at most one record per contact changed
// (an event applied, parked, dead-lettered or released), batched once a
// second, so over the judged window (the warm-up's end to the last sample)
// the state topic may grow by at most 1.1 × what the events topic grew
// (10 % for the state writes lagging the events by a batch at either end
// of the window). A worker rewriting unchanged contacts, or one state
// record per retry, breaks it.
func soakStateRule(rows []soakRow) (dEvents, dState int64, ok bool, why string) {
	ew, _ := soakWindows(len(rows))
	first, last := rows[ew[0]].topics, rows[len(rows)-1].topics
	if first.events < 0 || last.events < 0 || first.state < 0 || last.state < 0 {
		return 0, 0, false, "not judged: a topic's size could not be read"
	}
	dEvents, dState = last.events-first.events, last.state-first.state
	if float64(dState) > 1.1*float64(dEvents) {
		return dEvents, dState, false, "the state topic grows faster than the events"
	}
	return dEvents, dState, true, ""
}

type soakReplaySummary struct {
	Summary        bool `json:"summary"`
	Replayed       int  `json:"replayed"`
	Released       int  `json:"released_contacts"`
	NotParked      int  `json:"not_parked"`
	ParkedContacts int  `json:"parked_contacts"`
}

// soakReplay runs the built contact-worker's replay verb, as an SRE would.
func soakReplay(t testing.TB, env map[string]string, args ...string) (soakReplaySummary, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, builtBinary(t, "contact-worker"), append([]string{"--replay-dlq"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return soakReplaySummary{}, fmt.Errorf("contact-worker --replay-dlq %v: %v\n%s", args, err, tail(stderr.String(), 20))
	}
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		var s soakReplaySummary
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.Summary {
			return s, nil
		}
	}
	return soakReplaySummary{}, fmt.Errorf("contact-worker --replay-dlq %v: no summary line in %q", args, tail(stdout.String(), 5))
}

// soakFaults are the stand-in's failure rules the soak keeps: contacts
// refused (422) and a spell of 503 for a shard of the contacts. The
// stand-in clears rules only all at once: apply sets them again.
type soakFaults struct {
	api      *standin.Server
	refused  map[string]bool
	spellEnd time.Time
}

const soakSpellShare = 0.01 // of the contacts: about 20 of 2,000

func (f *soakFaults) apply() {
	f.api.ClearFailures()
	ids := make([]string, 0, len(f.refused))
	for c := range f.refused {
		ids = append(ids, c)
	}
	sort.Strings(ids)
	for _, c := range ids { // first: a refused contact in the shard is refused
		_ = f.api.Fail(standin.Failure{ContactID: c, Status: http.StatusUnprocessableEntity})
	}
	if d := time.Until(f.spellEnd); d > 0 {
		_ = f.api.Fail(standin.Failure{Status: http.StatusServiceUnavailable, Share: soakSpellShare, For: d.String()})
	}
}

// appliedSeq is the sequence number of the contact's event the stand-in holds.
func appliedSeq(t testing.TB, api *standin.Server, contact string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(firstName(t, api, contact), "v"))
	return n
}

func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

func TestSoak(t *testing.T) {
	if os.Getenv("SOAK") == "" {
		t.Skip("the soak runs with make soak (SOAK=1)")
	}
	cfg := soakSettings(t)
	api, url := contactsAPI(t)
	api.SetLatency(2 * time.Millisecond)
	topics := topicEnv(t)
	common := merge(topics, map[string]string{"KAFKA_BROKERS": brokers, "KAFKA_TOPIC_PARTITIONS": "6", "LOG_LEVEL": "info"})
	gwEnv := merge(common, map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret, "GATEWAY_SHUTDOWN_DELAY": "1s"})
	wkEnv := merge(common, map[string]string{"WORKER_CONTACTS_API_URL": url, "WORKER_CONTACTS_API_TOKEN": "test-token",
		"WORKER_RETRY_INITIAL_INTERVAL": "100ms", "WORKER_RETRY_MAX_INTERVAL": "1s"})
	replayEnv := map[string]string{"KAFKA_BROKERS": brokers, "KAFKA_TOPIC": topics["KAFKA_TOPIC"], "KAFKA_DLQ_TOPIC": topics["KAFKA_DLQ_TOPIC"],
		"KAFKA_PARKED_TOPIC": topics["KAFKA_PARKED_TOPIC"], "WORKER_GROUP_ID": topics["WORKER_GROUP_ID"],
		"WORKER_REPLAY_GROUP_ID": uniqueName(t, "replay"), "WORKER_REPLAY_ACTOR": "soak", "LOG_LEVEL": "warn"}

	gwProcEnv, w1Env, w2Env := merge(gwEnv), merge(wkEnv), merge(wkEnv)
	gw := &soakProc{proc: newProc(t, "webhook-gateway", gwProcEnv, "GATEWAY_LISTEN_ADDR"), label: "gateway"}
	gw.metricsAddr = gwProcEnv["GATEWAY_METRICS_ADDR"]
	w1 := &soakProc{proc: newProc(t, "contact-worker", w1Env, "WORKER_HTTP_ADDR"), label: "worker-1"}
	w1.metricsAddr = w1.addr
	// worker-2 is a new process every cycle: none of its lives is longer
	// than the warm-up, and its samples fall before or after its partitions
	// are assigned. worker-1 lives through every rebalance (it takes over
	// worker-2's partitions and hands them back each cycle): a leak on a
	// rebalance grows there.
	w2 := &soakProc{proc: newProc(t, "contact-worker", w2Env, "WORKER_HTTP_ADDR"), label: "worker-2",
		notJudged: "not judged: a new process every cycle (reported only)"}
	w2.metricsAddr = w2.addr
	procs := []*soakProc{gw, w1, w2}
	for _, p := range procs {
		p.up(t)
	}

	dlq := followDLQ(t, topics["KAFKA_DLQ_TOPIC"])
	st := &soakTopics{client: newClient(t, brokers), admin: newAdmin(t), events: topics["KAFKA_TOPIC"], state: stateTopicOf(topics), dlq: topics["KAFKA_DLQ_TOPIC"]}
	eventually(t, 30*time.Second, "the state topic provisioned", func() bool {
		_, err := st.client.Partitions(st.state)
		if err != nil {
			_ = st.client.RefreshMetadata(st.state)
		}
		return err == nil
	})
	for _, b := range st.client.Brokers() {
		st.brokerIDs = append(st.brokerIDs, b.ID())
	}

	l := &soakLoad{limiter: rate.NewLimiter(rate.Limit(cfg.rate), 1)}
	for i := 0; i < cfg.contacts; i++ {
		l.contacts = append(l.contacts, &soakContact{id: fmt.Sprintf("sk-%04d", i)})
	}
	const loaders = 32
	for i := 0; i < loaders; i++ {
		l.senders = append(l.senders, newSender(t, &binary{addr: gw.addr}))
	}
	var loadWG sync.WaitGroup
	for i := 0; i < loaders; i++ {
		loadWG.Add(1)
		go l.run(i, loaders, &loadWG)
	}
	start := time.Now()
	end := start.Add(cfg.duration)

	// The sampler: one row at the start, then every interval, up to the end.
	var rowsMu sync.Mutex
	var rows []soakRow
	samplerDone, stopSampler := make(chan struct{}), make(chan struct{})
	var stopOnce sync.Once
	t.Cleanup(func() { // also when the test stops early: nothing may log after it
		stopOnce.Do(func() { close(stopSampler) })
		<-samplerDone
		l.stop.Store(true)
		loadWG.Wait()
	})
	go func() {
		defer close(samplerDone)
		for next := start; !next.After(end.Add(time.Second)); next = next.Add(cfg.interval) {
			select {
			case <-stopSampler:
				return
			case <-time.After(time.Until(next)):
			}
			row := soakRow{at: time.Since(start).Round(time.Second), accepted: l.accepted(), calls: api.CallCount()}
			for _, p := range procs {
				row.procs = append(row.procs, p.sample())
				p.logs.keepTail(1 << 20)
			}
			row.topics = st.sizes()
			rowsMu.Lock()
			rows = append(rows, row)
			rowsMu.Unlock()
			t.Logf("soak %v: accepted %d, api calls %d, state topic %d records", row.at, row.accepted, row.calls, row.topics.state)
		}
	}()

	// The cycles of faults.
	var notes []string
	note := func(format string, args ...any) {
		s := fmt.Sprintf("%v: ", time.Since(start).Round(time.Second)) + fmt.Sprintf(format, args...)
		notes = append(notes, s)
		t.Log("soak " + s)
	}
	faults := &soakFaults{api: api, refused: map[string]bool{}}
	const refusedPool, refusedPerCycle = 20, 3 // sk-0000 … sk-0019 take turns
	spell := min(max(cfg.cycle/10, 3*time.Second), 15*time.Second)
	at := func(k int, f float64) time.Time {
		return start.Add(time.Duration(k)*cfg.cycle + time.Duration(f*float64(cfg.cycle)))
	}
	releaseRuns, releasedRecords := 0, 0
	cycles := int(cfg.duration / cfg.cycle)
	for k := 0; k < cycles; k++ {
		time.Sleep(time.Until(at(k, 0)))
		var refused []*soakContact
		var ids []string
		for j := 0; j < refusedPerCycle; j++ {
			c := l.contacts[(k*refusedPerCycle+j)%refusedPool]
			refused = append(refused, c)
			ids = append(ids, c.id)
			faults.refused[c.id] = true
		}
		faults.apply()
		note("cycle %d: the Contacts API refuses %s (422): dead-lettered, then parked", k+1, strings.Join(ids, ", "))

		time.Sleep(time.Until(at(k, 0.15)))
		faults.spellEnd = time.Now().Add(spell)
		faults.apply()
		note("cycle %d: 503 for %v for a shard of %.0f%% of the contacts", k+1, spell, 100*soakSpellShare)

		time.Sleep(time.Until(at(k, 0.30)))
		took, err := w2.term()
		if err != nil {
			t.Error(err)
		}
		note("cycle %d: worker-2 SIGTERMed (rebalance), exited in %v", k+1, took.Round(time.Millisecond))

		time.Sleep(time.Until(at(k, 0.45)))
		note("cycle %d: worker-2 started again (rebalance), ready in %v", k+1, w2.up(t).Round(time.Millisecond))

		time.Sleep(time.Until(at(k, 0.60)))
		// The release, as an SRE does it: the cause fixed, then
		// --replay-contact-id. No events of these contacts are sent
		// meanwhile, so that the release finds all of them in the DLQ.
		lasts := map[*soakContact]int{}
		for _, c := range refused {
			c.mu.Lock()
			c.held = true
			lasts[c] = c.last
			c.mu.Unlock()
		}
		settled := func() bool {
			for c, last := range lasts {
				if appliedSeq(t, api, c.id) < last && !dlq.has(soakEventID(c.id, last)) {
					return false
				}
			}
			return true
		}
		if !waitFor(60*time.Second, settled) {
			t.Errorf("cycle %d: the refused contacts' last events neither applied nor dead-lettered within 60 s", k+1)
		}
		time.Sleep(2 * time.Second) // the state records of the last parked ones (batched once a second)
		for _, c := range refused {
			delete(faults.refused, c.id)
		}
		faults.apply()
		releaseStart := time.Now()
		applied := func() bool {
			for c, last := range lasts {
				if appliedSeq(t, api, c.id) < last {
					return false
				}
			}
			return true
		}
		runs, replayed, done := 0, 0, false
		for runs < 4 && !done {
			runs++
			sum, err := soakReplay(t, replayEnv, "--replay-contact-id", strings.Join(ids, ","))
			if err != nil {
				t.Error(err)
				break
			}
			replayed += sum.Replayed
			done = waitFor(60*time.Second, applied)
		}
		releaseRuns += runs
		releasedRecords += replayed
		if !done {
			t.Errorf("cycle %d: %s not at their last events after %d releases", k+1, strings.Join(ids, ", "), runs)
		}
		note("cycle %d: released %s with %d run(s) of --replay-dlq --replay-contact-id: %d records replayed, all applied %v after the first",
			k+1, strings.Join(ids, ", "), runs, replayed, time.Since(releaseStart).Round(time.Millisecond))
		for _, c := range refused {
			c.mu.Lock()
			c.held = false
			c.mu.Unlock()
		}
		for _, p := range procs {
			if p.crashed() {
				t.Errorf("%s exited by itself during cycle %d", p.label, k+1)
			}
		}
	}
	time.Sleep(time.Until(end))
	<-samplerDone
	l.stop.Store(true)
	loadWG.Wait()
	loadEnd := time.Now()

	// The promises, end to end.
	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	behind := func() []string {
		var out []string
		for _, c := range l.contacts {
			c.mu.Lock()
			last := c.last
			c.mu.Unlock()
			if got := appliedSeq(t, api, c.id); got < last {
				out = append(out, fmt.Sprintf("%s at %d of %d (last in the DLQ: %v)", c.id, got, last, dlq.has(soakEventID(c.id, last))))
			}
		}
		return out
	}
	if !waitFor(3*time.Minute, func() bool { return len(behind()) == 0 }) {
		b := behind()
		problem("%d contacts not at their last accepted event 3 min after the load ended: %s", len(b), strings.Join(b[:min(5, len(b))], "; "))
	}
	drained := time.Since(loadEnd)

	calls := api.Calls()
	firstApplied := map[string][]int{}
	seen := map[string]bool{}
	redelivered, failedCalls := 0, 0
	for _, c := range calls {
		switch {
		case c.Status >= 300:
			failedCalls++
			continue
		case c.Replayed:
			redelivered++
			continue
		}
		if seen[c.IdempotencyKey] {
			continue
		}
		seen[c.IdempotencyKey] = true
		s, _ := strconv.Atoi(c.IdempotencyKey[strings.LastIndex(c.IdempotencyKey, "_")+1:])
		firstApplied[c.ContactID] = append(firstApplied[c.ContactID], s)
	}
	missing, outOfOrder, acceptedN, appliedN := 0, 0, 0, 0
	var missingEx []string
	for _, c := range l.contacts {
		acceptedN += c.last
		seqs := firstApplied[c.id]
		appliedN += len(seqs)
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				outOfOrder++
			}
		}
		for s := 1; s <= c.last; s++ {
			if !seen[soakEventID(c.id, s)] {
				if missing++; len(missingEx) < 5 {
					missingEx = append(missingEx, soakEventID(c.id, s))
				}
			}
		}
	}
	if missing > 0 {
		problem("%d accepted events never applied (e.g. %s)", missing, strings.Join(missingEx, ", "))
	}
	if outOfOrder > 0 {
		problem("%d events applied before an earlier event of their contact", outOfOrder)
	}
	dlq.mu.Lock()
	dlqN, dlqDistinct, dlqKinds := dlq.n, len(dlq.ids), fmt.Sprint(dlq.kinds)
	var strangers []string
	for key := range dlq.keys {
		if n, err := strconv.Atoi(strings.TrimPrefix(key, "sk-")); err != nil || n >= refusedPool {
			strangers = append(strangers, key)
		}
	}
	if n := dlq.kinds["transient"]; n > 0 {
		problem("%d dead letters of kind transient: the 503 spells (%v) are shorter than the retry budget", n, spell)
	}
	dlq.mu.Unlock()
	if len(strangers) > 0 {
		problem("dead letters of contacts never refused: %v", strangers[:min(5, len(strangers))])
	}
	l.mu.Lock()
	if l.hung > 0 || l.otherN > 0 {
		problem("requests hung: %d; answers other than 202 and 503: %d %v", l.hung, l.otherN, l.other)
	}
	loadStats := fmt.Sprintf("%d accepted (202), %d answered 503 and retried, %d refused connections retried", l.ok, l.u503, l.refused)
	l.mu.Unlock()
	for _, w := range []*soakProc{w1, w2} {
		if v, err := scrapeValue(w.metricsAddr, "worker_parked_contacts"); err != nil || v != 0 {
			problem("%s: worker_parked_contacts %v (%v), want 0", w.label, v, err)
		}
	}
	if sum, err := soakReplay(t, replayEnv, "--replay-list-parked"); err != nil || sum.ParkedContacts != 0 {
		problem("contacts still parked at the end: %+v %v", sum, err)
	}
	for _, p := range procs {
		if p.crashed() {
			problem("%s exited by itself", p.label)
			continue
		}
		if _, err := p.term(); err != nil {
			problem("%v", err)
		}
	}

	// The growth rules.
	rowsMu.Lock()
	defer rowsMu.Unlock()
	var verdicts strings.Builder
	fmt.Fprintf(&verdicts, "| process | measure | baseline (median after warm-up) | late (median of the last quarter) | limit | verdict |\n| --- | --- | --- | --- | --- | --- |\n")
	failed := 0
	for i, p := range procs {
		for _, m := range soakRules {
			vals := make([]float64, len(rows))
			for j, r := range rows {
				vals[j] = math.NaN()
				if r.procs[i].state == "up" {
					vals[j] = m.value(r.procs[i])
				}
			}
			early, late, limit, ok, why := judgeGrowth(vals, m)
			if p.notJudged != "" {
				ok, why = true, p.notJudged
			}
			verdict := "bounded"
			if !ok {
				verdict = "**GROWS**: " + why
				failed++
				t.Errorf("%s: %s %s", p.label, m.name, why)
			} else if why != "" {
				verdict = why
			}
			fmt.Fprintf(&verdicts, "| %s | %s | %s | %s | %s | %s |\n", p.label, m.name, soakFmt(early, m), soakFmt(late, m), soakFmt(limit, m), verdict)
		}
	}
	dEvents, dState, ok, why := soakStateRule(rows)
	stateVerdict := fmt.Sprintf("grew %d records while the events topic grew %d (%.2f state records per event)", dState, dEvents, float64(dState)/math.Max(1, float64(dEvents)))
	if !ok {
		t.Errorf("state topic: %s: %s", why, stateVerdict)
		stateVerdict = "**" + why + "**: " + stateVerdict
		failed++
	} else {
		stateVerdict = "within the rule (≤ 1.1 state records per event): " + stateVerdict
	}
	for _, p := range problems {
		t.Error(p)
	}

	var report strings.Builder
	fmt.Fprintf(&report, "# make soak — %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&report, "%v of signed webhooks at %.0f/s over %d contacts through one webhook-gateway to two contact-workers (processes), "+
		"a sample every %v; %d cycles of %v: %d contacts refused (422, dead-lettered and parked) then released with `contact-worker --replay-dlq --replay-contact-id`, "+
		"a %v spell of 503 for %.0f%% of the contacts, worker-2 SIGTERMed and started again (two rebalances). Warm-up: the first 20%% of the samples.\n\n",
		cfg.duration, cfg.rate, cfg.contacts, cfg.interval, cycles, cfg.cycle, refusedPerCycle, spell, 100*soakSpellShare)
	fmt.Fprintf(&report, "## Processes\n\n| t | process | pid | RSS MiB | heap in use MiB | heap goal MiB | goroutines | open files | metric series |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		for i, s := range r.procs {
			if s.state != "up" {
				fmt.Fprintf(&report, "| %v | %s | %d | %s | | | | | |\n", r.at, procs[i].label, s.pid, s.state)
				continue
			}
			fmt.Fprintf(&report, "| %v | %s | %d | %.1f | %.1f | %.1f | %.0f | %.0f | %.0f |\n", r.at, procs[i].label, s.pid,
				s.rss/(1<<20), s.heapInuse/(1<<20), s.heapGoal/(1<<20), s.goroutines, s.fds, s.series)
		}
	}
	fmt.Fprintf(&report, "\n## Topics and load\n\n| t | webhooks accepted | API calls | events topic records | state topic records | state topic on disk | DLQ records |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		disk := "?"
		if r.topics.stateBytes >= 0 {
			disk = fmt.Sprintf("%.1f MiB", float64(r.topics.stateBytes)/(1<<20))
		}
		extra := ""
		if r.topics.err != "" {
			extra = " (" + r.topics.err + ")"
		}
		fmt.Fprintf(&report, "| %v | %d | %d | %d | %d | %s | %d%s |\n", r.at, r.accepted, r.calls, r.topics.events, r.topics.state, disk, r.topics.dlq, extra)
	}
	fmt.Fprintf(&report, "\n## Verdict: growth\n\n%s", verdicts.String())
	fmt.Fprintf(&report, "| state topic | records | | | | %s |\n", stateVerdict)
	fmt.Fprintf(&report, "\n## Verdict: promises\n\n| measure | value |\n| --- | --- |\n")
	for _, row := range [][2]any{
		{"load", loadStats}, {"events accepted", acceptedN}, {"events applied (first time)", appliedN},
		{"accepted events never applied", missing}, {"applied out of order within a contact", outOfOrder},
		{"calls answered from the idempotency record (redelivered)", redelivered}, {"calls failed (422, 503, as told)", failedCalls},
		{"calls of one contact overlapping (reported, not judged)", len(api.Overlaps())},
		{"dead letters: records (by kind) / distinct events (a rebalance can park one event twice; a release replays its latest copy)",
			fmt.Sprintf("%d %s / %d", dlqN, dlqKinds, dlqDistinct)},
		{"release runs / records replayed", fmt.Sprintf("%d / %d", releaseRuns, releasedRecords)},
		{"from the end of the load until every contact was at its last event", drained.Round(time.Millisecond)},
		{"problems", len(problems)},
	} {
		fmt.Fprintf(&report, "| %s | %v |\n", row[0], row[1])
	}
	for _, p := range problems {
		fmt.Fprintf(&report, "\n- %s", p)
	}
	verdict := "PASS"
	if failed > 0 || len(problems) > 0 {
		verdict = fmt.Sprintf("FAIL (%d measures grow, %d promises broken)", failed, len(problems))
	}
	fmt.Fprintf(&report, "\n\n**%s**\n\n## Scenario\n\n", verdict)
	for _, n := range notes {
		fmt.Fprintf(&report, "- %s\n", n)
	}
	t.Logf("soak report:\n%s", report.String())
	_ = os.MkdirAll("../../bench/out", 0o755)
	if err := os.WriteFile("../../bench/out/soak.md", []byte(report.String()), 0o644); err != nil {
		t.Error(err)
	}
}

func soakFmt(v float64, m soakMeasure) string {
	if math.IsNaN(v) {
		return "–"
	}
	if m.unit == 1 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f %s", v/m.unit, m.unitN)
}

// scrapeValue reads one unlabelled sample of a /metrics.
func scrapeValue(addr, name string) (float64, error) {
	resp, err := soakHTTP.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s", name)
}

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/acmecrm/integration-service/tests/standin"
)

// The chaos suite (make chaos): continuous signed load, each contact's
// events sent in order, while the broker, a worker and a gateway are
// killed and restarted, members join and leave, and the Contacts API goes
// down for everyone; then it checks the promises: every 202 is on the
// topic and applied, in order per contact, the final state of each contact
// is its last accepted event, only 202 and 503 were answered, nothing hung,
// nothing was dead-lettered. It writes a report (bench/out/chaos.md).

// proc is one of the built binaries, run as a real process.
type proc struct {
	name, addr string
	env        []string
	cmd        *exec.Cmd
	exited     chan struct{} // closed when the current process has exited
	logs       *syncBuffer
}

func newProc(t testing.TB, name string, env map[string]string, addrKey string) *proc {
	p := &proc{name: name, addr: freeAddr(t), logs: &syncBuffer{}}
	env[addrKey] = p.addr
	if name == "webhook-gateway" {
		env["GATEWAY_METRICS_ADDR"] = freeAddr(t) // never the default :9091: two gateways run here
	}
	p.env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		p.env = append(p.env, k+"="+v)
	}
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("%s logs (tail):\n%s", name, tail(p.logs.String(), 40))
		}
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (p *proc) start(t testing.TB) {
	t.Helper()
	p.cmd = exec.Command(builtBinary(t, p.name))
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	p.exited = exited
	go func(c *exec.Cmd) {
		_ = c.Wait()
		close(exited)
	}(p.cmd)
	waitStatus(t, "http://"+p.addr+"/readyz", http.StatusOK, 90*time.Second, nil)
}

func (p *proc) signal(sig syscall.Signal) {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stopped waits until the process has exited.
func (p *proc) stopped(timeout time.Duration) bool {
	select {
	case <-p.exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// loader sends each contact's events in order: the next one only after the
// one before got 202 (a 503 or a refused connection is retried, on the
// other gateway, as AcmeCRM would).
type loader struct {
	senders []*sender
	stop    atomic.Bool

	mu       sync.Mutex
	accepted map[string]int // contact -> last seq acknowledged
	acks     []time.Time
	took     []time.Duration // of each 202, beside acks
	ok, u503 int
	refused  int
	other    []string
	hung     int
}

func (l *loader) run(t testing.TB, contacts []string, wg *sync.WaitGroup) {
	defer wg.Done()
	seq := map[string]int{}
	for i := 0; !l.stop.Load(); i++ {
		c := contacts[i%len(contacts)]
		seq[c]++
		id := fmt.Sprintf("evt_%s_%05d", c, seq[c])
		body := fmt.Sprintf(`{"event_type":"contact.updated","event_id":%q,"timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":%q,"acme_first_name":"v%05d"}}`, id, c, seq[c])
		for try := 0; ; try++ {
			s := l.senders[(i+try)%len(l.senders)]
			start := time.Now()
			r, err := s.send(body, nil)
			l.mu.Lock()
			switch {
			case err != nil && time.Since(start) > 25*time.Second:
				l.hung++
			case err != nil:
				l.refused++
			case r.status == 202:
				l.ok++
				l.accepted[c] = seq[c]
				l.acks = append(l.acks, time.Now())
				l.took = append(l.took, time.Since(start))
			case r.status == 503:
				l.u503++
			default:
				l.other = append(l.other, fmt.Sprintf("%s: %d %v", id, r.status, r.body))
			}
			done := err == nil && r.status == 202
			l.mu.Unlock()
			if done {
				break
			}
			if l.stop.Load() && try > 200 {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

type phase struct {
	name       string
	start, end time.Time
}

// maxGap returns the longest time between consecutive instants within
// [from, to), counting from the window's start.
func maxGap(ts []time.Time, from, to time.Time) time.Duration {
	var gap time.Duration
	last := from
	for _, x := range ts {
		if x.Before(from) || !x.Before(to) {
			continue
		}
		gap = max(gap, x.Sub(last))
		last = x
	}
	return max(gap, to.Sub(last))
}

func TestChaosSingleBroker(t *testing.T) {
	if os.Getenv("CHAOS") == "" {
		t.Skip("the chaos suite runs with make chaos (CHAOS=1)")
	}
	own := startOwnBroker(t)
	api, url := contactsAPI(t)
	api.SetLatency(2 * time.Millisecond)
	topics := topicEnv(t)
	common := merge(topics, map[string]string{
		"KAFKA_BROKERS": own.addr, "KAFKA_HEALTH_INTERVAL": "250ms", "KAFKA_DIAL_TIMEOUT": "1s", "KAFKA_TOPIC_PARTITIONS": "6", "LOG_LEVEL": "info",
	})
	gwEnv := merge(common, map[string]string{"GATEWAY_WEBHOOK_SECRETS": testSecret, "GATEWAY_ENQUEUE_TIMEOUT": "3s", "GATEWAY_SHUTDOWN_DELAY": "1s"})
	wkEnv := merge(common, map[string]string{"WORKER_CONTACTS_API_URL": url, "WORKER_CONTACTS_API_TOKEN": "test-token",
		"WORKER_RETRY_INITIAL_INTERVAL": "100ms", "WORKER_RETRY_MAX_INTERVAL": "1s", "WORKER_OUTAGE_PROBE_INTERVAL": "500ms"})
	gws := []*proc{newProc(t, "webhook-gateway", merge(gwEnv), "GATEWAY_LISTEN_ADDR"), newProc(t, "webhook-gateway", merge(gwEnv), "GATEWAY_LISTEN_ADDR")}
	w1 := newProc(t, "contact-worker", merge(wkEnv), "WORKER_HTTP_ADDR")
	w2 := newProc(t, "contact-worker", merge(wkEnv), "WORKER_HTTP_ADDR")
	for _, p := range append(gws, w1) {
		p.start(t)
	}

	l := &loader{accepted: map[string]int{}}
	for _, g := range gws {
		l.senders = append(l.senders, newSender(t, &binary{addr: g.addr}))
	}
	const contactsN, loaders = 200, 20
	var wg sync.WaitGroup
	for i := 0; i < loaders; i++ {
		var cs []string
		for c := i; c < contactsN; c += loaders {
			cs = append(cs, fmt.Sprintf("ch-%03d", c))
		}
		wg.Add(1)
		go l.run(t, cs, &wg)
	}

	var phases []phase
	at := func(name string, d time.Duration, fault func()) {
		start := time.Now()
		fault()
		time.Sleep(time.Until(start.Add(d)))
		phases = append(phases, phase{name, start, time.Now()})
	}
	brokerPid := func() int {
		b, _ := os.ReadFile(filepath.Join(kafkaHome, fmt.Sprintf("run-%d", own.port), "broker.pid"))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	at("steady load", 5*time.Second, func() {})
	at("broker SIGKILLed, restarted after 5 s", 15*time.Second, func() {
		_ = syscall.Kill(brokerPid(), syscall.SIGKILL)
		time.Sleep(5 * time.Second)
		own.script(t, "up")
	})
	at("worker SIGKILLed mid-flight, restarted", 10*time.Second, func() {
		w1.signal(syscall.SIGKILL)
		w1.stopped(5 * time.Second)
		w1.start(t)
	})
	at("gateway SIGTERMed mid-load, restarted", 10*time.Second, func() {
		gws[0].signal(syscall.SIGTERM)
		if !gws[0].stopped(30 * time.Second) {
			t.Error("the gateway did not exit after SIGTERM")
		}
		gws[0].start(t)
	})
	at("rebalance storm: a member joins and leaves every 3 s", 12*time.Second, func() {
		for i := 0; i < 2; i++ {
			w2.start(t)
			time.Sleep(3 * time.Second)
			w2.signal(syscall.SIGTERM)
			w2.stopped(30 * time.Second)
			time.Sleep(time.Second)
		}
	})
	at("Contacts API 503 for everyone for 5 s", 10*time.Second, func() {
		_ = api.Fail(standin.Failure{Status: 503, For: "5s"})
	})
	l.stop.Store(true)
	wg.Wait()
	loadEnd := time.Now()

	// Every accepted event applied: the last accepted of each contact is its state.
	eventually(t, 120*time.Second, "every contact at its last accepted event", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for c, s := range l.accepted {
			if firstName(t, api, c) != fmt.Sprintf("v%05d", s) {
				return false
			}
		}
		return true
	})
	applyEnd := time.Now()

	// The promises.
	onTopic := map[string]int{}
	records := 0
	for _, m := range readAll(t, own.addr, topics["KAFKA_TOPIC"]) {
		onTopic[headerMap(m)["ce_id"]]++
		records++
	}
	missing := 0
	for c, last := range l.accepted {
		for s := 1; s <= last; s++ {
			if onTopic[fmt.Sprintf("evt_%s_%05d", c, s)] == 0 {
				missing++
			}
		}
	}
	calls := api.Calls()
	var applies []time.Time
	appliedN, dups, outOfOrder := 0, 0, 0
	lastSeq := map[string]int{}
	for _, c := range calls {
		if c.Status >= 300 {
			continue
		}
		if c.Replayed {
			dups++
			continue
		}
		appliedN++
		applies = append(applies, c.At)
		s, _ := strconv.Atoi(c.IdempotencyKey[strings.LastIndex(c.IdempotencyKey, "_")+1:])
		if s <= lastSeq[c.ContactID] {
			outOfOrder++
		}
		lastSeq[c.ContactID] = s
	}
	accepted := 0
	for _, s := range l.accepted {
		accepted += s
	}
	dlq := readAll(t, own.addr, topics["KAFKA_DLQ_TOPIC"])
	sort.Slice(applies, func(i, j int) bool { return applies[i].Before(applies[j]) })

	var report strings.Builder
	fmt.Fprintf(&report, "| phase | longest pause in acceptance | longest pause in application |\n| --- | --- | --- |\n")
	for _, p := range phases {
		fmt.Fprintf(&report, "| %s | %v | %v |\n", p.name, maxGap(l.acks, p.start, p.end).Round(time.Millisecond), maxGap(applies, p.start, p.end).Round(time.Millisecond))
	}
	fmt.Fprintf(&report, "\n| measure | value |\n| --- | --- |\n")
	for _, row := range [][2]any{
		{"requests answered 202", l.ok}, {"requests answered 503 (retried)", l.u503}, {"requests refused: connection failed (retried)", l.refused},
		{"requests hung (no answer in 25 s)", l.hung}, {"other answers", len(l.other)}, {"events accepted (distinct)", accepted},
		{"records on the topic (sender retries of a timed-out 503 included)", records}, {"accepted events missing from the topic", missing},
		{"events applied (first time)", appliedN}, {"duplicates re-delivered (same Idempotency-Key, answered from the record)", dups},
		{"older event of a contact applied after a newer one", outOfOrder}, {"dead letters", len(dlq)},
		{"time from the end of the load until every contact was at its last accepted event", applyEnd.Sub(loadEnd).Round(time.Millisecond)},
	} {
		fmt.Fprintf(&report, "| %s | %v |\n", row[0], row[1])
	}
	t.Logf("chaos report:\n%s", report.String())
	_ = os.MkdirAll("../../bench/out", 0o755)
	_ = os.WriteFile("../../bench/out/chaos.md", []byte("# make chaos — "+time.Now().UTC().Format(time.RFC3339)+"\n\n"+report.String()), 0o644)

	if missing != 0 || l.hung != 0 || len(l.other) != 0 || outOfOrder != 0 || len(dlq) != 0 || appliedN != accepted {
		t.Errorf("promises broken: missing %d, hung %d, other answers %v, out of order %d, dead letters %d, applied %d of %d accepted",
			missing, l.hung, l.other[:min(5, len(l.other))], outOfOrder, len(dlq), appliedN, accepted)
	}
}

// The production topology: three brokers, replication factor 3,
// min.insync.replicas 2. Under load through two gateways, the leader of
// partition 0 is SIGKILLed and restarted; no acknowledged event may be
// lost, and the report gives the pause it caused (make chaos-cluster).
func TestChaosCluster(t *testing.T) {
	if os.Getenv("CHAOS_CLUSTER") == "" {
		t.Skip("make chaos-cluster runs it (CHAOS_CLUSTER=1)")
	}
	clusterPort := freePortBlock(t, 0, 1, 10, 11, 20, 21) // each node's PLAINTEXT and controller ports
	script := func(args ...string) {
		cmd := exec.Command("../../scripts/kafka.sh", args...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("KAFKA_CLUSTER_PORT=%d", clusterPort))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kafka.sh %v: %v\n%s", args, err, out)
		}
	}
	script("cluster-reset")
	script("cluster-up")
	t.Cleanup(func() { script("cluster-reset") })
	cluster := fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", clusterPort, clusterPort+10, clusterPort+20)
	topics := topicEnv(t)
	gwEnv := merge(topics, map[string]string{
		"KAFKA_BROKERS": cluster, "KAFKA_REPLICATION_FACTOR": "3", "KAFKA_TOPIC_PARTITIONS": "6", "KAFKA_HEALTH_INTERVAL": "250ms",
		"KAFKA_DIAL_TIMEOUT": "1s", "GATEWAY_WEBHOOK_SECRETS": testSecret, "GATEWAY_ENQUEUE_TIMEOUT": "5s", "LOG_LEVEL": "info",
	})
	gws := []*proc{newProc(t, "webhook-gateway", merge(gwEnv), "GATEWAY_LISTEN_ADDR"), newProc(t, "webhook-gateway", merge(gwEnv), "GATEWAY_LISTEN_ADDR")}
	l := &loader{accepted: map[string]int{}}
	for _, g := range gws {
		g.start(t)
		l.senders = append(l.senders, newSender(t, &binary{addr: g.addr}))
	}
	client := newClient(t, cluster)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		var cs []string
		for c := i; c < 200; c += 20 {
			cs = append(cs, fmt.Sprintf("cl-%03d", c))
		}
		wg.Add(1)
		go l.run(t, cs, &wg)
	}
	time.Sleep(8 * time.Second)
	if err := client.RefreshMetadata(topics["KAFKA_TOPIC"]); err != nil {
		t.Fatal(err)
	}
	leader, err := client.Leader(topics["KAFKA_TOPIC"], 0)
	if err != nil {
		t.Fatal(err)
	}
	node := leader.ID()
	pidFile := filepath.Join(kafkaHome, fmt.Sprintf("run-cluster-%d", clusterPort), fmt.Sprintf("node-%d", node), "broker.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	restarted := time.Now()
	script("cluster-node-up", strconv.Itoa(int(node)))
	time.Sleep(8 * time.Second)
	l.stop.Store(true)
	wg.Wait()
	end := time.Now()

	onTopic := map[string]bool{}
	records := 0
	for _, m := range readAll(t, cluster, topics["KAFKA_TOPIC"]) {
		onTopic[headerMap(m)["ce_id"]] = true
		records++
	}
	lost, accepted := 0, 0
	for c, last := range l.accepted {
		accepted += last
		for s := 1; s <= last; s++ {
			if !onTopic[fmt.Sprintf("evt_%s_%05d", c, s)] {
				lost++
			}
		}
	}
	// Latency of the 202s in the minute around the fault.
	var during []time.Duration
	for i, at := range l.acks {
		if !at.Before(killed) && at.Before(restarted) {
			during = append(during, l.took[i])
		}
	}
	sort.Slice(during, func(i, j int) bool { return during[i] < during[j] })
	p99, maxLat := time.Duration(0), time.Duration(0)
	if len(during) > 0 {
		p99, maxLat = during[len(during)*99/100], during[len(during)-1]
	}
	var report strings.Builder
	fmt.Fprintf(&report, "| measure | value |\n| --- | --- |\n")
	for _, row := range [][2]any{
		{"leader of partition 0 SIGKILLed", fmt.Sprintf("node %d, restarted 10 s later", node)},
		{"requests answered 202", l.ok}, {"requests answered 503 (retried)", l.u503}, {"requests refused (retried)", l.refused},
		{"requests hung", l.hung}, {"other answers", len(l.other)}, {"events accepted", accepted}, {"records on the topic", records},
		{"acknowledged events lost", lost},
		{"longest pause in acceptance, from the kill to the restart", maxGap(l.acks, killed, restarted).Round(time.Millisecond)},
		{"202 latency from the kill to the restart: p99 / max", fmt.Sprintf("%v / %v", p99.Round(time.Millisecond), maxLat.Round(time.Millisecond))},
		{"longest pause in acceptance, whole run", maxGap(l.acks, l.acks[0], end).Round(time.Millisecond)},
	} {
		fmt.Fprintf(&report, "| %s | %v |\n", row[0], row[1])
	}
	t.Logf("chaos-cluster report:\n%s", report.String())
	_ = os.MkdirAll("../../bench/out", 0o755)
	_ = os.WriteFile("../../bench/out/chaos-cluster.md", []byte("# make chaos-cluster — "+time.Now().UTC().Format(time.RFC3339)+"\n\n"+report.String()), 0o644)
	if lost != 0 || l.hung != 0 || len(l.other) != 0 {
		t.Errorf("lost %d, hung %d, other answers %v", lost, l.hung, l.other[:min(5, len(l.other))])
	}
}

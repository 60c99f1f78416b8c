package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"hash/crc32"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/acmecrm/integration-service/pkg/gateway"
	"github.com/acmecrm/integration-service/pkg/worker"
)

// brokers is the real broker the tests run against.
var brokers = func() string {
	if b := os.Getenv("KAFKA_TEST_BROKERS"); b != "" {
		return b
	}
	return "127.0.0.1:9092"
}()

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode")
		os.Exit(0)
	}
	conn, err := net.DialTimeout("tcp", strings.Split(brokers, ",")[0], 3*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: no Kafka broker at %s (%v).\nRun `make test`, which starts one, or `make kafka-up` first.\n", brokers, err)
		os.Exit(1)
	}
	conn.Close()
	os.Exit(m.Run())
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// uniqueName returns a topic or group name no other test run uses, so tests
// share the broker without seeing each other's records. A long test name is
// cut and told apart by a hash, so that names derived from two of these
// (the state topic's, from the group and the topic) stay within Kafka's 249
// characters.
func uniqueName(t testing.TB, what string) string {
	name := unsafeChars.ReplaceAllString(t.Name(), "-")
	if len(name) > 48 {
		name = fmt.Sprintf("%s-%08x", name[:40], crc32.ChecksumIEEE([]byte(name)))
	}
	return fmt.Sprintf("e2e-%s-%s-%d", name, what, time.Now().UnixNano())
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a binary's log lines for inspection and for the failure report.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// binary is a running gateway or worker.
type binary struct {
	name        string
	addr        string // its HTTP address
	metricsAddr string // where its /metrics is, when not on addr (the gateway's)
	logs        *syncBuffer
	cancel      context.CancelFunc
	done        chan error
	once        sync.Once
}

// start runs a binary's Run with env (plus the test broker) until the test
// ends or stop is called, and waits until its /readyz answers 200.
func start(t testing.TB, name string, run func(context.Context, []string, func(string) string, *syncBuffer) error, addr string, env map[string]string) *binary {
	t.Helper()
	b := launch(t, name, run, addr, env)
	waitStatus(t, "http://"+addr+"/readyz", http.StatusOK, 60*time.Second, b)
	return b
}

// launch runs a binary's Run like start, without waiting for it to be ready.
func launch(t testing.TB, name string, run func(context.Context, []string, func(string) string, *syncBuffer) error, addr string, env map[string]string) *binary {
	t.Helper()
	full := merge(map[string]string{"KAFKA_BROKERS": brokers, "LOG_LEVEL": "debug"}, env)
	if name == "webhook-gateway" && full["GATEWAY_METRICS_ADDR"] == "" {
		full["GATEWAY_METRICS_ADDR"] = freeAddr(t) // never the default :9091: the machine is shared
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &binary{name: name, addr: addr, metricsAddr: full["GATEWAY_METRICS_ADDR"], logs: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { b.done <- run(ctx, nil, func(k string) string { return full[k] }, b.logs) }()
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, b.logs.String())
		}
	})
	return b
}

// stop cancels the binary's context (SIGTERM) and checks that it exits cleanly.
func (b *binary) stop(t testing.TB) {
	t.Helper()
	b.once.Do(func() {
		b.cancel()
		select {
		case err := <-b.done:
			if err != nil {
				t.Errorf("%s exited with %v, want nil", b.name, err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("%s did not exit within 60s of its context ending", b.name)
		}
	})
}

func startGateway(t testing.TB, env map[string]string) *binary {
	t.Helper()
	addr := freeAddr(t)
	env = merge(map[string]string{"GATEWAY_LISTEN_ADDR": addr}, env)
	return start(t, "webhook-gateway", func(ctx context.Context, args []string, getenv func(string) string, out *syncBuffer) error {
		return gateway.Run(ctx, "test", args, getenv, out, out)
	}, env["GATEWAY_LISTEN_ADDR"], env)
}

func startWorker(t testing.TB, env map[string]string) *binary {
	t.Helper()
	addr := freeAddr(t)
	env = merge(map[string]string{"WORKER_HTTP_ADDR": addr}, env)
	return start(t, "contact-worker", func(ctx context.Context, args []string, getenv func(string) string, out *syncBuffer) error {
		return worker.Run(ctx, "test", args, getenv, out, out)
	}, env["WORKER_HTTP_ADDR"], env)
}

// waitStatus polls url until it answers want, or fails the test.
func waitStatus(t testing.TB, url string, want int, timeout time.Duration, b *binary) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if b != nil {
			select {
			case err := <-b.done:
				b.done <- err
				t.Fatalf("%s exited before %s answered %d: %v", b.name, url, want, err)
			default:
			}
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %d within %v (last: %s)", url, want, timeout, last)
}

func newAdmin(t testing.TB) sarama.ClusterAdmin {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_9_0_0
	admin, err := sarama.NewClusterAdmin(strings.Split(brokers, ","), sc)
	if err != nil {
		t.Fatalf("admin: %v", err)
	}
	t.Cleanup(func() { admin.Close() })
	return admin
}

// topicEnv returns settings that give a test its own topics and group.
func topicEnv(t testing.TB) map[string]string {
	return map[string]string{
		"KAFKA_TOPIC":        uniqueName(t, "events"),
		"KAFKA_DLQ_TOPIC":    uniqueName(t, "dlq"),
		"KAFKA_PARKED_TOPIC": uniqueName(t, "parked"),
		"WORKER_GROUP_ID":    uniqueName(t, "group"),
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// startWorkerProcess runs a built contact-worker binary (another
// revision's, for a benchmark's reference line) with env, until the test
// ends or stop is called (SIGTERM), and waits until its /readyz answers.
func startWorkerProcess(t testing.TB, path string, env map[string]string) *binary {
	t.Helper()
	addr := freeAddr(t)
	full := merge(map[string]string{"KAFKA_BROKERS": brokers, "LOG_LEVEL": "debug", "WORKER_HTTP_ADDR": addr}, env)
	cmd := exec.Command(path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range full {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &binary{name: filepath.Base(path), addr: addr, logs: logs, cancel: cancel, done: make(chan error, 1)}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	go func() {
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			b.done <- <-exited
		case err := <-exited:
			b.done <- err
		}
	}()
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			t.Logf("%s logs:\n%s", b.name, logs.String())
		}
	})
	waitStatus(t, "http://"+addr+"/readyz", http.StatusOK, 60*time.Second, b)
	return b
}

// benchWorker starts one worker for a benchmark: in this process, or as
// the binary path when one is given.
type benchWorker struct {
	name string // empty for the worker of this tree, in this process
	path string
}

func (w benchWorker) start(b testing.TB, env map[string]string) *binary {
	if w.path == "" {
		return startWorker(b, env)
	}
	return startWorkerProcess(b, w.path, env)
}

// benchWorkers are the workers a benchmark's reference lines compare:
// BENCH_WORKER_BINS="current=PATH,baseline=PATH" (scripts/bench-worker.sh
// with BASELINE_REV builds them), else this tree's, in this process.
func benchWorkers() []benchWorker {
	v := os.Getenv("BENCH_WORKER_BINS")
	if v == "" {
		return []benchWorker{{}}
	}
	var out []benchWorker
	for _, part := range strings.Split(v, ",") {
		name, path, _ := strings.Cut(part, "=")
		out = append(out, benchWorker{name: name, path: path})
	}
	return out
}

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// builtBinary compiles cmd/<name> once per test run and returns its path.
func builtBinary(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "acme-e2e-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir, "../../cmd/webhook-gateway", "../../cmd/contact-worker").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("building binaries: %v", buildErr)
	}
	return filepath.Join(binDir, name)
}

// A required setting that is missing stops the real binary at once, with a
// non-zero exit and a message naming the variable.
func TestBinariesRefuseToStartWithoutRequiredSettings(t *testing.T) {
	tests := []struct {
		binary, env, want string
	}{
		{"webhook-gateway", "", "GATEWAY_WEBHOOK_SECRETS"},
		{"contact-worker", "", "WORKER_CONTACTS_API_URL"},
		{"contact-worker", "WORKER_CONTACTS_API_URL=http://x WORKER_RETRY_MAX_ELAPSED_TIME=forever", "WORKER_RETRY_MAX_ELAPSED_TIME"},
		{"webhook-gateway", "GATEWAY_WEBHOOK_SECRETS=" + testSecret + " GATEWAY_MAX_BODY_BYTES=big", "GATEWAY_MAX_BODY_BYTES"},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, builtBinary(t, tt.binary))
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, strings.Fields(tt.env)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("%s with %q: got %v, want a non-zero exit", tt.binary, tt.env, err)
		}
		if !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%s with %q: stderr %q does not name %s", tt.binary, tt.env, stderr.String(), tt.want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v to refuse; want at once", tt.binary, d)
		}
	}
}

// The real gateway binary, sent SIGTERM, drains and exits 0.
func TestGatewayBinaryExitsZeroOnSIGTERM(t *testing.T) {
	addr := freeAddr(t)
	cmd := exec.Command(builtBinary(t, "webhook-gateway"))
	env := topicEnv(t)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KAFKA_BROKERS=" + brokers, "GATEWAY_LISTEN_ADDR=" + addr, "GATEWAY_METRICS_ADDR=" + freeAddr(t),
		"GATEWAY_WEBHOOK_SECRETS=" + testSecret, "KAFKA_TOPIC=" + env["KAFKA_TOPIC"], "KAFKA_DLQ_TOPIC=" + env["KAFKA_DLQ_TOPIC"]}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitStatus(t, "http://"+addr+"/readyz", 200, 60*time.Second, nil)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want 0; logs:\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Errorf("no shutdown line in logs:\n%s", logs)
	}
}

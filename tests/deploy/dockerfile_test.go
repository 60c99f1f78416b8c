package deploy

import (
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/acmecrm/integration-service/pkg/config"
)

// The images cannot be built on a machine without a container engine; this
// checks that each Dockerfile builds its binary with the command `make
// build` runs, as non-root on distroless, exposing the binary's default port.
func TestDockerfiles(t *testing.T) {
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(makefile), `CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"`) || !strings.Contains(string(makefile), `LDFLAGS := -s -X main.version=$(VERSION)`) {
		t.Fatal("the Makefile's build command changed; update this test and the Dockerfiles together")
	}
	gw, err := config.LoadGateway(nil, func(k string) string {
		return map[string]string{"GATEWAY_WEBHOOK_SECRETS": "whsec_YWJj"}[k]
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wk, err := config.LoadWorker(nil, func(k string) string { return map[string]string{"WORKER_CONTACTS_API_URL": "http://x"}[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for file, tc := range map[string]struct{ binary, addr string }{
		"Dockerfile.gateway": {"webhook-gateway", gw.Server.ListenAddr},
		"Dockerfile.worker":  {"contact-worker", wk.Fleet.HTTPAddr},
	} {
		raw, err := os.ReadFile("../../" + file)
		if err != nil {
			t.Fatal(err)
		}
		d := string(raw)
		_, port, _ := net.SplitHostPort(tc.addr)
		for _, want := range []string{
			"COPY go.mod go.sum ./\nRUN --mount=type=cache,target=/go/pkg/mod go mod download",
			`CGO_ENABLED=0 go build -trimpath -ldflags "-s -X main.version=${VERSION}" -o /out/` + tc.binary + " ./cmd/" + tc.binary,
			"FROM gcr.io/distroless/static-debian12:nonroot",
			"USER 65532:65532",
			"EXPOSE " + port,
			`ENTRYPOINT ["/` + tc.binary + `"]`,
		} {
			if !strings.Contains(d, want) {
				t.Errorf("%s lacks %q", file, want)
			}
		}
		if n := len(regexp.MustCompile(`(?m)^ENTRYPOINT `).FindAllString(d, -1)); n != 1 {
			t.Errorf("%s has %d ENTRYPOINTs, want 1", file, n)
		}
		if regexp.MustCompile(`(?m)^FROM \S+:latest`).MatchString(d) {
			t.Errorf("%s builds from a latest tag", file)
		}
	}
}

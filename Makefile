# AcmeCRM Integration Service: webhook-gateway and contact-worker.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -X main.version=$(VERSION)
BINARIES := webhook-gateway contact-worker

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: run
run: build standin ## Bring up Kafka, the Contacts API stand-in, the gateway and the worker in the foreground, and send a sample event; Ctrl-C stops all.
	scripts/run.sh

.PHONY: demo
demo: ## While `make run` runs: send created/updated/deleted events and one the stand-in rejects; show the results.
	scripts/demo.sh

.PHONY: standin
standin: ## Build the local Contacts API stand-in (tests/standin) into bin/.
	@mkdir -p bin
	$(GO) build -o bin/contacts-standin ./tests/standin/contacts-standin

.PHONY: test
test: ## Everything: gofmt, go vet, and all tests with -race, end-to-end on a real Kafka broker, the chaos suite included.
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@command -v promtool >/dev/null || { echo "make test: installing promtool (Debian package prometheus) to check the chart's alert rules"; apt-get install -y -qq prometheus >/dev/null; }
	CHAOS=1 scripts/with-kafka.sh $(GO) test -race -count=1 -timeout 12m ./...

.PHONY: chaos
chaos: ## The chaos suite alone (also part of make test): broker, worker and gateway killed under load, rebalance storm, API outage; report in bench/out/chaos.md.
	CHAOS=1 scripts/with-kafka.sh $(GO) test -count=1 -timeout 10m -run '^TestChaosSingleBroker$$' -v ./tests/e2e/

.PHONY: chaos-cluster
chaos-cluster: ## Opt-in: a 3-broker KRaft cluster (RF 3, min.insync.replicas 2), the partition leader SIGKILLed under load; report in bench/out/chaos-cluster.md.
	CHAOS_CLUSTER=1 scripts/with-kafka.sh $(GO) test -count=1 -timeout 10m -run '^TestChaosCluster$$' -v ./tests/e2e/

SOAK_DURATION ?= 30m

.PHONY: soak
soak: ## Opt-in: gateway and two workers (processes) under load for SOAK_DURATION (30m) with refused, parked, released contacts, 503 spells and rebalances; fails if RSS, heap, goroutines, open files or metric series grow without bound; report in bench/out/soak.md.
	@secs=$$(awk -v d='$(SOAK_DURATION)' 'BEGIN { s = 0; while (match(d, /^[0-9.]+(h|ms|m|s)/)) { u = substr(d, 1, RLENGTH); n = u + 0; sub(/^[0-9.]+/, "", u); s += n * (u == "h" ? 3600 : u == "m" ? 60 : u == "ms" ? 0.001 : 1); d = substr(d, RLENGTH + 1) } print int(s) }'); \
	  echo "make soak: SOAK_DURATION=$(SOAK_DURATION), go test -timeout $$((secs + 900))s"; \
	  SOAK=1 SOAK_DURATION=$(SOAK_DURATION) scripts/with-kafka.sh $(GO) test -count=1 -timeout $$((secs + 900))s -run '^TestSoak$$' -v ./tests/e2e/

.PHONY: test-short
test-short: ## Unit tests only (no broker needed).
	$(GO) test -race -short ./...

.PHONY: bench
bench: ## Measure gateway, worker and end to end on the local broker against Kafka's own perf tools, then the worker's concurrency (medians of RUNS=5).
	scripts/with-kafka.sh scripts/bench.sh

.PHONY: bench-freshness
bench-freshness: ## How old a change is when it reaches the Contacts API: webhooks at 50 % and 90 % of one worker's capacity, 1 and 3 workers, a minute each, against an idle reference (RUNS=3); report in bench/out/freshness.md.
	scripts/with-kafka.sh scripts/bench-freshness.sh

FUZZTIME ?= 30s

.PHONY: fuzz
fuzz: ## Fuzz what strangers send: the signature verifier and the event parser, FUZZTIME each (default 30s). make test runs their seeds only.
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./pkg/webhook
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./pkg/acmecrm

.PHONY: bench-gateway
bench-gateway: ## Only the gateway's CPU per webhook: wrk against the gateway and a no-op net/http server in alternating rounds, the Kafka side alone, a CPU profile (RUNS_GW=5; BASELINE_REV=<rev> adds that revision's gateway).
	scripts/with-kafka.sh scripts/bench-gateway.sh

.PHONY: bench-burst
bench-burst: ## Only the gateway burst: 600 senders of 1 MB bodies, peak RSS with the in-flight budget vs ungated (RUNS_BURST=3).
	scripts/with-kafka.sh scripts/bench-burst.sh

.PHONY: bench-worker
bench-worker: ## Only the worker: concurrency at a 5 ms Contacts API (ordering by key vs by partition), contact-state memory and rebuild (RUNS=5; BASELINE_REV=<rev> adds that revision's worker to the default line).
	scripts/with-kafka.sh scripts/bench-worker.sh

.PHONY: build
build: ## Build both binaries into bin/ (the same go build the Dockerfiles run).
	@mkdir -p bin
	$(foreach b,$(BINARIES),CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/$(b) ./cmd/$(b) &&) true

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go')

##@ Deployables

CHART := helm/acme-integration
REGISTRY ?= ghcr.io/acmecrm
HELM_SET ?= --set secrets.webhookSecrets=whsec_ZXhhbXBsZQ== --set worker.contactsApiUrl=https://contacts.example/api

.PHONY: images
images: ## Build both container images (needs a container engine; this project's dev machines have none).
	docker build -f Dockerfile.gateway --build-arg VERSION=$(VERSION) -t $(REGISTRY)/webhook-gateway:$(VERSION) .
	docker build -f Dockerfile.worker --build-arg VERSION=$(VERSION) -t $(REGISTRY)/contact-worker:$(VERSION) .

.PHONY: helm-lint
helm-lint: ## helm lint the chart with the Helm pinned in go.mod (go tool helm).
	$(GO) tool helm lint $(CHART) --kube-version 1.30.0 $(HELM_SET)

.PHONY: helm-template
helm-template: ## Render the chart with example required values (HELM_SET=... to change them).
	$(GO) tool helm template acme $(CHART) --kube-version 1.30.0 $(HELM_SET)

##@ Kafka (a real single-node KRaft broker on 127.0.0.1:9092, or a free port when 9092 is another program's)

.PHONY: kafka-up
kafka-up: ## Fetch Apache Kafka from Maven Central (once) and start the broker; reuses a running one.
	scripts/kafka.sh up

.PHONY: kafka-down
kafka-down: ## Stop the broker.
	scripts/kafka.sh down

.PHONY: kafka-status
kafka-status: ## Say whether the broker answers.
	scripts/kafka.sh status

.PHONY: kafka-reset
kafka-reset: ## Stop the broker and delete its data.
	scripts/kafka.sh reset

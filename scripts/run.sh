#!/usr/bin/env bash
# make run: the whole pipeline on this machine, in the foreground.
# Brings up the local Kafka broker (if not already up), the local stand-in
# for the Contacts API, webhook-gateway and contact-worker, waits until each
# is ready, prefixes their logs, and sends one signed sample event through.
# Ctrl-C stops everything it started.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# Local-only settings; every one can be overridden from the environment.
export LOG_FORMAT=${LOG_FORMAT:-console}
export GATEWAY_LISTEN_ADDR=${GATEWAY_LISTEN_ADDR:-127.0.0.1:8080}
export GATEWAY_METRICS_ADDR=${GATEWAY_METRICS_ADDR:-127.0.0.1:9091}
# A development secret, for this machine only (see README "Sending a webhook").
export GATEWAY_WEBHOOK_SECRETS=${GATEWAY_WEBHOOK_SECRETS:-whsec_YWNtZS1sb2NhbC1kZXYtc2VjcmV0LW5vdC1mb3ItcHJvZA==}
export WORKER_HTTP_ADDR=${WORKER_HTTP_ADDR:-127.0.0.1:9090}
export STANDIN_ADDR=${STANDIN_ADDR:-127.0.0.1:8090}
export WORKER_CONTACTS_API_URL=${WORKER_CONTACTS_API_URL:-http://$STANDIN_ADDR}
export WORKER_CONTACTS_API_TOKEN=${WORKER_CONTACTS_API_TOKEN:-local-dev-token}
# Tracing: to a collector (Jaeger, the OpenTelemetry Collector, ...) when
# OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise each binary writes its spans
# as JSON lines (OTEL_TRACES_EXPORTER=console, on its stderr) to a file here.
run_dir=.cache/run
mkdir -p "$run_dir"
if [ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-}" ]; then
  export OTEL_TRACES_EXPORTER=${OTEL_TRACES_EXPORTER:-console}
fi
export OTEL_BSP_SCHEDULE_DELAY=${OTEL_BSP_SCHEDULE_DELAY:-500}

started_kafka=0
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo "run: stopping" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$started_kafka" = 1 ]; then scripts/kafka.sh down; fi
}
trap cleanup EXIT INT TERM

if ! scripts/kafka.sh status 2>/dev/null; then
  scripts/kafka.sh up
  started_kafka=1
fi
# The project's broker: 9092, or a free port when 9092 is another's.
KAFKA_PORT=$(scripts/kafka.sh port)
export KAFKA_PORT
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:$KAFKA_PORT}

start() { # name command...: run in the background with prefixed output
  local name=$1; shift
  # The prefixing sed ignores Ctrl-C so the binaries' shutdown lines still show.
  "$@" > >(trap '' INT TERM; exec sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}
wait_ready() { # name url
  for _ in $(seq 1 120); do
    curl -fsS "$2" >/dev/null 2>&1 && { echo "run: $1 ready ($2)" >&2; return 0; }
    sleep 0.5
  done
  echo "run: $1 did not become ready at $2" >&2
  return 1
}

# The stand-in always rejects contact "reject-me" with 422, to show the DLQ.
start standin bin/contacts-standin --addr "$STANDIN_ADDR" --token "$WORKER_CONTACTS_API_TOKEN" --reject reject-me=422
# The binaries log to stdout; with the console exporter, stderr holds spans.
for b in webhook-gateway contact-worker; do : >"$run_dir/spans-$b.jsonl"; done
start gateway bash -c 'exec bin/webhook-gateway 2>>"$0"' "$run_dir/spans-webhook-gateway.jsonl"
start worker bash -c 'exec bin/contact-worker 2>>"$0"' "$run_dir/spans-contact-worker.jsonl"
wait_ready webhook-gateway "http://$GATEWAY_LISTEN_ADDR/readyz"
wait_ready contact-worker "http://$WORKER_HTTP_ADDR/readyz"

# Show an event flowing: signed webhook -> gateway -> Kafka -> worker -> Contacts API.
# It carries a traceparent, as a traced AcmeCRM would: one trace from the
# request to the Contacts API call.
contact="run-$(date +%s)"
trace_id=$(openssl rand -hex 16)
echo "run: sending a signed contact.created webhook for contact $contact (trace $trace_id)" >&2
TRACEPARENT="00-$trace_id-$(openssl rand -hex 8)-01" GATEWAY_URL="http://$GATEWAY_LISTEN_ADDR/webhooks/acmecrm" \
  scripts/send-webhook.sh created "$contact" >&2
for _ in $(seq 1 100); do
  if body=$(curl -fsS "http://$STANDIN_ADDR/contacts/$contact" 2>/dev/null); then
    echo "run: the Contacts API stand-in now holds: $body" >&2
    break
  fi
  sleep 0.1
done
if [ "${OTEL_TRACES_EXPORTER:-}" = console ]; then
  sleep 1.5 # the span batches are written every OTEL_BSP_SCHEDULE_DELAY ms
  echo "run: the sample event's trace $trace_id (service, span, parent, name):" >&2
  command -v jq >/dev/null || apt-get install -y -qq jq >/dev/null 2>&1 || true
  jq -r --arg t "$trace_id" 'select(.SpanContext.TraceID == $t) |
      "run:   \((.Resource[] | select(.Key == "service.name") | .Value.Value) // "?")  \(.SpanContext.SpanID)  \(.Parent.SpanID)  \(.Name)"' \
    "$run_dir"/spans-*.jsonl >&2 || true
  echo "run: every span of it: jq 'select(.SpanContext.TraceID == \"$trace_id\")' $run_dir/spans-*.jsonl" >&2
else
  echo "run: spans exported over OTLP to ${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-$OTEL_EXPORTER_OTLP_ENDPOINT}; the sample event's trace id: $trace_id" >&2
fi

cat >&2 <<MSG
run: Kafka on $KAFKA_BROKERS, webhook-gateway on http://$GATEWAY_LISTEN_ADDR,
run: contact-worker on http://$WORKER_HTTP_ADDR (health, metrics), Contacts API stand-in on http://$STANDIN_ADDR
run: try: make demo   |   scripts/send-webhook.sh updated $contact   |   curl http://$STANDIN_ADDR/contacts/$contact
run: Ctrl-C stops everything.
MSG
wait

#!/usr/bin/env bash
# make bench: measures the gateway and the worker on the local broker, with
# Kafka's own producer and consumer perf tools as the reference points in the
# same run.
#
# The gateway's efficiency against a no-op HTTP server (scripts/bench-gateway.sh),
# the worker's concurrency benchmarks (Contacts API latency-bound, ordering
# by key against ordering by partition: scripts/bench-worker.sh) and the
# gateway under a burst (scripts/bench-burst.sh) follow.
#
# Each measurement is repeated RUNS times (default 5) and the median is
# reported beside min and max: this machine is shared and noisy, so one run
# says little. Results: bench/out/results.md (and the raw outputs beside it).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
runs=${RUNS:-5}
out=bench/out
mkdir -p "$out"
brokers=127.0.0.1:${KAFKA_PORT:-9092}
stamp=$(date +%s)
topic=bench-gw-$stamp
ref_topic=bench-ref-$stamp
secret=whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldA==

source scripts/bench-lib.sh
addr=$(free_addr)
need hey

make -s build
KAFKA_BROKERS=$brokers KAFKA_TOPIC=$topic KAFKA_DLQ_TOPIC=$topic-dlq GATEWAY_LISTEN_ADDR=$addr GATEWAY_METRICS_ADDR=$(free_addr) \
  GATEWAY_WEBHOOK_SECRETS=$secret GATEWAY_TIMESTAMP_TOLERANCE=2h LOG_LEVEL=warn \
  bin/webhook-gateway >"$out/gateway.log" 2>&1 &
gw=$!
trap 'kill -TERM $gw 2>/dev/null || true; wait $gw 2>/dev/null || true' EXIT
wait_ready "http://$addr/readyz"

# One signed request (the timestamp stays valid for the whole run).
body=$(printf '{"event_type":"contact.updated","event_id":"evt_bench","timestamp":"2025-05-17T17:06:39-07:00","data":{"contact_id":"%s","acme_first_name":"John","acme_last_name":"Doe","acme_email":"john.doe@example.com","acme_phone":"555-123-4567"}}' 1234)
printf '%s' "$body" >"$out/body.json"
size=${#body}
id=msg_bench; ts=$(date +%s)
sig=$(sign "$secret" "$id" "$ts" "$out/body.json")
hey_req=(-m POST -T application/json -D "$out/body.json" -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig")
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$addr/webhooks/acmecrm" -H 'Content-Type: application/json' \
  -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" --data-binary @"$out/body.json")
[ "$code" = 202 ] || { echo "bench: the signed sample got $code, not 202"; exit 1; }

kafka_tool() { scripts/kafka.sh tool "$@"; }
kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$brokers" --create --topic "$ref_topic" \
  --partitions 6 --replication-factor 1 >/dev/null 2>&1

single=(); single_ref=(); thr=(); thr_ref=(); p99=()
for i in $(seq 1 "$runs"); do
  echo "bench: run $i of $runs" >&2
  # Latency of one request at a time: the gateway (HTTP + verify + acks=all) ...
  hey -n 300 -c 1 "${hey_req[@]}" "http://$addr/webhooks/acmecrm" >"$out/single-$i.txt"
  single+=("$(awk '/ 50% in/ {print $3*1000}' "$out/single-$i.txt")")
  # ... and Kafka's own producer, one record at a time (paced), acks=all, idempotent.
  kafka_tool org.apache.kafka.tools.ProducerPerformance --topic "$ref_topic" --num-records 300 --record-size "$size" \
    --throughput 100 --producer-props bootstrap.servers="$brokers" acks=all enable.idempotence=true linger.ms=0 \
    >"$out/single-ref-$i.txt" 2>/dev/null
  single_ref+=("$(tail -1 "$out/single-ref-$i.txt" | sed -E 's/.* ([0-9.]+) ms 50th.*/\1/')")
  # Throughput with 64 concurrent senders ...
  hey -n 20000 -c 64 "${hey_req[@]}" "http://$addr/webhooks/acmecrm" >"$out/load-$i.txt"
  # hey sends n/c requests per sender (19,968 here); every one must be a 202.
  if grep -q 'Error distribution' "$out/load-$i.txt" || grep -A20 'Status code' "$out/load-$i.txt" | grep -E '^\s+\[[0-9]+\]' | grep -vq '\[202\]'; then
    echo "bench: not every load request got 202:"; sed -n '/Status code/,$p' "$out/load-$i.txt"; exit 1
  fi
  thr+=("$(awk '/Requests\/sec/ {print $2}' "$out/load-$i.txt")")
  p99+=("$(awk '/ 99% in/ {print $3*1000}' "$out/load-$i.txt")")
  # ... against Kafka's producer flat out, same record size and guarantees.
  kafka_tool org.apache.kafka.tools.ProducerPerformance --topic "$ref_topic" --num-records 200000 --record-size "$size" \
    --throughput -1 --producer-props bootstrap.servers="$brokers" acks=all enable.idempotence=true \
    >"$out/load-ref-$i.txt" 2>/dev/null
  thr_ref+=("$(tail -1 "$out/load-ref-$i.txt" | sed -E 's/.* records sent, ([0-9.]+) records\/sec.*/\1/')")
done

# The worker: Go benchmarks in tests/e2e on the same broker (gateway, worker
# and the Contacts API stand-in in one process), and Kafka's own consumer
# reading the same number of records as the reference.
kill -TERM $gw 2>/dev/null || true; wait $gw 2>/dev/null || true
go test -run '^$' -bench BenchmarkEventEndToEnd -benchtime 200x -count "$runs" ./tests/e2e/ 2>/dev/null | grep '^Benchmark' >"$out/e2e.txt"
e2e=($(awk '{printf "%.3f\n", $3/1e6}' "$out/e2e.txt"))
go test -run '^$' -bench BenchmarkWorkerThroughput -benchtime 1x -count "$runs" ./tests/e2e/ 2>/dev/null | grep '^Benchmark' >"$out/worker.txt"
wthr=($(awk '{for (i=1;i<=NF;i++) if ($i=="events/s") print $(i-1)}' "$out/worker.txt"))
cthr=()
for i in $(seq 1 "$runs"); do
  kafka_tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$brokers" --topic "$ref_topic" --messages 20000 \
    --group "bench-ref-$stamp-$i" >"$out/consumer-ref-$i.txt" 2>/dev/null
  cthr+=("$(tail -1 "$out/consumer-ref-$i.txt" | awk -F', *' '{print $6}')")
done

row() { # name unit values...
  local name=$1 unit=$2; shift 2
  printf '| %s | %s %s | %s | %s |\n' "$name" "$(printf '%s\n' "$@" | median)" "$unit" "$(printf '%s\n' "$@" | minmax)" "$*"
}
{
  echo "# make bench — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "$(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml) single node on loopback; body $size bytes; $runs runs each."
  echo
  echo "| measurement | median | min–max | runs |"
  echo "| --- | --- | --- | --- |"
  row "gateway: one request at a time, p50 latency (hey -c 1, 300 requests)" ms "${single[@]}"
  row "reference: Kafka ProducerPerformance, paced 100 rec/s, p50 latency" ms "${single_ref[@]}"
  row "gateway: 64 concurrent senders, requests/s (hey, 20,000 requests)" "req/s" "${thr[@]}"
  row "gateway: 64 concurrent senders, p99 latency" ms "${p99[@]}"
  row "reference: Kafka ProducerPerformance flat out, records/s (200,000 records)" "rec/s" "${thr_ref[@]}"
  row "end to end: one webhook at a time, 202 and applied by the worker (BenchmarkEventEndToEnd, 200 events)" ms "${e2e[@]}"
  row "worker: one member, instant Contacts API stand-in, 20,000-event backlog, 6 partitions (BenchmarkWorkerThroughput)" "events/s" "${wthr[@]}"
  row "reference: Kafka ConsumerPerformance, 20,000 records" "rec/s" "${cthr[@]}"
} | tee "$out/results.md"

# The gateway's CPU per webhook against the HTTP ceiling (a no-op server).
scripts/bench-gateway.sh

# The worker's concurrency against a Contacts API of fixed latency.
scripts/bench-worker.sh

# The gateway's memory under a burst of 1 MB bodies.
scripts/bench-burst.sh

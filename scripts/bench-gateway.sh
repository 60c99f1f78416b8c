#!/usr/bin/env bash
# The gateway's efficiency against the HTTP ceiling of this machine, in one
# run: wrk (CONNS connections, one signed ~236-byte body) against the gateway
# and, in alternating rounds, against tests/noop-http, a plain net/http
# server that reads the body and answers 202. Per round: requests/s, and the
# process CPU time (utime + stime from /proc) ÷ requests; for the gateway
# also heap allocations ÷ requests (go_memstats_mallocs_total from its
# /metrics) and the broker's CPU. Then p99 at half the gateway's median peak
# (hey, rate-limited), and one extra gateway round profiled through
# GATEWAY_PPROF_ADDR (not counted). Every gateway answer must be 202 and at
# least every answered request must be on the topic.
#
# RUNS_GW rounds each (default 5), ROUND seconds each (default 10); medians.
# The gateway logs at info, as in production (the access log is part of the
# cost). Results: bench/out/gateway-efficiency.md, the profile beside it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
source scripts/bench-lib.sh
runs=${RUNS_GW:-5}
round=${ROUND:-10}
conns=${CONNS:-64}
out=bench/out
mkdir -p "$out"
brokers=127.0.0.1:${KAFKA_PORT:-9092}
gw_addr=127.0.0.1:18082
pprof_addr=127.0.0.1:18083
noop_addr=127.0.0.1:18090
secret=whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldA==
topic=bench-eff-$(date +%s)
need wrk
need hey
make -s build
go build -o bin/noop-http ./tests/noop-http

body=$out/eff-body.json
printf '{"event_type":"contact.updated","event_id":"evt_bench","timestamp":"2025-05-17T17:06:39-07:00","data":{"contact_id":"1234","acme_first_name":"John","acme_last_name":"Doe","acme_email":"john.doe@example.com","acme_phone":"555-123-4567"}}' >"$body"
id=msg_bench; ts=$(date +%s)
sig=$(sign "$secret" "$id" "$ts" "$body")
lua=$out/eff-post.lua
cat >"$lua" <<LUA
wrk.method = "POST"
wrk.body = [[$(cat "$body")]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["webhook-id"] = "$id"
wrk.headers["webhook-timestamp"] = "$ts"
wrk.headers["webhook-signature"] = "v1,$sig"
LUA

KAFKA_BROKERS=$brokers KAFKA_TOPIC=$topic KAFKA_DLQ_TOPIC=$topic-dlq GATEWAY_LISTEN_ADDR=$gw_addr GATEWAY_PPROF_ADDR=$pprof_addr \
  GATEWAY_WEBHOOK_SECRETS=$secret GATEWAY_TIMESTAMP_TOLERANCE=2h GATEWAY_SHUTDOWN_DELAY=0s \
  bin/webhook-gateway >/dev/null 2>"$out/eff-gateway.stderr" &
gw=$!
bin/noop-http -addr "$noop_addr" &
noop=$!
trap 'kill -TERM $gw $noop 2>/dev/null || true; wait $gw $noop 2>/dev/null || true' EXIT
wait_ready "http://$gw_addr/readyz"
broker=$(cat ".cache/kafka/run-${KAFKA_PORT:-9092}/broker.pid" 2>/dev/null || echo "")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in clock ticks
hz=$(getconf CLK_TCK)
mallocs() { curl -fsS "http://$gw_addr/metrics" | awk '/^go_memstats_mallocs_total/ {printf "%d", $2}'; }

# load URL FILE: one wrk round; checks every answer was 2xx.
load() {
  wrk -t2 -c"$conns" -d"${round}s" --latency -s "$lua" "$1" >"$2"
  if grep -qE 'Non-2xx|Socket errors' "$2"; then
    echo "bench-gateway: not every answer was 2xx ($2):" >&2; cat "$2" >&2; exit 1
  fi
}
requests() { awk '/requests in/ {print $1}' "$1"; }
per_req() { awk -v a="$1" -v n="$2" -v s="$3" 'BEGIN {printf "%.1f", a * s / n}'; } # total scale requests

gw_rps=(); gw_us=(); gw_allocs=(); broker_us=(); noop_rps=(); noop_us=(); ratio=(); gw_total=0
for i in $(seq 1 "$runs"); do
  echo "bench-gateway: round $i of $runs" >&2
  c0=$(cpu_ticks $gw); m0=$(mallocs); b0=$([ -n "$broker" ] && cpu_ticks "$broker" || echo 0)
  load "http://$gw_addr/webhooks/acmecrm" "$out/eff-gateway-$i.txt"
  c1=$(cpu_ticks $gw); m1=$(mallocs); b1=$([ -n "$broker" ] && cpu_ticks "$broker" || echo 0)
  n=$(requests "$out/eff-gateway-$i.txt"); gw_total=$((gw_total + n))
  gw_rps+=("$(awk -v n="$n" -v d="$round" 'BEGIN {printf "%.0f", n / d}')")
  gw_us+=("$(per_req $((c1 - c0)) "$n" "$(awk -v hz="$hz" 'BEGIN {print 1e6 / hz}')")")
  gw_allocs+=("$(per_req $((m1 - m0)) "$n" 1)")
  broker_us+=("$(per_req $((b1 - b0)) "$n" "$(awk -v hz="$hz" 'BEGIN {print 1e6 / hz}')")")

  c0=$(cpu_ticks $noop)
  load "http://$noop_addr/" "$out/eff-noop-$i.txt"
  c1=$(cpu_ticks $noop)
  n=$(requests "$out/eff-noop-$i.txt")
  noop_rps+=("$(awk -v n="$n" -v d="$round" 'BEGIN {printf "%.0f", n / d}')")
  noop_us+=("$(per_req $((c1 - c0)) "$n" "$(awk -v hz="$hz" 'BEGIN {print 1e6 / hz}')")")
  ratio+=("$(awk -v a="${gw_rps[-1]}" -v b="${noop_rps[-1]}" 'BEGIN {printf "%.2f", a / b}')")
done

# p99 at half the median peak: hey paces each of its senders.
peak=$(printf '%s\n' "${gw_rps[@]}" | median)
half=$(awk -v p="$peak" 'BEGIN {printf "%.0f", p / 2}')
per_sender=$(awk -v h="$half" -v c="$conns" 'BEGIN {printf "%.0f", h / c}')
p99=(); half_rps=()
for i in $(seq 1 3); do
  hey -z "${round}s" -c "$conns" -q "$per_sender" -m POST -T application/json -D "$body" \
    -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" \
    "http://$gw_addr/webhooks/acmecrm" >"$out/eff-half-$i.txt"
  if grep -q 'Error distribution' "$out/eff-half-$i.txt" || sed -n '/Status code/,$p' "$out/eff-half-$i.txt" | grep -E '^\s+\[[0-9]+\]' | grep -vq '\[202\]'; then
    echo "bench-gateway: not every paced request got 202:" >&2; sed -n '/Status code/,$p' "$out/eff-half-$i.txt" >&2; exit 1
  fi
  gw_total=$((gw_total + $(sed -n '/Status code/,$p' "$out/eff-half-$i.txt" | awk '/\[202\]/ {print $2}')))
  p99+=("$(awk '/ 99% in/ {printf "%.2f", $3 * 1000}' "$out/eff-half-$i.txt")")
  half_rps+=("$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$out/eff-half-$i.txt")")
done

# One more gateway round, profiled (its figures are not counted).
curl -fsS -o "$out/gateway-cpu.pprof" "http://$pprof_addr/debug/pprof/profile?seconds=$((round - 2))" &
prof=$!
load "http://$gw_addr/webhooks/acmecrm" "$out/eff-gateway-profiled.txt"
wait $prof
gw_total=$((gw_total + $(requests "$out/eff-gateway-profiled.txt")))
go tool pprof -top -nodecount=30 "$out/gateway-cpu.pprof" >"$out/gateway-cpu-top.txt" 2>/dev/null
go tool pprof -top -cum -nodecount=40 "$out/gateway-cpu.pprof" >"$out/gateway-cpu-cum.txt" 2>/dev/null

# Nothing answered was lost: every answered request is on the topic (a
# request wrk cut off at the end of a round may be there too, unanswered).
stored=$(scripts/kafka.sh tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$brokers" --topic "$topic" 2>/dev/null | awk -F: '{s+=$3} END {print s+0}')
if [ "$stored" -lt "$gw_total" ]; then
  echo "bench-gateway: $gw_total requests answered 202 but only $stored records on $topic" >&2; exit 1
fi
scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$brokers" --delete --topic "$topic" >/dev/null 2>&1 || true

row() { # label unit values...
  local label=$1 unit=$2; shift 2
  printf '| %s | %s %s | %s | %s |\n' "$label" "$(printf '%s\n' "$@" | median)" "$unit" "$(printf '%s\n' "$@" | minmax)" "$*"
}
{
  echo "# make bench-gateway — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "$(nproc) cores; wrk -t2 -c$conns, ${round}-s rounds, gateway and no-op alternating, $runs rounds each; body $(wc -c <"$body") bytes; gateway at log level info; Kafka single node on loopback (acks=all, idempotent)."
  echo
  echo "| measurement | median | min–max | rounds |"
  echo "| --- | --- | --- | --- |"
  row "gateway: requests/s (all 202)" "req/s" "${gw_rps[@]}"
  row "no-op net/http server: requests/s (reference)" "req/s" "${noop_rps[@]}"
  row "gateway ÷ no-op, per pair of rounds" "" "${ratio[@]}"
  row "gateway: CPU per accepted webhook" "µs" "${gw_us[@]}"
  row "no-op: CPU per request" "µs" "${noop_us[@]}"
  row "gateway: heap allocations per accepted webhook (go_memstats_mallocs_total)" "" "${gw_allocs[@]}"
  row "broker: CPU per accepted webhook" "µs" "${broker_us[@]}"
  row "gateway at half the median peak ($half req/s asked): req/s served" "req/s" "${half_rps[@]}"
  row "gateway at half the median peak: p99 latency" "ms" "${p99[@]}"
  echo
  echo "$stored records on the topic for $gw_total answered requests."
  echo
  echo "CPU profile of one more gateway round ($out/gateway-cpu.pprof), top by own time:"
  echo
  echo '```'
  sed -n '1,/flat%/p' "$out/gateway-cpu-top.txt" | tail -n 3
  sed -n '/flat%/,$p' "$out/gateway-cpu-top.txt" | sed -n '2,21p'
  echo '```'
} | tee "$out/gateway-efficiency.md"

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
# Then the Kafka side alone at the gateway's median rate (tests/produce-rate:
# sarama's AsyncProducer bare, and kafka.Producer with waiting senders).
# BASELINE_REV=<revision> adds that revision's gateway to every round.
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
gw_addr=$(free_addr)
pprof_addr=$(free_addr)
noop_addr=$(free_addr)
base_addr=$(free_addr)
secret=whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldA==
topic=bench-eff-$(date +%s)
need wrk
need hey
make -s build
go build -o bin/noop-http ./tests/noop-http
go build -o bin/produce-rate ./tests/produce-rate

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

# start_gateway BINARY ADDR TOPIC [more env]: a gateway in the background.
start_gateway() {
  local bin=$1 addr=$2 topic=$3; shift 3
  env KAFKA_BROKERS=$brokers KAFKA_TOPIC=$topic KAFKA_DLQ_TOPIC=$topic-dlq GATEWAY_LISTEN_ADDR=$addr \
    GATEWAY_WEBHOOK_SECRETS=$secret GATEWAY_TIMESTAMP_TOLERANCE=2h GATEWAY_SHUTDOWN_DELAY=0s "$@" \
    "$bin" >/dev/null 2>>"$out/eff-gateway.stderr" &
}
gw_metrics=$(free_addr) # its /metrics (a port of its own); a baseline before that serves them on its webhook port
start_gateway bin/webhook-gateway "$gw_addr" "$topic" GATEWAY_PPROF_ADDR=$pprof_addr GATEWAY_METRICS_ADDR=$gw_metrics
gw=$!
bin/noop-http -addr "$noop_addr" &
noop=$!
base=
# BASELINE_REV=<git revision>: that revision's gateway takes part in every
# round too (same broker, same load), for before/after in one run.
if [ -n "${BASELINE_REV:-}" ]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$BASELINE_REV"
  (cd "$tree" && CGO_ENABLED=0 go build -trimpath -o "$repo/bin/webhook-gateway-baseline" ./cmd/webhook-gateway)
  git worktree remove --force "$tree"
  start_gateway bin/webhook-gateway-baseline "$base_addr" "$topic-base"
  base=$!
fi
trap 'kill -TERM $gw $noop $base 2>/dev/null || true; wait $gw $noop $base 2>/dev/null || true' EXIT
wait_ready "http://$gw_addr/readyz"
[ -z "$base" ] || wait_ready "http://$base_addr/readyz"
broker=$(cat ".cache/kafka/run-${KAFKA_PORT:-9092}/broker.pid" 2>/dev/null || echo "")

cpu_ticks() { if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; } # utime + stime, in ticks
hz=$(getconf CLK_TCK)
mallocs() { curl -fsS "http://$1/metrics" | awk '/^go_memstats_mallocs_total/ {printf "%d", $2}'; }

# load URL FILE: one wrk round; checks every answer was 2xx. wrk's own CPU
# seconds (user + system) go to FILE.cpu.
load() {
  /usr/bin/time -f '%U %S' -o "$2.cpu" wrk -t2 -c"$conns" -d"${round}s" --latency -s "$lua" "$1" >"$2"
  if grep -qE 'Non-2xx|Socket errors' "$2"; then
    echo "bench-gateway: not every answer was 2xx ($2):" >&2; cat "$2" >&2; exit 1
  fi
}
requests() { awk '/requests in/ {print $1}' "$1"; }
us() { awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}'; } # ticks requests
rps() { awk -v n="$1" -v d="$round" 'BEGIN {printf "%.0f", n / d}'; }

# gateway_round PID ADDR FILE [METRICS_ADDR]: one wrk round against a gateway
# (its /metrics at METRICS_ADDR, else on ADDR); prints
# "requests req/s µs/request allocs/request broker-µs/request machine-%".
gateway_round() {
  local c0 c1 m0 m1 b0 b1 n
  c0=$(cpu_ticks "$1"); m0=$(mallocs "${4:-$2}"); b0=$(cpu_ticks "$broker")
  load "http://$2/webhooks/acmecrm" "$3"
  c1=$(cpu_ticks "$1"); m1=$(mallocs "${4:-$2}"); b1=$(cpu_ticks "$broker")
  n=$(requests "$3")
  # The machine's share used by the gateway, the broker and wrk.
  echo "$n $(rps "$n") $(us $((c1 - c0)) "$n") $(awk -v m=$((m1 - m0)) -v n="$n" 'BEGIN {printf "%.1f", m / n}') $(us $((b1 - b0)) "$n")" \
    "$(awk -v t=$((c1 - c0 + b1 - b0)) -v hz="$hz" -v w="$(awk '{print $1 + $2}' "$3.cpu")" -v d="$round" -v c="$(nproc)" 'BEGIN {printf "%.0f", 100 * (t / hz + w) / (d * c)}')"
}

gw_rps=(); gw_us=(); gw_allocs=(); broker_us=(); machine=(); noop_rps=(); noop_us=(); ratio=(); gw_total=0
base_rps=(); base_us=(); base_allocs=(); base_ratio=(); base_total=0
for i in $(seq 1 "$runs"); do
  echo "bench-gateway: round $i of $runs" >&2
  read -r n r u a b m < <(gateway_round "$gw" "$gw_addr" "$out/eff-gateway-$i.txt" "$gw_metrics")
  gw_total=$((gw_total + n)); gw_rps+=("$r"); gw_us+=("$u"); gw_allocs+=("$a"); broker_us+=("$b"); machine+=("$m")
  if [ -n "$base" ]; then
    read -r n r u a b m < <(gateway_round "$base" "$base_addr" "$out/eff-baseline-$i.txt")
    base_total=$((base_total + n)); base_rps+=("$r"); base_us+=("$u"); base_allocs+=("$a")
  fi
  c0=$(cpu_ticks $noop)
  load "http://$noop_addr/" "$out/eff-noop-$i.txt"
  c1=$(cpu_ticks $noop)
  n=$(requests "$out/eff-noop-$i.txt")
  noop_rps+=("$(rps "$n")"); noop_us+=("$(us $((c1 - c0)) "$n")")
  ratio+=("$(awk -v a="${gw_rps[-1]}" -v b="${noop_rps[-1]}" 'BEGIN {printf "%.2f", a / b}')")
  [ -z "$base" ] || base_ratio+=("$(awk -v a="${base_rps[-1]}" -v b="${noop_rps[-1]}" 'BEGIN {printf "%.2f", a / b}')")
done

# p99 at half the median peak: hey paces each of its senders.
peak=$(printf '%s\n' "${gw_rps[@]}" | median)
half=$(awk -v p="$peak" 'BEGIN {printf "%.0f", p / 2}')
per_sender=$(awk -v h="$half" -v c="$conns" 'BEGIN {printf "%.0f", h / c}')
# paced ADDR FILE: hey at $per_sender req/s per sender; prints "202s p99-ms req/s".
paced() {
  hey -z "${round}s" -c "$conns" -q "$per_sender" -m POST -T application/json -D "$body" \
    -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" \
    "http://$1/webhooks/acmecrm" >"$2"
  if grep -q 'Error distribution' "$2" || sed -n '/Status code/,$p' "$2" | grep -E '^\s+\[[0-9]+\]' | grep -vq '\[202\]'; then
    echo "bench-gateway: not every paced request got 202:" >&2; sed -n '/Status code/,$p' "$2" >&2; exit 1
  fi
  echo "$(sed -n '/Status code/,$p' "$2" | awk '/\[202\]/ {print $2}') $(awk '/ 99% in/ {printf "%.2f", $3 * 1000}' "$2") $(awk '/Requests\/sec/ {printf "%.0f", $2}' "$2")"
}
p99=(); half_rps=(); base_p99=()
for i in $(seq 1 3); do
  read -r n p r < <(paced "$gw_addr" "$out/eff-half-$i.txt")
  gw_total=$((gw_total + n)); p99+=("$p"); half_rps+=("$r")
  if [ -n "$base" ]; then
    read -r n p r < <(paced "$base_addr" "$out/eff-half-baseline-$i.txt")
    base_total=$((base_total + n)); base_p99+=("$p")
  fi
done

# The Kafka side alone at the gateway's median rate: the same record through
# sarama's AsyncProducer (bare), and through kafka.Producer with senders
# waiting for their acks as the requests do (waiting).
bare=(); waiting=()
for i in $(seq 1 3); do
  for mode in bare waiting; do
    KAFKA_BROKERS=$brokers KAFKA_TOPIC=$topic-ref KAFKA_DLQ_TOPIC=$topic-ref-dlq bin/produce-rate -mode $mode -rate "$peak" \
      -duration "${round}s" -senders "$conns" -body "$body" >"$out/eff-$mode-$i.txt"
    v=$(sed -E 's/.*cpu_us_per_record=([0-9.]+).*/\1/' "$out/eff-$mode-$i.txt")
    if [ $mode = bare ]; then bare+=("$v"); else waiting+=("$v"); fi
  done
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
if [ -n "$base" ]; then
  stored_base=$(scripts/kafka.sh tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$brokers" --topic "$topic-base" 2>/dev/null | awk -F: '{s+=$3} END {print s+0}')
  if [ "$stored_base" -lt "$base_total" ]; then
    echo "bench-gateway: the baseline answered $base_total requests 202 but only $stored_base records are on $topic-base" >&2; exit 1
  fi
fi
scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$brokers" --delete --topic "$topic.*" >/dev/null 2>&1 || true

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
  if [ -n "$base" ]; then
    row "baseline gateway ($BASELINE_REV): requests/s (all 202)" "req/s" "${base_rps[@]}"
    row "baseline ÷ no-op" "" "${base_ratio[@]}"
    row "baseline: CPU per accepted webhook" "µs" "${base_us[@]}"
    row "baseline: heap allocations per accepted webhook" "" "${base_allocs[@]}"
  fi
  row "no-op net/http server: requests/s (reference)" "req/s" "${noop_rps[@]}"
  row "gateway ÷ no-op, per pair of rounds" "" "${ratio[@]}"
  row "gateway: CPU per accepted webhook" "µs" "${gw_us[@]}"
  row "no-op: CPU per request" "µs" "${noop_us[@]}"
  row "gateway: heap allocations per accepted webhook (go_memstats_mallocs_total)" "" "${gw_allocs[@]}"
  row "broker: CPU per accepted webhook" "µs" "${broker_us[@]}"
  row "CPU used by gateway + broker + wrk during the gateway rounds, of all cores" "%" "${machine[@]}"
  row "sarama AsyncProducer alone, the same record at $peak rec/s: CPU per record" "µs" "${bare[@]}"
  row "kafka.Producer, $conns senders waiting for acks, $peak rec/s: CPU per record" "µs" "${waiting[@]}"
  row "gateway at half the median peak ($half req/s asked): req/s served" "req/s" "${half_rps[@]}"
  row "gateway at half the median peak: p99 latency" "ms" "${p99[@]}"
  [ -z "$base" ] || row "baseline at the same rate: p99 latency" "ms" "${base_p99[@]}"
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

#!/usr/bin/env bash
# The gateway under a burst of large bodies: 600 concurrent senders, each
# posting signed ~1 MB bodies (under the 1 MiB limit), 1,200 requests; the
# gateway's peak RSS (VmHWM) with the default in-flight budget, with the
# chart's GOMEMLIMIT beside it, and ungated (a budget no burst reaches: the
# gateway before the budget) as the reference, in the same run. Only 202 and
# 503 may be answered, and every 202 must be on the topic. RUNS_BURST runs
# each (default 3); medians. Results: bench/out/burst.md.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
runs=${RUNS_BURST:-3}
out=bench/out
mkdir -p "$out"
brokers=127.0.0.1:${KAFKA_PORT:-9092}
secret=whsec_YmVuY2gtc2VjcmV0LWJlbmNoLXNlY3JldA==
source scripts/bench-lib.sh
addr=$(free_addr)
need hey
make -s build

# One signed ~1 MB body (the timestamp stays valid for the run).
pad=$(head -c 999000 /dev/zero | tr '\0' 'x')
printf '{"event_type":"contact.updated","event_id":"evt_burst","timestamp":"2025-05-17T17:06:39Z","data":{"contact_id":"burst"},"pad":"%s"}' "$pad" >"$out/burst-body.json"
id=msg_burst; ts=$(date +%s)
sig=$(sign "$secret" "$id" "$ts" "$out/burst-body.json")
on_topic() { # records on a topic
  scripts/kafka.sh tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$brokers" --topic "$1" 2>/dev/null |
    awk -F: '{s+=$3} END {print s+0}'
}

# burst NAME BUDGET GOMEMLIMIT: one run; prints "peak_MiB accepted refused".
burst() {
  local name=$1 budget=$2 memlimit=$3 topic gw peak codes accepted refused other stored
  topic=bench-burst-$name-$(date +%s%N)
  env ${memlimit:+GOMEMLIMIT=$memlimit} KAFKA_BROKERS=$brokers KAFKA_TOPIC=$topic KAFKA_DLQ_TOPIC=$topic-dlq GATEWAY_LISTEN_ADDR=$addr GATEWAY_METRICS_ADDR=$(free_addr) \
    GATEWAY_WEBHOOK_SECRETS=$secret GATEWAY_TIMESTAMP_TOLERANCE=2h GATEWAY_MAX_INFLIGHT_BYTES=$budget GATEWAY_SHUTDOWN_DELAY=0s \
    KAFKA_TOPIC_PARTITIONS=6 LOG_LEVEL=warn bin/webhook-gateway >"$out/burst-$name.log" 2>&1 &
  gw=$!
  wait_ready "http://$addr/readyz" >&2
  hey -n 1200 -c 600 -t 60 -m POST -T application/json -D "$out/burst-body.json" \
    -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" \
    "http://$addr/webhooks/acmecrm" >"$out/burst-$name-hey.txt"
  peak=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$gw/status")
  kill -TERM $gw; wait $gw || true
  codes=$(sed -n '/Status code distribution/,/^$/p' "$out/burst-$name-hey.txt")
  accepted=$(awk '/\[202\]/ {print $2}' <<<"$codes"); accepted=${accepted:-0}
  refused=$(awk '/\[503\]/ {print $2}' <<<"$codes"); refused=${refused:-0}
  other=$(grep -E '^\s+\[[0-9]+\]' <<<"$codes" | grep -vE '\[(202|503)\]' || true)
  if [ -n "$other" ] || grep -q 'Error distribution' "$out/burst-$name-hey.txt"; then
    echo "bench-burst: $name answered other than 202/503:" >&2; sed -n '/Status code/,$p' "$out/burst-$name-hey.txt" >&2; exit 1
  fi
  stored=$(on_topic "$topic")
  [ "$stored" = "$accepted" ] || { echo "bench-burst: $name: $accepted answered 202 but $stored records on $topic" >&2; exit 1; }
  scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$brokers" --delete --topic "$topic" >/dev/null 2>&1 || true
  echo "$peak $accepted $refused"
}

declare -A peaks acc ref
for i in $(seq 1 "$runs"); do
  for v in "default:33554432:" "default-gomemlimit:33554432:230MiB" "ungated:1099511627776:"; do
    IFS=: read -r name budget memlimit <<<"$v"
    echo "bench-burst: run $i of $runs, $name" >&2
    read -r p a r < <(burst "$name" "$budget" "$memlimit")
    peaks[$name]+="$p "; acc[$name]+="$a "; ref[$name]+="$r "
  done
done
{
  echo "# make bench — gateway burst — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "600 concurrent senders, 1,200 signed bodies of $(wc -c <"$out/burst-body.json") bytes; $runs runs each; peak RSS = VmHWM."
  echo
  echo "| gateway | peak RSS median (min–max), MiB | 202 per run | 503 per run |"
  echo "| --- | --- | --- | --- |"
  for name in default default-gomemlimit ungated; do
    printf '| %s | %s (%s) | %s| %s|\n' "$name" "$(tr ' ' '\n' <<<"${peaks[$name]}" | grep . | median)" \
      "$(tr ' ' '\n' <<<"${peaks[$name]}" | grep . | minmax)" "${acc[$name]}" "${ref[$name]}"
  done
  echo
  echo "default: GATEWAY_MAX_INFLIGHT_BYTES=33554432 (32 MiB); default-gomemlimit: GOMEMLIMIT=230MiB as the chart sets for a 256Mi limit; ungated: a 1 TiB budget. Every 202 was on the topic."
} | tee "$out/burst.md"

#!/usr/bin/env bash
# The worker's concurrency benchmarks (tests/e2e/bench_worker_test.go) on the
# local broker: a Contacts API stand-in answering in 5 ms, the default
# ordering (key) against ordering=partition (one event at a time per
# partition, the design before per-key concurrency) as the reference line,
# in the same run. Each is repeated RUNS times (default 5); the median is
# reported beside min and max. Results: bench/out/worker-concurrency.md.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
runs=${RUNS:-5}
fault_runs=${FAULT_RUNS:-3}
out=bench/out
mkdir -p "$out"
raw=$out/worker-concurrency.txt

# BASELINE_REV=<rev>: the default line runs this tree's worker and that
# revision's, both as built binaries, in alternation: the reference of the
# same run (before/after a change).
if [ -n "${BASELINE_REV:-}" ]; then
  bins=$(mktemp -d)
  tree=$(mktemp -d)
  trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true; rm -rf "$bins" "$tree"' EXIT
  git worktree add --detach "$tree" "$BASELINE_REV" >/dev/null
  (cd "$tree" && CGO_ENABLED=0 go build -trimpath -o "$bins/contact-worker-baseline" ./cmd/contact-worker)
  CGO_ENABLED=0 go build -trimpath -o "$bins/contact-worker-current" ./cmd/contact-worker
  export BENCH_WORKER_BINS="current=$bins/contact-worker-current,baseline=$bins/contact-worker-baseline"
  baseline=$(git rev-parse --short "$BASELINE_REV")
fi

# The runs alternate (each benchmark once per round), so that a drift of the
# machine weighs on every line alike, not on the last ones.
e2e=$repo/$out/e2e.test
go test -c -o "$e2e" ./tests/e2e/
{
  for i in $(seq 1 "$runs"); do
    benches='BenchmarkWorkerLatencyBound|BenchmarkWorkerFailingContact|BenchmarkContactsClientCeiling|BenchmarkStateRebuild'
    # The misbehaving-API benchmarks take minutes a round: FAULT_RUNS rounds.
    [ "$i" -le "$fault_runs" ] && benches="$benches|BenchmarkWorkerPartialOutage|BenchmarkWorkerRateLimited"
    (cd tests/e2e && "$e2e" -test.run '^$' -test.bench "$benches" \
      -test.benchtime 1x -test.count 1 -test.timeout 60m 2>&1)
  done
  go test -run '^$' -bench 'BenchmarkStateMemory' -benchtime 1x -count "$runs" ./pkg/contactstate/ 2>&1
} | tee "$raw" | grep -E '^(Benchmark|--- FAIL|FAIL)' >&2 || true
if grep -qE '^(--- FAIL|FAIL)' "$raw"; then
  echo "bench-worker: a benchmark failed (see $raw)" >&2
  exit 1
fi

# values NAME UNIT: the values of metric UNIT of benchmark NAME, one a line.
values() {
  awk -v name="$1" -v unit="$2" '$1 ~ "^"name"-[0-9]+$" { for (i = 3; i <= NF; i++) if ($i == unit) print $(i-1) }' "$raw"
}
source scripts/bench-lib.sh
sum() { awk '{s+=$1} END {print s+0}'; }
row() { # label name unit [checked]
  local v checks=—
  v=$(values "$2" "$3")
  [ "${4:-}" = checked ] && checks="$(values "$2" order-violations | sum) / $(values "$2" overlaps | sum)"
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$(median <<<"$v")" "$(minmax <<<"$v")" "$(tr '\n' ' ' <<<"$v")" "$checks"
}
ratio() { # name3 name1 unit: median of the first over median of the second
  awk -v a="$(values "$1" "$3" | median)" -v b="$(values "$2" "$3" | median)" 'BEGIN {printf "%.2f", a/b}'
}
lb=BenchmarkWorkerLatencyBound
fc=BenchmarkWorkerFailingContact
{
  echo "# make bench — worker concurrency — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "$(nproc) cores; Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml) single node on loopback; Contacts API stand-in answering in 5 ms; $runs runs each."
  echo
  echo "| measurement | median | min–max | runs | order violations / overlapping calls (all runs) |"
  echo "| --- | --- | --- | --- | --- |"
  default="$lb/ordering=key/replicas=1/max_in_flight=256"
  distinct="$default/distinct_contacts"
  if [ -n "${BASELINE_REV:-}" ]; then
    row "ordering=key: 1 worker, max in flight 256 (default), 20,000 events / 2,000 contacts / 6 partitions, this tree's binary, events/s" "$default/worker=current" events/s checked
    row "ordering=key: the same, the worker of $baseline (reference), events/s" "$default/worker=baseline" events/s checked
    row "ordering=key: the same over 20,000 contacts of one event each, this tree's binary, events/s" "$distinct/worker=current" events/s checked
    row "ordering=key: the same, the worker of $baseline (reference), events/s" "$distinct/worker=baseline" events/s checked
  else
    row "ordering=key: 1 worker, max in flight 256, 20,000 contacts of one event each, events/s" "$distinct" events/s checked
  fi
  for o in key partition; do
    if [ -z "${BASELINE_REV:-}" ] || [ "$o" != key ]; then
      row "ordering=$o: 1 worker, max in flight 256 (default), 20,000 events / 2,000 contacts / 6 partitions, events/s" "$lb/ordering=$o/replicas=1/max_in_flight=256" events/s checked
    fi
    row "ordering=$o: 1 worker, max in flight 16, events/s" "$lb/ordering=$o/replicas=1/max_in_flight=16" events/s checked
    row "ordering=$o: 3 workers, max in flight 16 each, events/s" "$lb/ordering=$o/replicas=3/max_in_flight=16" events/s checked
    row "ordering=$o: one contact 503 for 20 s, seconds until the 599 others' 5,990 events are applied" "$fc/ordering=$o" s-others-applied checked
  done
  for c in 16 48 256; do
    row "ceiling: the Contacts API client alone, $c calls at once on the same stand-in, calls/s" "BenchmarkContactsClientCeiling/conc=$c" calls/s
  done
  if [ -n "${BASELINE_REV:-}" ]; then
    row "Contacts API calls per event, default line" "$default/worker=current" calls/event
  else
    row "Contacts API calls per event, default line" "$default" calls/event
  fi
  row "state: rebuilding a partition of 1,000,000 contacts from the state topic on assignment, seconds" BenchmarkStateRebuild s-rebuild
  row "state: the same, contacts/s" BenchmarkStateRebuild contacts/s
  row "state: heap held per contact known, after that rebuild, bytes" BenchmarkStateRebuild bytes/contact
  row "state: heap held per contact, 1,000,000 contacts put in memory (no Kafka), bytes" BenchmarkStateMemory bytes/contact
  # A misbehaving Contacts API: each line for this tree's worker and, with
  # BASELINE_REV, the baseline's.
  po=BenchmarkWorkerPartialOutage
  rl=BenchmarkWorkerRateLimited
  ws=-
  [ -n "${BASELINE_REV:-}" ] && ws="current baseline"
  for w in $ws; do
    suffix="" who=""
    case $w in
      current) suffix=/worker=current who=", this tree's worker" ;;
      baseline) suffix=/worker=baseline who=", the worker of $baseline" ;;
    esac
    row "partial outage: 600 contacts × 50 events, 1 worker, no fault (reference)$who, seconds until every event is applied" "$po/fault=none$suffix" s-healthy-applied checked
    row "partial outage: 30 % of the contacts 503 for 30 s$who, seconds until the healthy contacts' events are applied" "$po/fault=30%$suffix" s-healthy-applied checked
    row "partial outage: the same, seconds from the fault's end until the failing contacts' events are applied" "$po/fault=30%$suffix" s-failing-after-fault
    row "partial outage: the same, faults of the whole API declared" "$po/fault=30%$suffix" api-faults
    row "partial outage: the same, dead letters" "$po/fault=30%$suffix" dead-letters
    echo "| partial outage$who: healthy contacts done ÷ the same run without the fault | $(ratio "$po/fault=30%$suffix" "$po/fault=none$suffix" s-healthy-applied) | | | |"
    for c in "burst=2000/replicas=3" "burst=100/replicas=3" "burst=100/replicas=3/ceiling=650"; do
      row "rate limit 2,000 calls/s ($c), 3 workers, 24,000 events$who, events/s first call to last" "$rl/limit=2000/$c$suffix" events/s checked
      row "rate limit ($c)$who, % of calls answered 429" "$rl/limit=2000/$c$suffix" %429
      row "rate limit ($c)$who, dead letters" "$rl/limit=2000/$c$suffix" dead-letters
    done
  done
  echo
  if [ -n "${BASELINE_REV:-}" ]; then
    echo "This tree ÷ $baseline (medians of the same run): default line $(ratio "$default/worker=current" "$default/worker=baseline" events/s), 20,000 contacts of one event each $(ratio "$distinct/worker=current" "$distinct/worker=baseline" events/s)."
  fi
  echo
  echo "3 workers ÷ 1 worker at max in flight 16 (medians): ordering=key $(ratio "$lb/ordering=key/replicas=3/max_in_flight=16" "$lb/ordering=key/replicas=1/max_in_flight=16" events/s), ordering=partition $(ratio "$lb/ordering=partition/replicas=3/max_in_flight=16" "$lb/ordering=partition/replicas=1/max_in_flight=16" events/s); the client alone, 48 ÷ 16 calls at once: $(ratio BenchmarkContactsClientCeiling/conc=48 BenchmarkContactsClientCeiling/conc=16 calls/s)."
} | tee "$out/worker-concurrency.md"

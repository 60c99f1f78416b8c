#!/usr/bin/env bash
# make bench-freshness: how old a change is when it reaches the Contacts API
# under load (tests/e2e/bench_freshness_test.go): signed webhooks through
# one gateway at 50 % and 90 % of what one worker applies at a 5 ms
# stand-in (measured first, same run), to 1 and 3 workers, BENCH_FRESHNESS_SECONDS
# (60) each, against an idle reference; RUNS (3) runs, medians.
# Results: bench/out/freshness.md.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
runs=${RUNS:-3}
out=bench/out
mkdir -p "$out"
raw=$out/freshness.txt
e2e=$repo/$out/e2e.test
go test -c -o "$e2e" ./tests/e2e/
for i in $(seq 1 "$runs"); do
  (cd tests/e2e && "$e2e" -test.run '^$' -test.bench '^BenchmarkFreshness$' -test.benchtime 1x -test.count 1 -test.timeout 60m 2>&1)
done | tee "$raw" | grep -E '^(Benchmark|--- FAIL|FAIL)' >&2 || true
if grep -qE '^(--- FAIL|FAIL)' "$raw"; then
  echo "bench-freshness: a benchmark failed (see $raw)" >&2
  exit 1
fi
source scripts/bench-lib.sh
values() { awk -v name="$1" -v unit="$2" '$1 ~ "^"name"-[0-9]+$" { for (i = 3; i <= NF; i++) if ($i == unit) print $(i-1) }' "$raw"; }
{
  echo "# make bench-freshness — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "$(nproc) cores; Kafka on loopback; stand-in answering in 5 ms; gateway, workers and stand-in in one process; $runs runs, medians (min–max)."
  echo
  echo "| configuration | target webhooks/s | sent/s | p50 ms | p99 ms | max ms | warm-up max ms |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for c in 'idle/workers=1' 'load=50%/workers=1' 'load=90%/workers=1' 'load=50%/workers=3' 'load=90%/workers=3'; do
    n="BenchmarkFreshness/$c"
    cell() { local v; v=$(values "$n" "$1"); printf '%s (%s)' "$(median <<<"$v")" "$(minmax <<<"$v")"; }
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$(values "$n" target/s | median)" "$(cell sent/s)" "$(cell p50-ms)" "$(cell p99-ms)" "$(cell max-ms)" "$(cell warmup-max-ms)"
  done
  v=$(values 'BenchmarkFreshness/capacity/workers=1' events/s)
  echo
  echo "Capacity of one worker (the 100 % the loads are of), events/s: $(median <<<"$v") ($(minmax <<<"$v"))."
} >"$out/freshness.md"
cat "$out/freshness.md"

#!/usr/bin/env bash
# Throughput of `ollama-guard scan` on one core: default mode (built-in rules) and
# --splunk-compat, over a realistic generated Ollama log (tests/perf/gen_gin_corpus.py).
#
# Usage: tests/perf/scan_bench.sh [LINES] [RUNS]
#   LINES defaults to 2000000, RUNS to 3. env CORPUS=FILE reuses an existing log instead of
#   generating one (it is then kept); otherwise the corpus is written once to a temp dir and
#   removed at exit. env SLOW_FRACTION=F generates a row-heavy corpus (gen_gin_corpus.py
#   --slow-fraction F; 0.1 gives about 200 000 rows per 2 M lines). Runs are pinned to CPU 0
#   with taskset when available; env THREADS=N passes `--threads N` (default 1, one core) and
#   PIN=0 runs unpinned (for the multi-core figures).
set -euo pipefail
cd "$(dirname "$0")/../.."
lines=${1:-2000000}
runs=${2:-3}
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/ollama-guard
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

corpus=${CORPUS:-}
if [ -z "$corpus" ]; then
  corpus="$work/ollama.log"
  echo "generating $lines lines..." >&2
  python3 tests/perf/gen_gin_corpus.py "$corpus" "$lines" --slow-fraction "${SLOW_FRACTION:-0}"
fi
total_lines=$(wc -l <"$corpus")
bytes=$(stat -c %s "$corpus")
pin=()
if [ "${PIN:-1}" != 0 ] && command -v taskset >/dev/null; then pin=(taskset -c 0); fi

# The page cache is warmed before every run: the first run must not measure the disk, and on a
# VM a file left alone for a minute can come back from the page cache at a tenth of the speed.

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

bench() {
  local label=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    local t0 t1
    cat "$corpus" >/dev/null
    t0=$(date +%s.%N)
    "${pin[@]}" "$bin" scan --threads "${THREADS:-1}" --format jsonl "$@" "$corpus" >/dev/null 2>"$work/summary"
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  local med
  med=$(printf '%s\n' "${times[@]}" | median)
  awk -v l="$label" -v n="$total_lines" -v b="$bytes" -v t="$med" -v all="${times[*]}" 'BEGIN {
    printf "%-16s median %.3f s  %6.2f M lines/s  %7.1f MB/s   (runs: %s)\n",
      l, t, n / t / 1e6, b / t / 1e6, all }'
  sed 's/^/    /' "$work/summary"
}

echo "corpus: $total_lines lines, $((bytes / 1000000)) MB; ${pin[*]:-unpinned}; --threads ${THREADS:-1}; $runs runs each"
bench "default rules"
bench "splunk-compat" --splunk-compat

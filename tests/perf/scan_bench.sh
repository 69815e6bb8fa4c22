#!/usr/bin/env bash
# Throughput of `ollama-guard scan`: default mode (built-in rules) and --splunk-compat, over a
# realistic generated Ollama log (tests/perf/gen_gin_corpus.py), on one core and, in the same
# interleaved rounds, on several threads.
#
# Usage: tests/perf/scan_bench.sh [LINES] [RUNS]
#   LINES defaults to 2000000, RUNS (rounds) to 3. env CORPUS=FILE reuses an existing log
#   instead of generating one (it is then kept); otherwise the corpus is written once to a temp
#   dir and removed at exit. env SLOW_FRACTION=F generates a row-heavy corpus
#   (gen_gin_corpus.py --slow-fraction F; 0.1 gives about 200 000 rows per 2 M lines).
#   env THREADS="1 2" lists the `--threads` counts to measure (default 1). A count of 1 runs
#   pinned to CPU 0 with taskset when available (PIN=0: unpinned); larger counts run unpinned.
#   env MODES="default compat" lists the modes (default both). env GUARD_BIN=path measures that
#   build instead of building the work tree.
#
# Every round runs every (mode, thread count) once, in an order that alternates from round to
# round, so a machine whose speed drifts (a shared VM does, by 25 % within minutes) moves all
# targets alike. Printed per target: the median wall time, lines/s and MB/s, every run; and for
# a count above 1 its speed-up: the median over the rounds of (one thread's wall time / this
# target's) within the round, which is what the ">= 1.8x on 2 cores" target reads.
set -euo pipefail
cd "$(dirname "$0")/../.."
lines=${1:-2000000}
runs=${2:-3}
read -r -a counts <<<"${THREADS:-1}"
read -r -a modes <<<"${MODES:-default compat}"
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
if [ -n "${GUARD_BIN:-}" ]; then
  bin=$GUARD_BIN
else
  cargo build --release --quiet
  bin=${CARGO_TARGET_DIR:-target}/release/ollama-guard
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for c in "${counts[@]}"; do
  case $c in '' | *[!0-9]* | 0) echo "THREADS: '$c' is not a thread count" >&2; exit 2 ;; esac
done
for m in "${modes[@]}"; do
  case $m in default | compat) ;; *) echo "MODES: '$m' is not 'default' or 'compat'" >&2; exit 2 ;; esac
done

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

# targets: "mode threads"; times[target] = the wall times, one per round, space-separated.
targets=()
for m in "${modes[@]}"; do for c in "${counts[@]}"; do targets+=("$m $c"); done; done
declare -A times=()

run_one() {
  local mode=$1 threads=$2 t0 t1
  local args=(scan --threads "$threads" --format jsonl)
  [ "$mode" = compat ] && args+=(--splunk-compat)
  local p=()
  [ "$threads" = 1 ] && p=("${pin[@]}")
  cat "$corpus" >/dev/null
  t0=$(date +%s.%N)
  "${p[@]}" "$bin" "${args[@]}" "$corpus" >/dev/null 2>"$work/summary.$mode.$threads"
  t1=$(date +%s.%N)
  times["$mode $threads"]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') "
}

for round in $(seq "$runs"); do
  order=("${targets[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=()
    for ((i = ${#targets[@]} - 1; i >= 0; i--)); do order+=("${targets[$i]}"); done
  fi
  for t in "${order[@]}"; do
    # Word splitting is wanted: "mode threads".
    # shellcheck disable=SC2086
    run_one $t
  done
done

echo "corpus: $total_lines lines, $((bytes / 1000000)) MB; --threads ${counts[*]} (1: ${pin[*]:-unpinned}); $runs interleaved rounds"
for t in "${targets[@]}"; do
  read -r mode threads <<<"$t"
  label="$mode, --threads $threads"
  med=$(tr ' ' '\n' <<<"${times[$t]}" | sed '/^$/d' | median)
  awk -v l="$label" -v n="$total_lines" -v b="$bytes" -v t="$med" -v all="${times[$t]% }" 'BEGIN {
    printf "%-26s median %.3f s  %6.2f M lines/s  %7.1f MB/s   (runs: %s)\n",
      l, t, n / t / 1e6, b / t / 1e6, all }'
  if [ "$threads" != 1 ] && [ -n "${times["$mode 1"]:-}" ]; then
    paste -d' ' <(tr ' ' '\n' <<<"${times["$mode 1"]}" | sed '/^$/d') \
      <(tr ' ' '\n' <<<"${times[$t]}" | sed '/^$/d') |
      awk '{print $1 / $2}' | median |
      awk -v l="$label" '{ printf "%-26s speed-up over one thread: %.2fx (median of the rounds)\n", l, $1 }'
  fi
  sed 's/^/    /' "$work/summary.$mode.$threads"
done

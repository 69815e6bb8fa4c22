#!/usr/bin/env bash
# ollama-guard against nginx in every regime of the performance contract, in one command:
#
#   tests/perf/regimes.sh [SECONDS] [ROUNDS]        (default 5 s x 5 rounds)
#
# Regimes (docs/performance.md):
#   tags_fast         GET /api/tags, fast upstream (nginx `return 200`), 32 connections, no access logs
#   tags_fast_logged  the same, both writing their per-request access log (nginx's default
#                     combined log, the guard's GIN log) to a file
#   ndjson_sim        POST /api/generate, 20 NDJSON frames back to back (simulator --fast), 32 conns
#   tags_sim          GET /api/tags against the simulator (the slower upstream)
#   p50_1conn         GET /api/tags, fast upstream, 1 connection: added p50 over the upstream direct
#
# Equal worker counts: nginx `worker_processes 2`, the guard `--workers 2`. Rounds are interleaved
# (every regime and target once per round) so drift on a shared machine hits all alike; the
# summary prints medians and guard/nginx ratios from this one run. env GUARD_BIN=path benchmarks
# that build instead of building the work tree; env BASELINE_BIN=path adds another build as the
# target "base" in every regime (same rounds, ratios base/nginx and guard/base: before/after
# figures of a change, or a profile-guided build against a plain one).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
rounds=${2:-5}
. tests/perf/common.sh
need wrk nginx python3 curl

# --- upstreams -------------------------------------------------------------------------------
start_simulator
tags_body
start_fast_upstream

# --- fronts ----------------------------------------------------------------------------------
front_nginx nginx_fast "$fast" off; front_guard guard_fast "$fast" off
front_nginx nginx_fast_log "$fast" on; front_guard guard_fast_log "$fast" on
front_nginx nginx_sim "$sim" off; front_guard guard_sim "$sim" off
front_port[direct_fast]=$fast
base=
if [ -n "${BASELINE_BIN:-}" ]; then
  guard_bin=$bin
  bin=$BASELINE_BIN
  front_guard base_fast "$fast" off; front_guard base_fast_log "$fast" on; front_guard base_sim "$sim" off
  bin=$guard_bin
  base=yes
fi
for p in "${front_port[@]}"; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$p/api/tags" && break; sleep 0.05; done
done

ndjson_script

# regime -> "path connections script targets..."
declare -A regime=(
  [tags_fast]="/api/tags 32 - nginx_fast guard_fast"
  [tags_fast_logged]="/api/tags 32 - nginx_fast_log guard_fast_log"
  [ndjson_sim]="/api/generate 32 $work/ndjson.lua nginx_sim guard_sim"
  [tags_sim]="/api/tags 32 - nginx_sim guard_sim"
  [p50_1conn]="/api/tags 1 - direct_fast nginx_fast guard_fast"
)
order=(tags_fast tags_fast_logged ndjson_sim tags_sim p50_1conn)
if [ -n "$base" ]; then
  regime[tags_fast]+=" base_fast"; regime[tags_fast_logged]+=" base_fast_log"
  regime[ndjson_sim]+=" base_sim"; regime[tags_sim]+=" base_sim"; regime[p50_1conn]+=" base_fast"
fi
results="$work/results.tsv"; : >"$results"
echo "seconds=$secs rounds=$rounds workers=$workers (nginx worker_processes=$workers)"
for r in $(seq "$rounds"); do
  for g in "${order[@]}"; do
    read -r path conns script targets <<<"${regime[$g]}"
    for t in $targets; do
      args=(-t2 -c"$conns" -d"${secs}s" --latency)
      [ "$conns" = 1 ] && args=(-t1 -c1 -d"${secs}s" --latency)
      [ "$script" != - ] && args+=(-s "$script")
      out=$(wrk "${args[@]}" "http://127.0.0.1:${front_port[$t]}$path")
      rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
      p50=$(awk '$1=="50%" {print $2}' <<<"$out")
      p99=$(awk '$1=="99%" {print $2}' <<<"$out")
      errs=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr '\n' ' ')
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$g" "${t%%_*}" "$rps" "$p50" "$p99" | tee -a "$results"
      [ -n "$errs" ] && { echo "error: $t answered errors in $g: $errs" >&2; exit 1; }
    done
  done
done
python3 - "$results" <<'PY'
import statistics, sys
def ms(t):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * f
    return float(t)
by = {}
for line in open(sys.argv[1]):
    r, g, t, rps, p50, p99 = line.rstrip("\n").split("\t")
    by.setdefault((g, t), []).append((float(rps), ms(p50), ms(p99)))
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in by.items()}
print(f"\n{'regime':18} {'target':7} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
for (g, t), (rps, p50, p99) in med.items():
    print(f"{g:18} {t:7} {rps:10.0f} {p50:9.3f} {p99:9.3f}")
pairs = [("guard", "nginx")]
if any(t == "base" for _, t in med):
    pairs += [("base", "nginx"), ("guard", "base")]
print(f"\n{'regime':18}" + "".join(f" {a + '/' + b + ' req/s':>17} {a + '/' + b + ' p99':>15}" for a, b in pairs))
for g in dict.fromkeys(k[0] for k in med):
    cells = [
        f" {med[(g, a)][0] / med[(g, b)][0]:17.3f} {med[(g, a)][2] / med[(g, b)][2]:15.3f}"
        for a, b in pairs
        if (g, a) in med and (g, b) in med
    ]
    if cells:
        print(f"{g:18}" + "".join(cells))
if ("p50_1conn", "direct") in med:
    d = med[("p50_1conn", "direct")][1]
    for t in ("nginx", "guard", "base"):
        if ("p50_1conn", t) in med:
            print(f"added p50 at 1 connection, {t}: {1000 * (med[('p50_1conn', t)][1] - d):+.0f} us")
PY

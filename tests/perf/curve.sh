#!/usr/bin/env bash
# Throughput and p99 against the number of connections, ollama-guard against nginx, in one command:
#
#   tests/perf/curve.sh [SECONDS] [ROUNDS] [CONNECTIONS...]   (default 3 s, 1 round, 1 4 16 64 256 1024)
#
# `GET /api/tags` from the fast upstream (nginx serving the simulator's /api/tags body), wrk
# `-t2 -cN` (`-t1 -c1` for one connection) against nginx `proxy_pass` and ollama-guard (default
# rules), equal worker counts (WORKERS, default 2). Every wrk connection comes from 127.0.0.1, so
# the guard runs with `--max-connections-per-source 0` (its default per-source limit, 256, would
# answer the rest 503). Points are interleaved (nginx then the guard at each count, every round);
# the table gives medians and the guard/nginx ratio. env GUARD_BIN=path measures that build.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-3}
rounds=${2:-1}
shift $(($# < 2 ? $# : 2))
counts=("$@")
[ ${#counts[@]} -eq 0 ] && counts=(1 4 16 64 256 1024)
. tests/perf/common.sh
need wrk nginx python3 curl
fast_upstream_only
front_nginx nginx "$fast" off
GUARD_ARGS="--max-connections-per-source 0" front_guard guard "$fast" off
for p in "${front_port[@]}"; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$p/api/tags" && break; sleep 0.05; done
done
# More connections than the default open-file limit allows wrk and the fronts.
ulimit -n 65536 2>/dev/null || true
results="$work/results.tsv"; : >"$results"
echo "seconds=$secs rounds=$rounds workers=$workers"
for r in $(seq "$rounds"); do
  for c in "${counts[@]}"; do
    for t in nginx guard; do
      args=(-t2 -c"$c" -d"${secs}s" --latency)
      [ "$c" = 1 ] && args=(-t1 -c1 -d"${secs}s" --latency)
      out=$(wrk "${args[@]}" "http://127.0.0.1:${front_port[$t]}/api/tags")
      rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
      p99=$(awk '$1=="99%" {print $2}' <<<"$out")
      errs=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr '\n' ' ')
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$c" "$t" "$rps" "$p99" "$errs" | tee -a "$results"
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
by, errs = {}, {}
for line in open(sys.argv[1]):
    r, c, t, rps, p99, e = line.rstrip("\n").split("\t")
    by.setdefault((int(c), t), []).append((float(rps), ms(p99)))
    if e.strip():
        errs.setdefault((int(c), t), []).append(e.strip())
print(f"\n{'conns':>6} {'nginx req/s':>12} {'p99 ms':>8} {'guard req/s':>12} {'p99 ms':>8} {'guard/nginx':>12}")
for c in sorted({k[0] for k in by}):
    n = [statistics.median(x[i] for x in by[(c, 'nginx')]) for i in range(2)]
    g = [statistics.median(x[i] for x in by[(c, 'guard')]) for i in range(2)]
    print(f"{c:>6} {n[0]:12.0f} {n[1]:8.2f} {g[0]:12.0f} {g[1]:8.2f} {g[0] / n[0]:12.2f}")
for k, v in errs.items():
    print(f"wrk reported for {k[1]} at {k[0]} connections: {'; '.join(v)}")
PY

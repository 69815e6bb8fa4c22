#!/usr/bin/env bash
# Where the CPU of one proxied request goes, ollama-guard against nginx, in one command:
#
#   tests/perf/cpu_split.sh [SECONDS] [ROUNDS] [REGIME]   (default 5 s x 5 rounds, tags_fast)
#
# REGIME is one of regimes.sh's throughput regimes, with its path, load and upstream:
#   tags_fast         GET /api/tags, the fast nginx upstream, no access logs
#   tags_fast_logged  the same, both fronts writing their per-request access log to a file
#   ndjson_sim        POST /api/generate, 20 NDJSON frames back to back from the simulator
# (wrk -t2 -c32, both fronts with 2 workers; CONNS=1 runs wrk -t1 -c1 instead: the CPU of one
# request at a time, where the added p50 at one connection comes from). The CPU time of every
# process on the path is read from /proc (utime and stime of the front's processes and of the
# upstream, wrk's own from /usr/bin/time) and divided by the requests served: microseconds of CPU
# per request for the front (user and system), the upstream and the load generator, plus the front's
# context switches per request (voluntary: it waited; involuntary: it was preempted). Rounds are
# interleaved; the summary prints medians. On a machine where all of them share the cores, the
# CPU per request of all of them together decides the throughput; the last line says how much
# user time the guard's front could spend for a given throughput ratio to nginx, everything
# else as measured. env GUARD_BIN=path measures that build; env BASELINE_BIN=path adds another
# build as the front "base" to the same rounds (before/after figures of a change, or a
# profile-guided build against a plain one: deploy/pgo/build.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
rounds=${2:-5}
regime=${3:-tags_fast}
conns=${CONNS:-32}
wrk_threads=2; [ "$conns" -lt 2 ] && wrk_threads=1
. tests/perf/common.sh
need wrk nginx python3 curl
[ -x /usr/bin/time ] || { echo "/usr/bin/time is required (apt-get install time)" >&2; exit 1; }

case $regime in
  tags_fast | tags_fast_logged)
    fast_upstream_only
    up=$fast upid='' path=/api/tags script=() # upid: nginx writes its pid file once started
    log=off; [ "$regime" = tags_fast_logged ] && log=on ;;
  ndjson_sim)
    start_simulator
    tags_body
    ndjson_script
    up=$sim upid=$simpid path=/api/generate script=(-s "$work/ndjson.lua") log=off ;;
  *) echo "unknown regime $regime (tags_fast, tags_fast_logged, ndjson_sim)" >&2; exit 2 ;;
esac
front_nginx nginx "$up" "$log"
front_guard guard "$up" "$log"
fronts=(nginx guard)
if [ -n "${BASELINE_BIN:-}" ]; then
  guard_bin=$bin
  bin=$BASELINE_BIN
  front_guard base "$up" "$log"
  bin=$guard_bin
  fronts+=(base)
fi
for p in "${front_port[@]}"; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$p/api/tags" && break; sleep 0.05; done
done
hz=$(getconf CLK_TCK)

# The processes of a front: the one listening on its port, and for nginx its master's workers.
procs() {
  local pid parent
  pid=$(ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  parent=$(ps -o ppid= -p "$pid" | tr -d ' ')
  if [ "$parent" != 1 ] && [ "$(ps -o comm= -p "$parent")" = nginx ]; then pid=$parent; fi
  echo "$pid" "$(pgrep -P "$pid" | tr '\n' ' ')"
}
# "utime stime voluntary involuntary" summed over processes (ticks; switches over all threads).
usage() {
  local u=0 s=0 v=0 n=0 p t
  for p in "$@"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat")
    u=$((u + a)); s=$((s + b))
    for t in /proc/"$p"/task/*; do
      v=$((v + $(awk '/^voluntary_ctxt/ {print $2}' "$t/status")))
      n=$((n + $(awk '/^nonvoluntary_ctxt/ {print $2}' "$t/status")))
    done
  done
  echo "$u $s $v $n"
}

results="$work/cpu.tsv"; : >"$results"
[ -n "$upid" ] || upid=$(cat "$work/fast.pid")
read -r -a upstream <<<"$upid $(pgrep -P "$upid" | tr '\n' ' ')"
for r in $(seq "$rounds"); do
  for t in "${fronts[@]}"; do
    read -r -a front <<<"$(procs "${front_port[$t]}")"
    read -r fu0 fs0 v0 n0 < <(usage "${front[@]}")
    read -r uu0 us0 _ _ < <(usage "${upstream[@]}")
    out=$({ /usr/bin/time -f "WRKCPU %U %S" wrk -t"$wrk_threads" -c"$conns" -d"${secs}s" "${script[@]}" "http://127.0.0.1:${front_port[$t]}$path"; } 2>&1)
    read -r fu1 fs1 v1 n1 < <(usage "${front[@]}")
    read -r uu1 us1 _ _ < <(usage "${upstream[@]}")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    read -r wu ws < <(awk '/WRKCPU/ {print $2, $3}' <<<"$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rps" "$reqs" $((fu1 - fu0)) $((fs1 - fs0)) \
      $((uu1 + us1 - uu0 - us0)) "$wu" "$ws" $((v1 - v0)) $((n1 - n0)) >>"$results"
    echo "round $r $t: $rps req/s"
  done
done
python3 - "$results" "$hz" "$(nproc)" "$regime" "$conns" <<'PY'
import statistics, sys
hz, cores = int(sys.argv[2]), int(sys.argv[3])
print(f"\nregime {sys.argv[4]}, {sys.argv[5]} connection(s)")
rows = {}
for line in open(sys.argv[1]):
    t, rps, reqs, fu, fs, up, wu, ws, vol, inv = line.split("\t")
    n = int(reqs)
    us = lambda ticks: int(ticks) / hz * 1e6 / n
    rows.setdefault(t, []).append((float(rps), us(fu), us(fs), us(up),
                                   (float(wu) + float(ws)) * 1e6 / n, int(vol) / n, int(inv) / n))
cols = ["req/s", "front user", "front sys", "upstream", "wrk", "vol csw", "invol csw"]
print(f"\nmedians, CPU in microseconds per request ({hz} ticks/s), context switches per request")
print(f"{'front':6} " + " ".join(f"{c:>11}" for c in cols))
med = {}
for t, v in rows.items():
    med[t] = [statistics.median(x[i] for x in v) for i in range(len(cols))]
    print(f"{t:6} " + " ".join(f"{x:11.0f}" if i == 0 else f"{x:11.3f}" if i >= 5 else f"{x:11.1f}"
                               for i, x in enumerate(med[t])))
if "guard" in med and "nginx" in med:
    g, n = med["guard"], med["nginx"]
    print(f"\nguard/nginx: req/s {g[0] / n[0]:.3f}, front CPU per request {(g[1] + g[2]) / (n[1] + n[2]):.3f} "
          f"(user {g[1] / n[1]:.3f}, system {g[2] / n[2]:.3f})")
    if "base" in med:
        b = med["base"]
        print(f"guard/base: req/s {g[0] / b[0]:.3f}, front CPU per request {(g[1] + g[2]) / (b[1] + b[2]):.3f} "
              f"(user {g[1] / b[1]:.3f}, system {g[2] / b[2]:.3f})")
    # Core time per request: all cores divided by the throughput. What the four processes do not
    # account for (interrupts, kernel threads, idle) is "other"; with the cores saturated, a
    # front that used less CPU would leave the rest as it is, so the guard's user-time budget for
    # a throughput of 1.1x nginx is nginx's core time / 1.1 minus everything else the guard's
    # run spent per request.
    core = lambda m: cores * 1e6 / m[0]
    other = lambda m: core(m) - sum(m[1:5])
    for t, m in (("nginx", n), ("guard", g)):
        print(f"{t}: {core(m):.1f} us of core time per request, {sum(m[1:5]) / core(m):.0%} of it "
              f"in the four processes, {other(m):.1f} us elsewhere")
    budget = core(n) / 1.1 - (g[2] + g[3] + g[4] + other(g))
    print(f"for 1.1x nginx's req/s the guard's front user time would have to be at most "
          f"{budget:.1f} us per request (now {g[1]:.1f}; nginx's {n[1]:.1f})")
    if min(sum(m[1:5]) / core(m) for m in (n, g)) < 0.9:
        print("(a rough figure: the four processes left more than a tenth of the cores to "
              "others or idle, so the throughput is not decided by their CPU alone)")
PY

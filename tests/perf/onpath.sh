#!/usr/bin/env bash
# The front's own time on a request's path at one connection, ollama-guard against nginx:
#
#   tests/perf/onpath.sh [SECONDS] [ROUNDS]   (default 3 s x 5 rounds)
#
# `GET /api/tags` from the fast upstream (nginx serving a static body), wrk -t1 -c1 for SECONDS
# against one front at a time, interleaved rounds, with `perf record` tracing the front's system
# calls (raw_syscalls tracepoints). tests/perf/onpath.py turns the trace into the time from
# reading a message to writing it on (the request: client -> upstream; the response: upstream ->
# client): user-space work on the request's path, without the kernel's and the scheduler's
# share (system calls, wake-ups), which are the same for both fronts and move with the machine's
# state far more than the fronts differ. Tracing adds about a microsecond to each system call,
# not to the time between them. Both fronts run 2 workers; one connection uses one of them.
# env GUARD_BIN=path measures that build; BASELINE_BIN=path adds an older build to the rounds.
# Needs perf (apt-get install linux-perf), wrk, nginx, and root or perf_event_paranoid <= -1.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-3}
rounds=${2:-5}
. tests/perf/common.sh
need wrk nginx python3 curl perf ss
fast_upstream_only
front_nginx nginx "$fast" off
front_guard guard "$fast" off
targets=(nginx guard)
if [ -n "${BASELINE_BIN:-}" ]; then
  guard_bin=$bin
  bin=$BASELINE_BIN
  front_guard baseline "$fast" off
  bin=$guard_bin
  targets+=(baseline)
fi
for t in "${targets[@]}"; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:${front_port[$t]}/api/tags" && break; sleep 0.05; done
done
# The processes that hold a listening port (nginx's workers, the guard).
listeners() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | paste -sd, -; }
: >"$work/results"
for r in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    perf record -q -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -p "$(listeners "${front_port[$t]}")" \
      -o "$work/perf.data" >/dev/null 2>&1 &
    rec=$!
    sleep 0.5
    wrk -t1 -c1 -d"${secs}s" "http://127.0.0.1:${front_port[$t]}/api/tags" >/dev/null
    kill -INT "$rec"
    wait "$rec" || true
    perf script --ns -F comm,pid,tid,cpu,time,event,trace -i "$work/perf.data" 2>/dev/null >"$work/perf.txt"
    line=$(python3 tests/perf/onpath.py "$work/perf.txt")
    printf 'round %s %-8s %s\n' "$r" "$t" "$line"
    printf '%s\t%s\n' "$t" "${line%% us*}" >>"$work/results"
  done
done
python3 - "$work/results" <<'PY'
import collections, statistics, sys
by = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, v = line.split()
    by[t].append(float(v))
base = statistics.median(by["nginx"])
for t, v in by.items():
    print(f"{t:8} median {statistics.median(v):6.2f} us on path ({statistics.median(v) - base:+.2f} against nginx), rounds {', '.join(f'{x:.2f}' for x in v)}")
PY

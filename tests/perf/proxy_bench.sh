#!/usr/bin/env bash
# Throughput and latency of ollama-guard against nginx and against the upstream directly.
#
# The upstream is the embedded simulator in fast mode. Rounds are interleaved
# (direct, guard, nginx, direct, guard, nginx, ...) so that drift on a shared machine hits
# every target alike; the summary gives per-target medians and the guard/nginx ratio.
#
# Usage: tests/perf/proxy_bench.sh [PATH] [CONNECTIONS] [SECONDS] [ROUNDS]
#   env BODY='{"model":"llama3.2","prompt":"hi"}' sends POST requests with that JSON body, and
#   CHUNKS=N asks the simulator for N streamed frames per response (x-sim-chunks), e.g.
#   BODY=... CHUNKS=20 tests/perf/proxy_bench.sh /api/generate   # NDJSON streaming
#   Targets: direct (the simulator), guard (default rule set), guard_norules (one rule that
#   never matches: the cost of detection is guard vs guard_norules), nginx.
#   env GUARD_BIN=path uses that build as "guard" instead of building the work tree;
#   env CLUSTER=1 adds a target "guard_cluster": the same guard with [cluster] against a
#   redis-server started on a free port (sync_interval 500ms; one client address, so it
#   measures the hot-path cost of cluster mode, not Redis load);
#   env BASELINE_BIN=path/to/older/ollama-guard adds a target "baseline" (that binary, default
#   rules, same flags) to the same interleaved rounds: before/after figures of a change.
set -euo pipefail
cd "$(dirname "$0")/../.."
path=${1:-/api/tags}
conns=${2:-32}
secs=${3:-10}
rounds=${4:-5}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is required: apt-get install nginx-light" >&2; exit 1; }
# GUARD_BIN=path benchmarks a build made elsewhere (e.g. a worktree) instead of building here.
if [ -n "${GUARD_BIN:-}" ]; then
  bin=$GUARD_BIN
else
  cargo build --release --quiet
  bin=target/release/ollama-guard
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port); guard_port=$(free_port); admin_port=$(free_port); nginx_port=$(free_port)
bare_port=$(free_port); bare_admin=$(free_port)

"$bin" simulator --listen "127.0.0.1:$sim_port" --fast --no-host-check 2>"$work/sim.err" & pids+=($!)
# One rule that can never match: the engine is there but counts nothing.
cat >"$work/norules.toml" <<TOML
[[rule]]
name = "disabled"
paths = ["/never-matches"]
TOML
"$bin" --listen "127.0.0.1:$guard_port" --upstream "http://127.0.0.1:$sim_port" \
  --admin-listen "127.0.0.1:$admin_port" --detection-log /dev/null --log-level warn 2>"$work/guard.err" & pids+=($!)
if [ -n "${BASELINE_BIN:-}" ]; then
  base_port=$(free_port); base_admin=$(free_port)
  "$BASELINE_BIN" --listen "127.0.0.1:$base_port" --upstream "http://127.0.0.1:$sim_port" \
    --admin-listen "127.0.0.1:$base_admin" --detection-log /dev/null --log-level warn 2>"$work/base.err" & pids+=($!)
fi
if [ -n "${CLUSTER:-}" ]; then
  command -v redis-server >/dev/null || { echo "CLUSTER=1 needs redis-server" >&2; exit 1; }
  redis_port=$(free_port); cluster_port=$(free_port); cluster_admin=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 & pids+=($!)
  printf '[cluster]\nredis_url = "redis://127.0.0.1:%s"\ninstance_id = "bench"\n' "$redis_port" \
    >"$work/cluster.toml"
  "$bin" --listen "127.0.0.1:$cluster_port" --upstream "http://127.0.0.1:$sim_port" \
    --admin-listen "127.0.0.1:$cluster_admin" --detection-log /dev/null --config "$work/cluster.toml" \
    --log-level warn 2>"$work/cluster.err" & pids+=($!)
fi
"$bin" --listen "127.0.0.1:$bare_port" --upstream "http://127.0.0.1:$sim_port" \
  --admin-listen "127.0.0.1:$bare_admin" --detection-log /dev/null --config "$work/norules.toml" \
  --log-level warn 2>"$work/bare.err" & pids+=($!)

cat >"$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream ollama { server 127.0.0.1:$sim_port; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://ollama;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:$sim_port;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)

for port in "$sim_port" "$guard_port" "$bare_port" "$nginx_port" ${base_port:-} ${cluster_port:-}; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/api/version" && break; sleep 0.05; done
done

targets=(direct guard guard_norules nginx)
declare -A port=([direct]=$sim_port [guard]=$guard_port [guard_norules]=$bare_port [nginx]=$nginx_port)
if [ -n "${BASELINE_BIN:-}" ]; then targets+=(baseline); port[baseline]=$base_port; fi
if [ -n "${CLUSTER:-}" ]; then targets+=(guard_cluster); port[guard_cluster]=$cluster_port; fi
script=()
if [ -n "${BODY:-}" ]; then
  python3 - "$work/post.lua" "$BODY" "${CHUNKS:-}" <<'PY'
import json, sys
path, body, chunks = sys.argv[1], sys.argv[2], sys.argv[3]
lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}", 'wrk.headers["Content-Type"] = "application/json"']
if chunks:
    lines.append(f'wrk.headers["x-sim-chunks"] = "{chunks}"')
open(path, "w").write("\n".join(lines) + "\n")
PY
  script=(-s "$work/post.lua")
fi
results="$work/results.tsv"
: >"$results"
echo "path=$path connections=$conns duration=${secs}s rounds=$rounds body=${BODY:-none} chunks=${CHUNKS:-default}"
for r in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "${script[@]}" "http://127.0.0.1:${port[$t]}$path")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$rps" "$p50" "$p99" | tee -a "$results"
    [ -n "$errs" ] && echo "  warning: $errs"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def ms(t):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * f
    return float(t)
by = {}
for _, target, rps, p50, p99 in rows:
    by.setdefault(target, []).append((float(rps), ms(p50), ms(p99)))
print("\ntarget          median req/s   median p50 ms   median p99 ms")
med = {}
for t, v in by.items():
    med[t] = tuple(statistics.median(x[i] for x in v) for i in range(3))
    print(f"{t:15} {med[t][0]:13.0f} {med[t][1]:15.3f} {med[t][2]:15.3f}")
if "guard" in med and "nginx" in med:
    print(f"\nguard/nginx throughput ratio: {med['guard'][0] / med['nginx'][0]:.3f}")
    print(f"guard/nginx p99 ratio:        {med['guard'][2] / med['nginx'][2]:.3f}")
if "guard" in med and "guard_norules" in med:
    print(f"detection cost (1 - guard/guard_norules): {100 * (1 - med['guard'][0] / med['guard_norules'][0]):.1f} %")
if "guard" in med and "baseline" in med:
    print(f"guard/baseline throughput ratio: {med['guard'][0] / med['baseline'][0]:.3f}")
    print(f"guard/baseline p99 ratio:        {med['guard'][2] / med['baseline'][2]:.3f}")
if "guard" in med and "guard_cluster" in med:
    print(f"cluster cost (1 - guard_cluster/guard): {100 * (1 - med['guard_cluster'][0] / med['guard'][0]):.1f} %")
if "guard" in med and "direct" in med:
    print(f"guard/direct throughput ratio: {med['guard'][0] / med['direct'][0]:.3f}")
PY

#!/usr/bin/env bash
# CPU instructions per proxied request, counted by valgrind callgrind: repeatable on a busy
# machine, unlike wall-clock figures.
#
#   tests/perf/callgrind_proxy.sh [N1] [N2]          (default 1000 and 5000 requests)
#
# Each target runs under callgrind twice, proxying N1 and then N2 keep-alive `GET /api/tags`
# (one connection, a Python client outside valgrind) to a fast upstream (nginx serving the
# simulator's /api/tags body); the difference of the two totals divided by N2 - N1 is the cost of one
# request, start-up and shutdown cancelling out. Targets:
#   guard          ollama-guard, default rules, one worker (GUARD_BIN=path, else the work tree)
#   guard_cluster  the same with [cluster] against a local redis-server (when installed); it
#                  includes the background sync task, which valgrind's slowness makes dearer
#   nginx          nginx proxy_pass, keepalive upstream, one process (master_process off)
# Only user-space instructions are counted: system calls are not (see strace -c for those).
# env NEW_CONN=1 sends every request on a new connection (`Connection: close`): the cost of a
# connection's set-up and teardown with its one request, what a spray of new sources pays.
# env REQUEST=generate sends `POST /api/generate` with a 49-byte JSON body instead (the policy
# stage reads it), REQUEST=completions the same body to `POST /v1/completions`, and
# REQUEST=completions_zstd that body compressed (`Content-Encoding: zstd`, decoded by the policy
# stage, which decodes only on the routes Ollama decompresses); the fast upstream answers each
# with one short line. env CG_OUT_DIR=DIR keeps each run's callgrind file there
# (TARGET-N.out, for callgrind_annotate). env GUARD_ARGS adds options to the guard's command line
# (`GUARD_ARGS="--access-log /dev/null"`: the cost of the access line).
set -euo pipefail
cd "$(dirname "$0")/../.."
n1=${1:-1000}
n2=${2:-5000}
. tests/perf/common.sh
need valgrind nginx python3 curl

fast_upstream_only

cat >"$work/client.py" <<'PY'
import http.client, sys
port, n, close, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
json = b'{"model":"llama3.2","prompt":"hi","stream":false}'
# The same body as one zstd frame (libzstd, level 3: a raw block).
zstd = bytes.fromhex("28b52ffd20318901007b226d6f64656c223a226c6c616d61332e32222c2270726f6d7074223a226869222c2273747265616d223a66616c73657d")
method, path, body, headers = {
    "tags": ("GET", "/api/tags", None, {}),
    "generate": ("POST", "/api/generate", json, {"Content-Type": "application/json"}),
    "completions": ("POST", "/v1/completions", json, {"Content-Type": "application/json"}),
    "completions_zstd": ("POST", "/v1/completions", zstd,
                         {"Content-Type": "application/json", "Content-Encoding": "zstd"}),
}[kind]
if close:
    headers["Connection"] = "close"
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    if close:
        c = http.client.HTTPConnection("127.0.0.1", port)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"status {r.status}")
PY

cluster_toml=
if command -v redis-server >/dev/null; then
  rp=$(free_port)
  redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 & pids+=($!)
  printf '[cluster]\nredis_url = "redis://127.0.0.1:%s"\ninstance_id = "bench"\n' "$rp" >"$work/cluster.toml"
  cluster_toml=$work/cluster.toml
fi

# run TARGET N: prints the total instruction count of the target's process.
run() {
  local target=$1 n=$2 p a out=$work/cg.out pid
  p=$(free_port); a=$(free_port); rm -f "$out"
  case $target in
    guard|guard_cluster)
      local extra=()
      [ "$target" = guard_cluster ] && extra=(--config "$cluster_toml")
      # shellcheck disable=SC2086 # GUARD_ARGS is a list of options
      valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --listen "127.0.0.1:$p" \
        --upstream "http://127.0.0.1:$fast" --admin-listen "127.0.0.1:$a" --workers 1 \
        --detection-log /dev/null --log-level warn "${extra[@]}" ${GUARD_ARGS:-} \
        2>"$work/$target.err" &
      pid=$! ;;
    nginx)
      cat >"$work/front.conf" <<NGINX
master_process off; worker_processes 1; pid $work/front.pid; error_log $work/front-error.log warn;
events { worker_connections 4096; }
http { access_log off; upstream up { server 127.0.0.1:$fast; keepalive 256; }
  server { listen 127.0.0.1:$p; location / { proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_set_header Host 127.0.0.1:$fast;
    proxy_set_header X-Forwarded-For \$remote_addr; proxy_buffering off; proxy_request_buffering off; } } }
NGINX
      valgrind --tool=callgrind --callgrind-out-file="$out" "$NGINX" -c "$work/front.conf" \
        -g 'daemon off;' 2>"$work/nginx.err" &
      pid=$! ;;
  esac
  for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:$p/api/tags" && break; sleep 0.1; done
  python3 "$work/client.py" "$p" "$n" "${NEW_CONN:-0}" "${REQUEST:-tags}"
  if [ "$target" = nginx ]; then kill -QUIT "$pid"; else kill -INT "$pid"; fi
  wait "$pid" || true
  if [ -n "${CG_OUT_DIR:-}" ]; then cp "$out" "$CG_OUT_DIR/$target-$n.out"; fi
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

targets=(guard nginx)
[ -n "$cluster_toml" ] && targets=(guard guard_cluster nginx)
printf '%-14s %14s %14s %12s\n' target "Ir @ $n1" "Ir @ $n2" "Ir/request"
for t in "${targets[@]}"; do
  a=$(run "$t" "$n1")
  b=$(run "$t" "$n2")
  printf '%-14s %14s %14s %12d\n' "$t" "$a" "$b" $(((b - a) / (n2 - n1)))
done

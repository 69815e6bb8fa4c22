# The set-up the tests/perf proxy scripts share. Sourced (`. tests/perf/common.sh`) from the
# repository root after `set -euo pipefail`, never run. It provides:
#   need TOOL...            exits with an install hint unless every TOOL is on PATH or in /usr/sbin
#   NGINX                   the nginx binary
#   bin                     the guard: $GUARD_BIN, else a fresh `cargo build --release`
#   work                    a temporary directory (readable by nginx's workers), removed on exit
#   pids                    processes to kill on exit (append with pids+=($!))
#   free_port               prints a free loopback port
#   start_simulator         starts `ollama-guard simulator --fast` on $sim (sets sim, simpid)
#   tags_body               writes the simulator's /api/tags body to $work/tags.json
#   start_fast_upstream     starts nginx answering every path with $work/tags.json on $fast
#   fast_upstream_only      the three above for scripts that need no simulator after: the body
#                           is taken from a simulator that is then stopped
#   ndjson_script           writes $work/ndjson.lua: the wrk script of the ndjson_sim regime
#                           (POST /api/generate, 20 NDJSON frames back to back from the simulator)
#   front_nginx NAME UP LOG nginx proxy_pass to port UP ($workers workers, keepalive upstream,
#                           no buffering; LOG=on writes the default access log); front_port[NAME]
#   front_guard NAME UP LOG ollama-guard in front of port UP (--workers $workers, default rules,
#                           LOG=on writes the GIN access log; GUARD_ARGS adds options); front_port[NAME]
#   workers                 worker count of both fronts ($WORKERS, default 2)
# shellcheck shell=bash

need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || {
      echo "$t is required (apt-get install ${t/nginx/nginx-light})" >&2
      exit 1
    }
  done
}

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ -n "${GUARD_BIN:-}" ]; then
  bin=$GUARD_BIN
else
  cargo build --release --quiet
  bin=${CARGO_TARGET_DIR:-target}/release/ollama-guard
fi
work=$(mktemp -d)
# nginx's workers run as an unprivileged user: they must be able to read what is served.
chmod 755 "$work"
pids=()
workers=${WORKERS:-2}
# shellcheck disable=SC2034 # read by the scripts that source this file
declare -A front_port=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_simulator() {
  sim=$(free_port)
  "$bin" simulator --listen "127.0.0.1:$sim" --fast --no-host-check 2>"$work/sim.err" &
  simpid=$!
  pids+=("$simpid")
}

tags_body() {
  local tags=
  for _ in $(seq 100); do
    tags=$(curl -fs "http://127.0.0.1:$sim/api/tags" || true)
    [ -n "$tags" ] && break
    sleep 0.05
  done
  [ -n "$tags" ] || { echo "error: the simulator did not answer /api/tags" >&2; exit 1; }
  printf '%s' "$tags" >"$work/tags.json"
  chmod 644 "$work/tags.json"
}

start_fast_upstream() {
  fast=$(free_port)
  cat >"$work/fast.conf" <<NGINX
worker_processes 1;
pid $work/fast.pid;
error_log $work/fast-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$fast;
    default_type application/json;
    root $work;
    location / { try_files /tags.json =404; }
    location = /api/generate {
      default_type application/x-ndjson;
      return 200 '{"model":"llama3.2","response":"hi","done":true}\n';
    }
    location = /v1/completions {
      return 200 '{"id":"cmpl-1","object":"text_completion","model":"llama3.2","choices":[{"text":"hi","index":0,"finish_reason":"stop"}]}';
    }
  }
}
NGINX
  "$NGINX" -c "$work/fast.conf" -g 'daemon off;' &
  pids+=($!)
}

fast_upstream_only() {
  start_simulator
  tags_body
  kill "$simpid"
  wait "$simpid" 2>/dev/null || true
  start_fast_upstream
}

ndjson_script() {
  cat >"$work/ndjson.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"llama3.2","prompt":"hi"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-sim-chunks"] = "20"
LUA
}

front_nginx() { # name upstream_port log(on|off)
  local name=$1 up=$2 log=$3 p; p=$(free_port); front_port[$name]=$p
  local logline="access_log off;"
  [ "$log" = on ] && logline="access_log $work/$name-access.log;"
  cat >"$work/$name.conf" <<NGINX
worker_processes $workers;
pid $work/$name.pid;
error_log $work/$name-error.log warn;
events { worker_connections 4096; }
http {
  $logline
  upstream up { server 127.0.0.1:$up; keepalive 256; }
  server {
    listen 127.0.0.1:$p;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:$up;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
NGINX
  "$NGINX" -c "$work/$name.conf" -g 'daemon off;' & pids+=($!)
}
# shellcheck disable=SC2034 # front_port is read by the scripts that source this file
front_guard() { # name upstream_port log(on|off)
  local name=$1 up=$2 log=$3 p a; p=$(free_port); a=$(free_port); front_port[$name]=$p
  local extra=()
  [ "$log" = on ] && extra=(--access-log "$work/$name-access.log")
  # shellcheck disable=SC2086 # GUARD_ARGS is a list of options
  "$bin" --listen "127.0.0.1:$p" --upstream "http://127.0.0.1:$up" --admin-listen "127.0.0.1:$a" \
    --workers "$workers" --detection-log /dev/null --log-level warn "${extra[@]}" ${GUARD_ARGS:-} \
    2>"$work/$name.err" & pids+=($!)
}

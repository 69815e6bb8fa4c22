#!/usr/bin/env bash
# The training run of a profile-guided build (deploy/pgo/build.sh): drives an ollama-guard
# binary through the work it does in production, so that an instrumented build records which
# branches and calls are hot.
#
#   deploy/pgo/train.sh BIN [REQUESTS]     (REQUESTS per kind of call, default 2000)
#
# Everything runs on loopback from BIN itself and needs only bash, curl and awk (no Python, no
# load generator): the embedded simulator in fast mode is the upstream, and `serve` runs in
# front of it with the default rules, two workers, the GIN access log and the detection log.
# curl sends each kind of call REQUESTS times over one keep-alive connection (URL ranges),
# several kinds at once: GET /api/tags, /api/ps, /api/version and /v1/models; POST /api/show,
# /api/generate and /api/chat (20 NDJSON frames each), /v1/chat/completions, /api/embed;
# some refusals (a foreign Host, an unknown method). Then `serve` again in block mode behind a
# trusted proxy: REQUESTS new sources (X-Forwarded-For), four sources banned and refused, pushes
# to a foreign registry refused by the policy. Then `scan` reads a generated row-heavy GIN log
# (a tenth of the calls slow) in the default mode, in --splunk-compat mode and with two threads. BIN is stopped with SIGTERM, so an instrumented build writes its profile.
# Exits non-zero when any step fails: a profile from a broken run would mislead the build.
set -euo pipefail
bin=${1:?usage: train.sh BIN [REQUESTS]}
n=${2:-2000}
command -v curl >/dev/null || { echo "train.sh: curl is required" >&2; exit 1; }
[ -x "$bin" ] || { echo "train.sh: $bin is not an executable" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port: a random high port that refuses a connection (bash alone cannot bind
# port 0 and read back the port it got).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
up() { # URL PID: whether URL answers; fails at once when the process has exited
  for _ in $(seq 200); do
    curl -fs -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  echo "train.sh: $1 did not answer" >&2
  exit 1
}

# Another process may take a probed port before the server binds it (the test suite runs this
# beside other servers): a server that exits at once is started again on new ports.
start_sim() {
  for _ in 1 2 3 4 5; do
    sim=$(free_port)
    "$bin" simulator --listen "127.0.0.1:$sim" --fast --no-host-check 2>"$work/sim.err" &
    pids+=($!)
    up "http://127.0.0.1:$sim/api/version" "$!" && return
  done
  echo "train.sh: the simulator did not start: $(tail -n 3 "$work/sim.err")" >&2
  exit 1
}
start_guard() { # ARGS...: sets port, admin, guard and front
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    admin=$(free_port)
    "$bin" "$@" --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$sim" \
      --admin-listen "127.0.0.1:$admin" --workers 2 --access-log "$work/access.log" \
      --detection-log "$work/detections.jsonl" --log-level warn 2>"$work/guard.err" &
    guard=$!
    pids+=("$guard")
    front="http://127.0.0.1:$port"
    up "$front/api/version" "$guard" && return
  done
  echo "train.sh: $bin did not start: $(tail -n 3 "$work/guard.err")" >&2
  exit 1
}

start_sim
start_guard
range="[1-$n]"
gen='{"model":"llama3.2","prompt":"hi"}'
chat='{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}'
calls=(
  "$front/api/tags?$range"
  "$front/api/ps?$range"
  "$front/api/version?$range"
  "$front/v1/models?$range"
)
json=(-H 'Content-Type: application/json')
stream=(-H 'x-sim-chunks: 20')
clients=()
for url in "${calls[@]}"; do
  curl -sf "$url" >/dev/null & clients+=($!)
done
curl -sf "${json[@]}" -d '{"model":"llama3.2"}' "$front/api/show?$range" >/dev/null & clients+=($!)
curl -sf "${json[@]}" "${stream[@]}" -d "$gen" "$front/api/generate?$range" >/dev/null & clients+=($!)
curl -sf "${json[@]}" "${stream[@]}" -d "$chat" "$front/api/chat?$range" >/dev/null & clients+=($!)
curl -sf "${json[@]}" -d "$chat" "$front/v1/chat/completions?$range" >/dev/null & clients+=($!)
curl -sf "${json[@]}" -d '{"model":"llama3.2","input":"hi"}' "$front/api/embed?$range" >/dev/null & clients+=($!)
for c in "${clients[@]}"; do wait "$c"; done
# Refusals: a foreign Host (403) and a method the API does not have (405 from upstream or 403).
curl -s -o /dev/null -H 'Host: evil.example' "$front/api/tags?[1-200]" >/dev/null
curl -s -o /dev/null -X PATCH "$front/api/tags?[1-200]" >/dev/null
curl -fs -o /dev/null "http://127.0.0.1:$admin/metrics"

kill -TERM "$guard"
wait "$guard"
[ -s "$work/access.log" ] || { echo "train.sh: the guard wrote no access log" >&2; exit 1; }

# Block mode behind a trusted proxy, so the paths a flood takes are trained too (a profile
# marks code it never saw as cold): clients named by X-Forwarded-For, REQUESTS distinct sources
# with one call each (new keys), four sources that cross `excessive_requests` (more than 120
# calls in 5 minutes) and are banned, then refused; pushes to a foreign registry (refused by
# the policy). One curl per group, options per call separated by --next, so the connection is
# kept.
# `excessive_requests` counts in a sliding window here: in its default 5-minute tumbling
# windows, a window edge falling inside the burst would split the calls and ban no one.
cat >"$work/block.toml" <<'TOML'
mode = "block"
trusted_proxies = ["127.0.0.1/32"]

[rules.excessive_requests]
window_kind = "sliding"
TOML
start_guard --config "$work/block.toml"
calls() { # KIND COUNT PATH [JSON]: a curl config of COUNT calls; KIND names their sources
  awk -v kind="$1" -v n="$2" -v url="$front$3" -v json="${4:-}" 'BEGIN {
    gsub(/"/, "\\\"", json) # a double-quoted curl config value escapes its quotes
    for (i = 0; i < n; i++) {
      if (kind == "spray") src = sprintf("10.%d.%d.%d", 1 + int(i / 65536), int(i / 256) % 256, i % 256)
      else if (kind == "hot") src = sprintf("172.16.0.%d", 1 + i % 4)
      else src = "192.168.0.9"
      if (i) print "next"
      printf "url = \"%s\"\noutput = \"/dev/null\"\nsilent\n", url
      printf "header = \"X-Forwarded-For: %s\"\n", src
      if (json != "") printf "header = \"Content-Type: application/json\"\ndata = \"%s\"\n", json
    }
  }'
}
calls spray "$n" /api/tags >"$work/spray.curl"
calls hot $((4 * (130 + n))) /api/tags >"$work/hot.curl"
calls push "$n" /api/push '{"model":"registry.evil.example/x/llama3.2"}' >"$work/push.curl"
clients=()
for c in spray hot push; do curl -K "$work/$c.curl" & clients+=($!); done
for c in "${clients[@]}"; do wait "$c"; done
kill -TERM "$guard"
wait "$guard"
grep -q '"action":"banned"' "$work/detections.jsonl" ||
  { echo "train.sh: block mode banned no one" >&2; exit 1; }

# A row-heavy GIN log for scan: the paths Ollama serves, 250 sources, every tenth call slow,
# one line in twenty with a journald prefix.
awk -v lines=$((n * 60)) 'BEGIN {
  srand(7)
  split("GET /api/tags|POST /api/show|POST /api/generate|POST /api/chat|GET /api/ps|POST /v1/chat/completions|POST /api/embed|HEAD /|GET /v1/models|POST /api/pull", kinds, "|")
  for (i = 0; i < lines; i++) {
    split(kinds[1 + int(rand() * 10)], k, " ")
    t = i / 50
    ts = sprintf("2025/10/02 - %02d:%02d:%02d", 12 + int(t / 3600) % 12, int(t / 60) % 60, int(t) % 60)
    if (rand() < 0.1) lat = sprintf("%.9fs", 1 + rand() * 200)
    else if (rand() < 0.5) lat = sprintf("%.6fms", rand() * 900)
    else lat = sprintf("%.3fµs", rand() * 900)
    ip = sprintf("10.0.%d.%d", int(rand() * 5), 1 + int(rand() * 50))
    prefix = (i % 20 == 0) ? "Oct 02 12:00:00 gpu-host ollama[1543]: " : ""
    printf "%s[GIN] %s | %d | %14s | %15s | %-8s \"%s\"\n", prefix, ts, (rand() < 0.97) ? 200 : 404, lat, ip, k[1], k[2]
  }
}' >"$work/corpus.log"
cat "$work/access.log" >>"$work/corpus.log"
"$bin" scan --format jsonl "$work/corpus.log" >/dev/null 2>&1
"$bin" scan --format jsonl --splunk-compat "$work/corpus.log" >/dev/null 2>&1
"$bin" scan --format jsonl --threads 2 "$work/corpus.log" >/dev/null 2>&1
refused=$(awk -F'|' '$2 + 0 == 403' "$work/access.log" | wc -l)
echo "train.sh: $(wc -l <"$work/access.log") requests in the access log, $refused of them refused (403), $(wc -l <"$work/corpus.log") log lines scanned three times" >&2

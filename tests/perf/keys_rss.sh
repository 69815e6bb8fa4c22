#!/usr/bin/env bash
# RSS of the running proxy (`serve`) against tracked detection keys, 1 k -> 1 M, in one command:
#
#   tests/perf/keys_rss.sh [STEPS...]        (default: 1000 10000 100000 1000000 keys)
#
# nginx serves a static /api/tags body as the fast upstream; ollama-guard (release build,
# default rules, monitor mode, `trusted_proxies = ["127.0.0.1/32"]`) sits in front of it, and
# wrk, from 127.0.0.1, sends one `GET /api/tags` per new source, the source carried in
# `X-Forwarded-For` (10.x.y.z, a new one per request, from a Lua script). With the built-in rules
# each new /api/tags source creates 3 keys (excessive_requests and endpoint_scan tumbling,
# metadata_enumeration sliding) and none reaches a threshold. The keys per source are read from
# the first step (the `ollama_guard_tracked_keys` gauge on the admin /metrics), and each step adds
# the sources that take the gauge to the step's key count (cumulative: 1 M keys = 333 333
# sources; `max_tracked_keys = 2000000` (env MAX_TRACKED_KEYS), since the engine's background
# trim evicts from 95 % of the cap, so nothing is evicted; the script checks
# `tracked_key_evictions_total` stays 0).
#
# RSS is read from /proc/PID/status (VmRSS) and from the guard's own `process_resident_memory_bytes`
# at start (idle), after a warm-up (10 000 requests from 127.0.0.1 itself, no X-Forwarded-For: 3
# keys, but the connections, buffers and allocator caches of a loaded proxy) and after each step,
# once the gauge has settled. Printed: keys, RSS, (RSS - idle) / keys, (RSS - warm) / keys and the
# step's own increment (ΔRSS / Δkeys).
#
# The built-in tumbling windows are 5 minutes, aligned to the clock: keys of a window that ends
# mid-run are swept and the count falls. The script therefore waits for a fresh window when fewer
# than MIN_WINDOW_LEFT seconds (default 200) remain in the current one.
#
# env GUARD_BIN=path measures that build instead of building the work tree; CONNS (default 32);
# RULES=none is the control run: one rule that never matches (no keys), the same sources, so
# what grows is what the rest of the proxy keeps per source; the per-key columns are then per
# 3 sources (the keys the built-in rules would have held).
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(1000 10000 100000 1000000)
conns=${CONNS:-32}
min_left=${MIN_WINDOW_LEFT:-200}
. tests/perf/common.sh
need wrk nginx python3 curl

# --- fast upstream: nginx answering every path with the simulator's /api/tags body -------------
fast_upstream_only

# --- the guard ---------------------------------------------------------------------------------
port=$(free_port); admin=$(free_port)
# max_tracked_keys above the default: the background trim evicts from 95 % of the cap down to
# 90 %, so with the default 1 000 000 the live count never reaches 1 M. The cap reserves nothing.
cat >"$work/guard.toml" <<TOML
trusted_proxies = ["127.0.0.1/32"]
max_tracked_keys = ${MAX_TRACKED_KEYS:-2000000}
TOML
# RULES=none: the control run, one rule that never matches, the same sources: what the rest of
# the proxy keeps per source (connection table, in-flight registry, metrics...) without keys.
if [ "${RULES:-}" = none ]; then
  printf '[[rule]]\nname = "disabled"\npaths = ["/never-matches"]\n' >>"$work/guard.toml"
fi
"$bin" --config "$work/guard.toml" --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$fast" \
  --admin-listen "127.0.0.1:$admin" --detection-log /dev/null --log-level warn 2>"$work/guard.err" & guard=$!
pids+=("$guard")
for _ in $(seq 200); do curl -fs -o /dev/null "http://127.0.0.1:$admin/metrics" && break; sleep 0.05; done
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$fast/api/tags" && break; sleep 0.05; done

metric() { curl -fs "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1==m {printf "%d\n", $2}'; }
# VmRSS and RssAnon (VmRSS without the file-backed pages: the 70 MB binary's code pages that a
# loaded proxy touches), bytes, tab-separated.
mem() { awk '/^VmRSS:/ {r = $2 * 1024} /^RssAnon:/ {a = $2 * 1024} END {printf "%d\t%d\n", r, a}' "/proc/$guard/status"; }
# The gauge is refreshed by the detection stage's ticker: wait until two reads a second apart agree.
settled_keys() {
  local a b; a=$(metric ollama_guard_tracked_keys)
  for _ in $(seq 60); do sleep 1; b=$(metric ollama_guard_tracked_keys); [ "$a" = "$b" ] && break; a=$b; done
  echo "$a"
}

# One GET /api/tags per source index in [start, start+count), spread over wrk's threads; each
# thread writes a marker file when all its own sources were answered, then stops.
cat >"$work/keys.lua" <<'LUA'
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local start, count, nthreads, marker
local next_i, answered, share
-- wrk calls request() once on thread 0 before the run, to inspect it (script_verify_request):
-- that call must not use up a source.
local verifying = false
function init(args)
  start, count, nthreads, marker = tonumber(args[1]), tonumber(args[2]), tonumber(args[3]), args[4]
  next_i = start + id
  answered = 0
  share = 0
  verifying = id == 0
  for i = start + id, start + count - 1, nthreads do share = share + 1 end
  if share == 0 then
    local f = io.open(marker .. id, "w"); f:close()
  end
end
local function ip(i)
  return string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
end
local last = nil
function request()
  if verifying then
    verifying = false
    return wrk.format("GET", "/api/tags", { ["X-Forwarded-For"] = ip(next_i) })
  end
  if next_i < start + count then
    last = wrk.format("GET", "/api/tags", { ["X-Forwarded-For"] = ip(next_i) })
    next_i = next_i + nthreads
  end
  -- Past its share a thread repeats its last source (a count, no new key) until it stops.
  return last or wrk.format("GET", "/api/tags")
end
function response(status, headers, body)
  answered = answered + 1
  if answered == share then
    local f = io.open(marker .. id, "w"); f:close()
    wrk.thread:stop()
  end
end
LUA
threads=2
drive() { # start count
  local start=$1 count=$2 w
  rm -f "$work"/done.*
  wrk -t"$threads" -c"$conns" -d3600s -s "$work/keys.lua" "http://127.0.0.1:$port/api/tags" \
    -- "$start" "$count" "$threads" "$work/done." >"$work/wrk.out" 2>&1 & w=$!
  pids+=("$w")
  while [ "$(find "$work" -maxdepth 1 -name 'done.*' | wc -l)" -lt "$threads" ]; do
    kill -0 "$w" 2>/dev/null || { cat "$work/wrk.out" >&2; echo "error: wrk ended early" >&2; exit 1; }
    sleep 0.2
  done
  kill -INT "$w"; wait "$w" || true
  if grep -q 'Non-2xx\|Socket errors' "$work/wrk.out"; then
    echo "error: the guard answered errors:" >&2; cat "$work/wrk.out" >&2; exit 1
  fi
}

# --- wait for a fresh 5-minute window if this one is nearly over --------------------------------
left=$(( 300 - $(date +%s) % 300 ))
if [ "$left" -lt "$min_left" ] && [ "${RULES:-}" != none ]; then
  echo "waiting ${left}s for a fresh 5-minute window (built-in tumbling windows end at :00, :05, ...)"
  sleep $((left + 2))
fi

window=$(( $(date +%s) / 300 ))
idle_mem=$(mem); idle_proc=$(metric process_resident_memory_bytes)
wrk -t"$threads" -c"$conns" -d10s "http://127.0.0.1:$port/api/tags" >"$work/warm.out" 2>&1 &
warm=$!
pids+=("$warm")
# 10 s would be far more than 10 000 requests: stop at a fixed count read from the counters.
while :; do
  n=$(curl -fs "http://127.0.0.1:$admin/metrics" | awk '/^ollama_guard_requests_total/ {s += $2} END {printf "%d\n", s}')
  [ "$n" -ge 10000 ] && break
  kill -0 "$warm" 2>/dev/null || break
  sleep 0.1
done
kill -INT "$warm" 2>/dev/null || true; wait "$warm" || true
base_keys=$(settled_keys)
warm_mem=$(mem); warm_proc=$(metric process_resident_memory_bytes)

results="$work/results.tsv"
printf 'idle\t0\t0\t%s\t%s\n' "$idle_mem" "$idle_proc" >"$results"
printf 'warm\t0\t%s\t%s\t%s\n' "$base_keys" "$warm_mem" "$warm_proc" >>"$results"
echo "guard pid $guard; VmRSS, RssAnon idle: $(tr '\t' ' ' <<<"$idle_mem") B; after warm-up: $(tr '\t' ' ' <<<"$warm_mem") B ($base_keys keys)"
sources=0; per_source=0; t0=$(date +%s)
for target in "${steps[@]}"; do
  if [ "$per_source" = 0 ]; then want=$((target / 3)); else want=$(( (target - base_keys) / per_source )); fi
  [ "${RULES:-}" = none ] && want=$((target / 3))
  [ "$want" -gt "$sources" ] || continue
  s0=$(date +%s.%N)
  drive "$sources" $((want - sources))
  s1=$(date +%s.%N)
  rate=$(python3 -c "print(round(($want - $sources) / ($s1 - $s0)))")
  sources=$want
  keys=$(settled_keys)
  # keys per source (a whole number), from the first step
  if [ "$per_source" = 0 ] && [ "${RULES:-}" != none ]; then
    per_source=$(( (keys - base_keys + sources / 2) / sources ))
    [ "$per_source" -ge 1 ] || { echo "error: no keys were created ($keys)" >&2; exit 1; }
  fi
  m=$(mem); proc=$(metric process_resident_memory_bytes)
  printf 'step\t%s\t%s\t%s\t%s\n' "$sources" "$keys" "$m" "$proc" >>"$results"
  echo "  $sources sources -> $keys keys, VmRSS, RssAnon $(tr '\t' ' ' <<<"$m") B (wrk: $rate new sources/s)"
done
evicted=$(metric ollama_guard_tracked_key_evictions_total)
echo "run: $(( $(date +%s) - t0 )) s; tracked_key_evictions_total = $evicted; uptime:$(uptime | sed 's/.*load/ load/')"
[ "$(( $(date +%s) / 300 ))" = "$window" ] ||
  echo "warning: a 5-minute window ended during the run: tumbling keys were swept (see the counts)" >&2
[ "$evicted" = 0 ] || echo "warning: keys were evicted (max_tracked_keys reached): the per-key figures are off" >&2
python3 - "$results" "$per_source" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
per_source = int(sys.argv[2])
mib = lambda b: int(b) / 2**20
(_, _, _, idle, idle_anon, idle_proc), (_, _, warm_keys, warm, warm_anon, warm_proc) = rows[:2]
idle, idle_anon, warm, warm_anon, warm_keys = int(idle), int(idle_anon), int(warm), int(warm_anon), int(warm_keys)
if per_source == 0:
    print("\nRULES=none: no keys; per-key columns are per 3 sources (the keys the built-in rules would hold)")
print(f"\n{'keys':>9} {'sources':>8} {'VmRSS MiB':>10} {'RssAnon MiB':>12} {'process_rss MiB':>16} "
      f"{'(RSS-idle)/key':>15} {'(RSS-warm)/key':>15} {'(Anon-warm)/key':>16} {'step dRSS/dkey':>15}")
print(f"{'idle':>9} {'':>8} {mib(idle):10.1f} {mib(idle_anon):12.1f} {mib(idle_proc):16.1f}")
print(f"{warm_keys:>9} {'warm':>8} {mib(warm):10.1f} {mib(warm_anon):12.1f} {mib(warm_proc):16.1f}")
prev_keys, prev_rss = warm_keys, warm
for _, sources, keys, rss, anon, proc in rows[2:]:
    keys, rss, anon = int(keys), int(rss), int(anon)
    if per_source == 0:
        keys = 3 * int(sources)
    step = (rss - prev_rss) / (keys - prev_keys) if keys > prev_keys else float("nan")
    print(f"{keys:>9} {sources:>8} {mib(rss):10.1f} {mib(anon):12.1f} {mib(proc):16.1f} {(rss - idle) / keys:15.1f} "
          f"{(rss - warm) / (keys - warm_keys):15.1f} {(anon - warm_anon) / (keys - warm_keys):16.1f} {step:15.1f}")
    prev_keys, prev_rss = keys, rss
PY

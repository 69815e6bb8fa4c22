#!/usr/bin/env bash
# A 50 000-source spray against ollama-guard in block mode, and what a legitimate client sees,
# in one command:
#
#   tests/perf/spray.sh [SPRAY_SECONDS]       (default 60)
#
# nginx serves a static /api/tags body as the fast upstream; ollama-guard (release build,
# `mode = "block"`, the built-in rules, `trusted_proxies = ["127.0.0.1/32"]`, detection log to a
# file) sits in front of it.
#
# Legitimate clients: LEGIT_USERS (default 25) users, each on its own loopback address and its
# own keep-alive connection, each sending at most LEGIT_PER_USER (default 80) `GET /api/tags`,
# round robin with THINK_MS (default 10) between requests; the latency of every request (send to
# last byte, one Python process) is recorded. Several users because one user cannot give a p99
# and stay innocent: the built-in `excessive_requests` bans above 120 requests in 5 minutes and
# `metadata_enumeration` flags 100 model listings in 15 minutes, so each user stays at 80.
# The quiet phase uses 127.0.1.x, the spray phase fresh users on 127.0.2.x.
#
# The spray, for SPRAY_SECONDS:
#   - wrk -t2 -c32 from 127.0.0.1 (a trusted proxy) with a Lua script giving every request an
#     X-Forwarded-For: round robin over SOURCES (default 50 000) sources 10.x.y.z; every
#     HOT_EVERY-th (default 4th) request instead goes to one of the first HOT (default 500) of
#     them, which cross the `excessive_requests` threshold and are banned (block mode); flat out,
#     or, with SPRAY_DELAY_MS=D, each connection waits D ms before each request (a rate-limited
#     spray: at most 32 x 1000 / D requests/s);
#   - one Python process connecting from real, distinct loopback addresses (127.100.0.1 on,
#     Linux routes all of 127/8 to lo and a client may bind() any of them), PEER_REQUESTS
#     (default 3) pipelined requests per connection, one connection per address, up to PEERS
#     (default 50 000) addresses, one connection at a time.
# The legitimate users of the spray phase start 5 s into it and must finish before it ends.
#
# Printed: the legit p50/p99/max quiet and under spray (target: p99 within 2x), the spray's
# throughput, detections by rule and action, bans, blocked requests, tracked keys, RSS, and
# whether any legitimate user was banned or even named in a detection (it must not be).
# env GUARD_BIN=path measures that build instead of building the work tree, GUARD_ARGS adds
# options to its command line (e.g. "--cpu-affinity off"). CONTROL=nginx is the
# control run: an nginx proxy (worker_processes 2, no bans) in the guard's place under the same
# spray, so the machine's share of the legitimate client's p99 can be told from the guard's (the
# guard-only figures then read 0, and RSS is nginx's master process only).
set -euo pipefail
cd "$(dirname "$0")/../.."
spray_secs=${1:-60}
sources=${SOURCES:-50000}; hot=${HOT:-500}; hot_every=${HOT_EVERY:-4}
peers=${PEERS:-50000}; peer_requests=${PEER_REQUESTS:-3}
users=${LEGIT_USERS:-25}; per_user=${LEGIT_PER_USER:-80}; think_ms=${THINK_MS:-10}
delay_ms=${SPRAY_DELAY_MS:-0}
. tests/perf/common.sh
need wrk nginx python3 curl

# --- fast upstream: nginx answering every path with the simulator's /api/tags body -------------
fast_upstream_only

# --- the front: the guard, or (CONTROL=nginx) an nginx proxy in its place ----------------------
port=$(free_port); admin=$(free_port)
if [ "${CONTROL:-}" = nginx ]; then
  cat >"$work/front.conf" <<NGINX
worker_processes 2;
pid $work/front.pid;
error_log $work/front-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$fast; keepalive 256; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
NGINX
  "$NGINX" -c "$work/front.conf" -g 'daemon off;' & guard=$!
  pids+=("$guard")
  : >"$work/detections.jsonl"
else
  cat >"$work/guard.toml" <<TOML
mode = "block"
trusted_proxies = ["127.0.0.1/32"]
TOML
  # shellcheck disable=SC2086 # GUARD_ARGS is a list of options
  "$bin" --config "$work/guard.toml" --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$fast" \
    --admin-listen "127.0.0.1:$admin" --detection-log "$work/detections.jsonl" --log-level warn ${GUARD_ARGS:-} \
    2>"$work/guard.err" & guard=$!
  pids+=("$guard")
  for _ in $(seq 200); do curl -fs -o /dev/null "http://127.0.0.1:$admin/metrics" && break; sleep 0.05; done
fi
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$fast/api/tags" && break; sleep 0.05; done
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/api/tags" && break; sleep 0.05; done
vmrss() { awk '/^VmRSS:/ {print $2}' "/proc/$guard/status"; }

# --- the legitimate users ------------------------------------------------------------------------
cat >"$work/legit.py" <<'PY'
"""USERS users on NET.1.., each its own keep-alive connection; round robin; latency per request."""
import json, socket, sys, time
port, net, users, per_user, think_ms, deadline, out = sys.argv[1:]
users, per_user, think, deadline = int(users), int(per_user), int(think_ms) / 1000, float(deadline)
req = f"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
def connect(addr):
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((addr, 0))
    s.connect(("127.0.0.1", int(port)))
    return s
def exchange(s):
    """One request; the status, after reading exactly one response (Content-Length bodies)."""
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(int(l.split(b":", 1)[1]) for l in lines[1:] if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return status
addrs = [f"{net}.{i + 1}" for i in range(users)]
socks = {a: connect(a) for a in addrs}
lat, statuses, errors = [], {}, 0
for _ in range(per_user):
    for a in addrs:
        if time.time() > deadline:
            break
        t = time.perf_counter_ns()
        try:
            st = exchange(socks[a])
        except (OSError, ConnectionError, StopIteration, ValueError):
            errors += 1
            socks[a] = connect(a)
            continue
        lat.append((time.perf_counter_ns() - t) / 1e6)
        statuses[st] = statuses.get(st, 0) + 1
        time.sleep(think)
json.dump({"lat_ms": lat, "statuses": statuses, "errors": errors, "addrs": addrs}, open(out, "w"))
PY

# --- real loopback peers -------------------------------------------------------------------------
cat >"$work/peers.py" <<'PY'
"""One connection per distinct loopback address 127.100.0.1 on, REQS pipelined requests each."""
import json, socket, sys, time
port, peers, reqs, deadline, out = sys.argv[1:]
peers, reqs, deadline = int(peers), int(reqs), float(deadline)
one = f"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
last = f"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
payload = one * (reqs - 1) + last
done = answered = refused = errors = 0
t0 = time.time()
for i in range(1, peers + 1):
    if time.time() > deadline:
        break
    addr = f"127.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
    try:
        s = socket.socket()
        s.bind((addr, 0))
        s.connect(("127.0.0.1", int(port)))
        s.sendall(payload)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        answered += buf.count(b"HTTP/1.1 200")
        refused += buf.count(b"HTTP/1.1 ") - buf.count(b"HTTP/1.1 200")
        done += 1
    except OSError:
        errors += 1
json.dump({"peers": done, "answered": answered, "other_status": refused, "errors": errors,
           "secs": time.time() - t0}, open(out, "w"))
PY

cat >"$work/spray.lua" <<LUA
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
-- k counts requests, j walks the sources, h the hot ones
local k, j, h
-- (wrk calls request() once on thread 0 before the run, to inspect it: no matter here)
function init(args) k = 0; j = id * 7919; h = id * 250 end
local function ip(i)
  return string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
end
if $delay_ms > 0 then
  function delay() return $delay_ms end
end
function request()
  k = k + 1
  local i
  if k % $hot_every == 0 then
    h = h + 1
    i = h % $hot
  else
    j = j + 1
    i = j % $sources
  end
  return wrk.format("GET", "/api/tags", { ["X-Forwarded-For"] = ip(i) })
end
LUA

# --- quiet, then under spray ------------------------------------------------------------------
now() { date +%s.%N; }
echo "quiet: $users users x $per_user requests, ${think_ms} ms apart"
python3 "$work/legit.py" "$port" 127.0.1 "$users" "$per_user" "$think_ms" "$(python3 -c "import time; print(time.time() + 600)")" \
  "$work/quiet.json"
rss_quiet=$(vmrss)

# The built-in tumbling windows are 5 minutes, aligned to the clock: the spray must fit in one,
# or the hot sources' counts restart mid-spray.
left=$(( 300 - $(date +%s) % 300 ))
if [ "$left" -lt $((spray_secs + 10)) ]; then
  echo "waiting ${left}s for a fresh 5-minute window (built-in tumbling windows end at :00, :05, ...)"
  sleep $((left + 1))
fi
window=$(( $(date +%s) / 300 ))
echo "spray: ${spray_secs}s; $sources XFF sources ($hot hot, every ${hot_every}th request), up to $peers loopback peers"
end=$(python3 -c "import time; print(time.time() + $spray_secs)")
wrk -t2 -c32 -d"${spray_secs}s" -s "$work/spray.lua" "http://127.0.0.1:$port/api/tags" >"$work/wrk.out" 2>&1 &
wrkpid=$!; pids+=("$wrkpid")
python3 "$work/peers.py" "$port" "$peers" "$peer_requests" "$end" "$work/peers.json" & peerpid=$!
pids+=("$peerpid")
( while kill -0 "$wrkpid" 2>/dev/null; do vmrss; sleep 1; done >"$work/rss.txt" ) & pids+=($!)
sleep 5
legit_start=$(now)
python3 "$work/legit.py" "$port" 127.0.2 "$users" "$per_user" "$think_ms" "$(python3 -c "print($end - 1)")" "$work/spray.json"
legit_end=$(now)
wait "$wrkpid" || true
wait "$peerpid" || true
load=$(uptime | sed 's/.*load average: //')
[ "$(( $(date +%s) / 300 ))" = "$window" ] || echo "warning: a 5-minute window ended during the spray" >&2
sleep 2 # the ticker refreshes the gauges
if [ "${CONTROL:-}" = nginx ]; then
  : >"$work/metrics.txt"; echo '[]' >"$work/bans.json"
else
  curl -fs "http://127.0.0.1:$admin/metrics" >"$work/metrics.txt"
  curl -fs "http://127.0.0.1:$admin/api/bans" >"$work/bans.json"
fi
rss_end=$(vmrss)

python3 - "$work" "$spray_secs" "$legit_start" "$legit_end" "$rss_quiet" "$rss_end" "$load" <<'PY'
import json, re, statistics, sys
work, spray_secs, l0, l1, rss_quiet, rss_end, load = sys.argv[1:]
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
quiet, spray = (json.load(open(f"{work}/{n}.json")) for n in ("quiet", "spray"))
for name, r in (("quiet", quiet), ("under spray", spray)):
    if not r["lat_ms"]:
        sys.exit(f"error: the legitimate client finished no request {name}: lengthen the spray")
print(f"\n{'legit client':14} {'requests':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses")
for name, r in (("quiet", quiet), ("under spray", spray)):
    v = r["lat_ms"]
    print(f"{name:14} {len(v):8} {pct(v, 50):8.3f} {pct(v, 90):8.3f} {pct(v, 99):8.3f} {max(v):8.3f}  "
          f"{r['statuses']} errors={r['errors']}")
ratio = pct(spray["lat_ms"], 99) / pct(quiet["lat_ms"], 99)
print(f"p99 under spray / quiet: {ratio:.2f} (target <= 2: {'met' if ratio <= 2 else 'NOT met'})")
print(f"legit phase under spray: {float(l1) - float(l0):.1f} s of the {spray_secs} s spray")

wrk = open(f"{work}/wrk.out").read()
rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk)
total = re.search(r"(\d+) requests in", wrk)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
sock = re.search(r"Socket errors: (.*)", wrk)
print(f"\nspray (wrk, X-Forwarded-For): {total.group(1) if total else '?'} requests, "
      f"{float(rps.group(1)) if rps else 0:.0f} req/s, non-2xx {non2xx.group(1) if non2xx else 0}"
      f"{', socket errors ' + sock.group(1) if sock else ''}")
peers = json.load(open(f"{work}/peers.json"))
print(f"spray (loopback peers): {peers['peers']} distinct addresses in {peers['secs']:.1f} s "
      f"({peers['peers'] / max(peers['secs'], 1e-9):.0f} connections/s), {peers['answered']} answered 200, "
      f"{peers['other_status']} other statuses, {peers['errors']} connection errors")

metrics = open(f"{work}/metrics.txt").read()
def series(name):
    out = {}
    for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", metrics, re.M):
        v = float(m.group(2))
        if v:
            out[m.group(1) or ""] = v
    return out
print("\ndetections_total (non-zero):")
for labels, v in sorted(series("ollama_guard_detections_total").items()):
    print(f"  {labels} {v:.0f}")
for name in ("active_bans", "blocked_requests_total", "aborted_requests_total", "tracked_keys", "tracked_key_evictions_total",
             "connections_rejected_total", "log_lines_dropped_total"):
    s = series(f"ollama_guard_{name}")
    print(f"{name}: {sum(s.values()):.0f} {dict((k, int(v)) for k, v in s.items()) if len(s) > 1 or (s and '' not in s) else ''}")
rss = [int(x) for x in open(f"{work}/rss.txt").read().split()] or [0]
print(f"RSS (VmRSS): after the quiet phase {int(rss_quiet) / 1024:.1f} MiB, peak during the spray "
      f"{max(rss) / 1024:.1f} MiB, after {int(rss_end) / 1024:.1f} MiB")

bans = json.load(open(f"{work}/bans.json"))
legit = set(quiet["addrs"]) | set(spray["addrs"])
banned_legit = [b for b in bans if b.get("src", "").split("/")[0] in legit]
named = set()
for line in open(f"{work}/detections.jsonl"):
    e = json.loads(line)
    if e.get("src", "").split("/")[0] in legit:
        named.add((e["src"], e["event"], e.get("rule")))
by_rule = {}
for b in bans:
    by_rule[b.get("rule")] = by_rule.get(b.get("rule"), 0) + 1
print(f"/api/bans: {len(bans)} bans {by_rule}")
print(f"legitimate users ({len(legit)} addresses) banned: {len(banned_legit)}; named in any detection-log line: "
      f"{len(named)} {sorted(named)[:5] if named else ''}")
print(f"load average at the end of the spray: {load}")
if banned_legit or any(s != 200 for r in (quiet, spray) for s in map(int, r["statuses"])):
    print("ERROR: a legitimate user was banned or refused")
    sys.exit(1)
PY

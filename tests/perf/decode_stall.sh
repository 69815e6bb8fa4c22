#!/usr/bin/env bash
# What an expensive compressed body costs the other clients of the worker that decodes it:
#
#   tests/perf/decode_stall.sh [SECONDS] [ROUNDS]      (default 10 and 3)
#
# The guard (release build, default rules, WORKERS workers, default 1 so that both clients
# share it) stands in front of the fast upstream (nginx). A legitimate client sends `GET
# /api/tags` one after the other on one keep-alive connection for SECONDS and records each
# request's latency, first alone, then while an attacker sends, one after the other on
# ATTACKERS (default 1) connections, `POST /v1/completions` bodies sent `Content-Encoding:
# zstd` and shaped to be the policy stage's most expensive: about 100 KB compressed (read
# whole: under `policy.max_body`) expanding to just under 20 MiB of short top-level members,
# within the 200-fold ratio limit, so each is decoded and scanned to its end and forwarded.
# Printed per round and target: the legitimate client's p50/p99/max alone and under the
# attack, and the attacker's bodies per second and statuses. `GUARD_BIN=path` measures that
# build, `BASELINE_BIN=path` adds an older one to the same interleaved rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
rounds=${2:-3}
attackers=${ATTACKERS:-1}
WORKERS=${WORKERS:-1}
. tests/perf/common.sh
need nginx python3 curl zstd

fast_upstream_only

# The body: a 135 000-byte string of random letters and digits (what gives the ratio its
# compressed bytes), then `"a":0,` members up to just under 20 MiB.
python3 - "$work/body.json" <<'PY'
import random, sys
random.seed(7)
pad = "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(135_000))
head = '{"model":"llama3.2","prompt":"hi","pad":"' + pad + '",'
tail = '"stream":false}'
n = (20 * 1024 * 1024 - 4096 - len(head) - len(tail)) // 6
with open(sys.argv[1], "w") as f:
    f.write(head + '"a":0,' * n + tail)
PY
zstd -q -3 -c "$work/body.json" >"$work/body.zst"
plain=$(stat -c %s "$work/body.json"); packed=$(stat -c %s "$work/body.zst")
echo "attack body: $packed bytes compressed, $plain decompressed ($((plain / packed))-fold)"

cat >"$work/clients.py" <<'PY'
import http.client, statistics, sys, threading, time
port, secs, attackers, body_path = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
body = open(body_path, "rb").read()
stop = threading.Event()
sent, statuses = [0], {}
def attack():
    c = http.client.HTTPConnection("127.0.0.1", port)
    while not stop.is_set():
        c.request("POST", "/v1/completions", body=body, headers={
            "Content-Type": "application/json", "Content-Encoding": "zstd"})
        r = c.getresponse(); r.read()
        sent[0] += 1
        statuses[r.status] = statuses.get(r.status, 0) + 1
        if r.getheader("connection", "").lower() == "close":
            c.close(); c = http.client.HTTPConnection("127.0.0.1", port)
threads = [threading.Thread(target=attack, daemon=True) for _ in range(attackers)]
for t in threads:
    t.start()
time.sleep(0.5 if attackers else 0)
c = http.client.HTTPConnection("127.0.0.1", port)
lat, end = [], time.monotonic() + secs
start = time.monotonic()
while time.monotonic() < end:
    t0 = time.perf_counter()
    c.request("GET", "/api/tags"); r = c.getresponse(); r.read()
    lat.append(time.perf_counter() - t0)
    assert r.status == 200, r.status
elapsed = time.monotonic() - start
stop.set()
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(f"{q(0.5):.3f} {q(0.99):.3f} {lat[-1] * 1000:.3f} {len(lat)} {sent[0] / elapsed:.1f} "
      + ",".join(f"{k}:{v}" for k, v in sorted(statuses.items())))
PY

targets=(guard)
[ -n "${BASELINE_BIN:-}" ] && targets+=(base)
declare -A exe=([guard]=$bin [base]=${BASELINE_BIN:-})
printf '%-6s %-5s %-6s %10s %10s %10s %9s %10s %s\n' target round phase 'p50 ms' 'p99 ms' 'max ms' requests 'bodies/s' statuses
for r in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    p=$(free_port); a=$(free_port)
    "${exe[$t]}" --listen "127.0.0.1:$p" --upstream "http://127.0.0.1:$fast" --admin-listen "127.0.0.1:$a" \
      --workers "$WORKERS" --detection-log /dev/null --log-level warn 2>"$work/$t.err" &
    gp=$!
    for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$p/api/tags" && break; sleep 0.05; done
    for phase in alone attack; do
      n=0; [ "$phase" = attack ] && n=$attackers
      read -r p50 p99 max count rate statuses < <(python3 "$work/clients.py" "$p" "$secs" "$n" "$work/body.zst")
      printf '%-6s %-5s %-6s %10s %10s %10s %9s %10s %s\n' "$t" "$r" "$phase" "$p50" "$p99" "$max" "$count" "$rate" "${statuses:--}"
    done
    kill "$gp"; wait "$gp" 2>/dev/null || true
  done
done

#!/usr/bin/env bash
# What the guard holds while many clients send request bodies slowly (README "How much is
# buffered at once"):
#
#   tests/perf/held_bodies.sh [CONNECTIONS] [ADDRESSES]      (default 2040 and 40)
#
# The guard (release build, default rules) stands in front of the simulator. CONNECTIONS
# connections, spread round-robin over ADDRESSES loopback source addresses (127.0.0.10, .11,
# ...; bind() before connect()), each send `POST /api/generate` declaring a 1 MiB JSON body
# (`Content-Length: 1048576`) and all of it but the last byte, then hold the connection open.
# Once no connection makes progress any more (and SETTLE seconds, default 3, after), printed:
# the guard's RSS (/proc VmRSS and VmHWM, and /metrics process_resident_memory_bytes), what
# the connections were answered (503 split by the "everyone" / "this client" message, other
# statuses, reset without answer, still held), refused_requests_total{reason="busy"}, and the
# status of an ordinary `POST /api/chat` sent meanwhile from 127.0.0.99.
# env GUARD_BIN=path measures that build instead of building the work tree.
set -euo pipefail
cd "$(dirname "$0")/../.."
conns=${1:-2040}
addrs=${2:-40}
settle=${SETTLE:-3}
. tests/perf/common.sh
need python3 curl
start_simulator
guard=$(free_port)
admin=$(free_port)

# Each source holds ceil(CONNECTIONS / ADDRESSES) connections: keep them under its limit.
per=$(( (conns + addrs - 1) / addrs ))
[ "$per" -lt 256 ] && per=256
"$bin" --listen "127.0.0.1:$guard" --upstream "http://127.0.0.1:$sim" --admin-listen "127.0.0.1:$admin" \
  --max-connections-per-source "$per" --detection-log /dev/null --log-level warn 2>"$work/guard.err" &
gpid=$!
pids+=("$gpid")
for _ in $(seq 200); do
  curl -fs -o /dev/null "http://127.0.0.1:$guard/api/tags" && break
  kill -0 "$gpid" 2>/dev/null || { cat "$work/guard.err" >&2; exit 1; }
  sleep 0.05
done
curl -fs -o /dev/null "http://127.0.0.1:$guard/api/tags" || { echo "error: the guard does not answer" >&2; exit 1; }
echo "guard pid $gpid on 127.0.0.1:$guard (admin $admin), simulator on $sim;" \
  "$conns connections from $addrs addresses, max_connections_per_source $per"

python3 - "$guard" "$admin" "$gpid" "$conns" "$addrs" "$settle" <<'PY'
import errno, http.client, re, resource, selectors, socket, sys, time, urllib.request
port, admin, gpid, n, naddr = map(int, sys.argv[1:6])
settle = float(sys.argv[6])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < n + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
SIZE = 1 << 20
prefix = b'{"model":"m","prompt":"'
body = prefix + b"a" * (SIZE - len(prefix) - 2) + b'"}'
assert len(body) == SIZE
head = (f"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {SIZE}\r\n\r\n").encode()
payload = memoryview(head + body[:-1])  # all but the last byte

sel = selectors.DefaultSelector()
conns = []
for i in range(n):
    s = socket.socket()
    # The port is picked at connect(), knowing the destination (no clash with TIME_WAIT).
    s.setsockopt(socket.SOL_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
    s.bind((f"127.0.0.{10 + i % naddr}", 0))
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    c = {"s": s, "off": 0, "rx": b"", "end": None}  # end: None (open), "eof", "reset"
    conns.append(c)
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

def done(c):
    return c["end"] is not None or c["rx"] or c["off"] == len(payload)

t0 = time.monotonic()
last = t0
while time.monotonic() - last < 2 and time.monotonic() - t0 < 240:
    for key, ev in sel.select(timeout=0.5):
        c = key.data; s = c["s"]
        progressed = False
        if ev & selectors.EVENT_READ:
            try:
                d = s.recv(65536)
                c["rx"] += d
                if not d:
                    c["end"] = "eof"
                progressed = True
            except BlockingIOError:
                pass
            except OSError:
                c["end"] = "reset"; progressed = True
        if c["end"] is None and not c["rx"] and c["off"] < len(payload) and ev & selectors.EVENT_WRITE:
            try:
                c["off"] += s.send(payload[c["off"]:c["off"] + 262144]); progressed = True
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno in (errno.ECONNREFUSED,):
                    raise
                c["end"] = "reset"; progressed = True
        if progressed:
            last = time.monotonic()
        want = 0 if c["end"] else selectors.EVENT_READ | (0 if done(c) else selectors.EVENT_WRITE)
        if want == 0:
            sel.unregister(s)
        elif want != key.events:
            sel.modify(s, want, c)
sent_s = time.monotonic() - t0
time.sleep(settle)
# Late answers (a reset may still leave the answer readable).
for c in conns:
    try:
        c["s"].setblocking(False)
        while True:
            d = c["s"].recv(65536)
            if not d:
                c["end"] = c["end"] or "eof"; break
            c["rx"] += d
    except BlockingIOError:
        pass
    except OSError:
        c["end"] = c["end"] or "reset"

def metrics():
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read().decode()
    get = lambda pat: next((float(m.group(1)) for m in re.finditer(pat + r" ([0-9.e+]+)$", text, re.M)), None)
    return (get(r"process_resident_memory_bytes"),
            get(r'ollama_guard_refused_requests_total\{reason="busy"\}'),
            get(r"ollama_guard_open_connections"),
            {m.group(1): float(m.group(2)) for m in re.finditer(
                r'ollama_guard_connections_rejected_total\{reason="(\w+)"\} ([0-9.e+]+)', text)})
def status(key):
    with open(f"/proc/{gpid}/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))

# The ordinary chat, from another address, while the bodies are held.
t = time.monotonic()
hc = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.99", 0))
hc.request("POST", "/api/chat", body=b'{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}',
           headers={"Content-Type": "application/json"})
r = hc.getresponse(); chat_body = r.read()
chat = (r.status, (time.monotonic() - t) * 1000, chat_body[:160].decode(errors="replace"))
rss, hwm = status("VmRSS"), status("VmHWM")
prss, busy, open_c, rejected = metrics()

kinds = {}
for c in conns:
    m = re.match(rb"HTTP/1\.1 (\d+)", c["rx"])
    if m:
        k = m.group(1).decode()
        if k == "503":
            k += " (this client's share)" if b"from this client" in c["rx"] else " (everyone's total)"
            if not re.search(rb"\r\nretry-after: *1\r\n", c["rx"], re.I):
                k += " without Retry-After: 1"
    elif c["end"]:
        k = f"{c['end']} without answer"
    elif c["off"] == len(payload):
        k = "held (all but the last byte sent)"
    else:
        k = f"held (stalled after {c['off']} bytes sent)" if c["off"] < 65536 else "held (stalled mid-body)"
    kinds[k] = kinds.get(k, 0) + 1
n503 = sum(v for k, v in kinds.items() if k.startswith("503"))
mb = lambda b: f"{b / 1e6:.0f} MB ({b / 2**20:.0f} MiB)"
print(f"sending phase: {sent_s:.1f} s, then {settle:g} s settle")
print(f"guard RSS (/proc VmRSS): {mb(rss)}")
print(f"guard peak RSS (/proc VmHWM): {mb(hwm)}")
print(f"guard RSS (/metrics process_resident_memory_bytes): {mb(prss) if prss is not None else 'absent'}")
print(f"503 answers: {n503} of {n} connections")
for k, v in sorted(kinds.items()):
    print(f"  connections {k}: {v}")
print(f'refused_requests_total{{reason="busy"}}: {busy if busy is None else int(busy)}')
print(f"open_connections: {open_c if open_c is None else int(open_c)}; connections_rejected_total: "
      + (", ".join(f"{k}={int(v)}" for k, v in sorted(rejected.items())) or "none"))
print(f"chat from 127.0.0.99: {chat[0]} in {chat[1]:.1f} ms" + ("" if chat[0] == 200 else f": {chat[2]}"))
for c in conns:
    c["s"].close()
PY
kill -0 "$gpid" 2>/dev/null || { echo "error: the guard exited" >&2; cat "$work/guard.err" >&2; exit 1; }

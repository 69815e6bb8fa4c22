#!/usr/bin/env bash
# Memory per tracked detection key, measured as process memory (peak RSS), not estimated.
#
# Two corpora of N [GIN] lines in one quarter hour: one where every line comes from a
# different IPv4 source, one where every line comes from the same source. With the built-in
# rules, each /api/tags request of a new source creates 3 keys (excessive_requests and
# endpoint_scan tumbling, metadata_enumeration sliding) and none reaches a threshold, so
# the difference in peak RSS divided by the key difference is the cost of a key, map
# overhead and allocator included.
#
# Usage: tests/perf/memory_bench.sh [N]   (default 1000000)
# env GUARD_BIN=path measures that build instead of building the work tree (which goes to
# $CARGO_TARGET_DIR, default target/).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000000}
if [ -n "${GUARD_BIN:-}" ]; then
  bin=$GUARD_BIN
else
  cargo build --release --quiet
  bin=${CARGO_TARGET_DIR:-target}/release/ollama-guard
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'max_tracked_keys = 100000000\n' >"$work/keys.toml"
python3 - "$work" "$n" <<'PY'
import sys
work, n = sys.argv[1], int(sys.argv[2])
line = '[GIN] 2025/10/02 - 14:{m:02d}:{s:02d} | 200 |    1.193025ms | {ip:>15} | GET      "/api/tags"\n'
with open(f"{work}/many.log", "w") as many, open(f"{work}/one.log", "w") as one:
    for i in range(n):
        m, s = 45 + (i * 14 // n), (i * 7) % 60
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        many.write(line.format(m=m, s=s, ip=ip))
        one.write(line.format(m=m, s=s, ip="10.0.0.1"))
PY
peak() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
PY
}
one=$(peak "$bin" scan --config "$work/keys.toml" --format jsonl "$work/one.log")
many=$(peak "$bin" scan --config "$work/keys.toml" --format jsonl "$work/many.log")
keys=$(( 3 * (n - 1) ))
python3 - "$one" "$many" "$keys" "$n" <<'PY'
import sys
one, many, keys, n = map(int, sys.argv[1:])
print(f"lines: {n}; peak RSS one source: {one / 2**20:.1f} MiB; {n} sources: {many / 2**20:.1f} MiB")
print(f"extra keys: {keys} (3 per source: 2 tumbling, 1 sliding)")
print(f"bytes per tracked key (peak RSS difference / extra keys): {(many - one) / keys:.1f}")
PY

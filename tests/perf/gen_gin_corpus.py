#!/usr/bin/env python3
"""Writes a realistic, seeded Ollama server log for the `scan` benchmark.

Lines are byte-compatible with gin v1.10's default formatter (see docs/seed-rule.md): mostly
fast API calls (tags, show, ps, version, embeddings, model lists) with microsecond to
millisecond latencies, some generations of seconds, a few slow ones above 55 s and a few
minutes long; about 50 sources, a few of them IPv6 (one written in upper case); about a
quarter of the lines carry a journald prefix, and about 1% are other server output.

Usage: gen_gin_corpus.py OUT_FILE [LINES] [SEED]
"""

import random
import sys
import time

ROUTES_FAST = [
    ("GET", "/api/tags"),
    ("POST", "/api/show"),
    ("GET", "/api/ps"),
    ("GET", "/api/version"),
    ("HEAD", "/"),
    ("GET", "/v1/models"),
    ("POST", "/api/embed"),
    ("POST", "/v1/embeddings"),
    ("GET", "/api/tags?refresh=1"),
]
ROUTES_GEN = [
    ("POST", "/api/generate"),
    ("POST", "/api/chat"),
    ("POST", "/v1/chat/completions"),
]
OTHER_LINES = [
    'time=2025-10-02T12:00:00.000Z level=INFO source=server.go:1045 msg="llama runner started in 2.51 seconds"',
    "llama_model_loader: - kv  14:                          general.file_type u32              = 15",
    '[GIN-debug] GET    /api/tags                 --> github.com/ollama/ollama/server.(*Server).ListHandler-fm (5 handlers)',
]


def frac(value, unit):
    whole, rem = divmod(value, unit)
    if not rem:
        return str(whole)
    digits = str(rem).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def go_duration(ns):
    """Go's Duration.String() after gin's truncation to whole seconds above one minute."""
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return frac(ns, 1_000) + "\u00b5s"
    if ns < 1_000_000_000:
        return frac(ns, 1_000_000) + "ms"
    if ns > 60_000_000_000:
        ns -= ns % 1_000_000_000
    if ns < 60_000_000_000:
        return frac(ns, 1_000_000_000) + "s"
    secs = ns // 1_000_000_000
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h" if h else "") + f"{m}m{s}s"


def sources(rng):
    v4 = [f"10.0.{rng.randrange(4)}.{rng.randrange(2, 250)}" for _ in range(35)]
    v4 += [f"192.168.1.{rng.randrange(2, 250)}" for _ in range(10)]
    v6 = ["2001:db8::1f", "2001:db8:0:7::42", "fe80::1ff:fe23:4567:890a", "::1", "2001:DB8::BEEF"]
    return v4 + ["127.0.0.1"] + v6


def latency_ns(rng, generation):
    if not generation:
        return rng.choice((rng.randrange(5_000, 900_000), rng.randrange(1_000_000, 250_000_000)))
    roll = rng.random()
    if roll < 0.90:
        return rng.randrange(500_000_000, 45_000_000_000)
    if roll < 0.97:
        return rng.randrange(45_000_000_000, 60_000_000_000)
    return rng.randrange(60_000_000_000, 1_800_000_000_000)


def main():
    out = sys.argv[1]
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 20251002)
    srcs = sources(rng)
    weights = [rng.paretovariate(1.2) for _ in srcs]
    start = 1_759_406_400  # 2025-10-02 12:00:00
    span = 24 * 3600
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        buf = []
        for i in range(lines):
            t = start + i * span // lines
            tm = time.gmtime(t)
            ts = time.strftime("%Y/%m/%d - %H:%M:%S", tm)
            if rng.random() < 0.01:
                buf.append(rng.choice(OTHER_LINES))
                continue
            generation = rng.random() < 0.15
            method, path = rng.choice(ROUTES_GEN if generation else ROUTES_FAST)
            status = 200 if rng.random() < 0.97 else rng.choice((400, 404, 500))
            ip = rng.choices(srcs, weights)[0]
            lat = go_duration(latency_ns(rng, generation))
            line = f'[GIN] {ts} | {status:3d} | {lat:>13} | {ip:>15} | {method:<7}  "{path}"'
            if rng.random() < 0.25:
                line = time.strftime("%b %d %H:%M:%S", tm) + " gpu-host ollama[1543]: " + line
            buf.append(line)
            if len(buf) >= 10_000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")


if __name__ == "__main__":
    main()

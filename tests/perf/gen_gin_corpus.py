#!/usr/bin/env python3
"""Writes a realistic, seeded Ollama server log for the `scan` benchmark.

Lines are byte-compatible with gin v1.10's default formatter (see docs/seed-rule.md): mostly
fast API calls (tags, show, ps, version, embeddings, model lists) with microsecond to
millisecond latencies, some generations of seconds, a few slow ones above 55 s and a few
minutes long; about 50 sources, a few of them IPv6 (one written in upper case); about a
quarter of the lines carry a journald prefix, and about 1% are other server output.

Usage: gen_gin_corpus.py OUT_FILE [LINES] [SEED] [--slow-fraction F]

--slow-fraction F (default 0) makes a row-heavy corpus: that fraction of the lines become
generations slower than 55 s (`model_exfiltration` flags every one) from a pool of 2^20
addresses in 10.128.0.0/9, so nearly every slow line is a row of its own: 0.1 gives about
200 000 output rows out of 2 000 000 lines (the default corpus gives a few thousand).
"""

import argparse
import random
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


def slow_line_fields(rng):
    """A slow generation from the wide source pool: 55 s to 60 s, or minutes long."""
    ip = f"10.{128 + rng.randrange(128)}.{rng.randrange(256)}.{rng.randrange(2, 34)}"
    method, path = rng.choice(ROUTES_GEN)
    if rng.random() < 0.8:
        ns = rng.randrange(55_100_000_000, 60_000_000_000)
    else:
        ns = rng.randrange(60_000_000_000, 1_800_000_000_000)
    return ip, method, path, ns


def main():
    parser = argparse.ArgumentParser(description="Writes a seeded Ollama server log.")
    parser.add_argument("out")
    parser.add_argument("lines", nargs="?", type=int, default=2_000_000)
    parser.add_argument("seed", nargs="?", type=int, default=20251002)
    parser.add_argument("--slow-fraction", type=float, default=0.0)
    args = parser.parse_args()
    out, lines, slow_fraction = args.out, args.lines, args.slow_fraction
    rng = random.Random(args.seed)
    # Its own generator, so the default corpus (--slow-fraction 0) stays byte-identical.
    slow_rng = random.Random(args.seed + 1)
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
            ns = latency_ns(rng, generation)
            if slow_fraction and slow_rng.random() < slow_fraction:
                ip, method, path, ns = slow_line_fields(slow_rng)
            lat = go_duration(ns)
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

"""The front's on-path time per request, from `perf script` of its syscall tracepoints.

Reads `perf script --ns -F comm,pid,tid,cpu,time,event,trace` output of
`raw_syscalls:sys_enter` / `sys_exit` events. For each thread, a read-type system call that
returned data on descriptor X, followed at the thread's next write-type call by a write on a
descriptor Y other than X, is one sample of X -> Y: the time from that read's return to that
write's entry, that is, user-space work between receiving a message and passing it on (a
request read from the client and written upstream, or a response read from the upstream and
written to the client). Prints one line: the two most frequent directions' medians, their sample
counts, the system calls seen between read and write, and the sum of the two medians.
"""

import collections
import re
import statistics
import sys

READ = {0, 17, 19, 45, 47, 295}  # read pread64 readv recvfrom recvmsg preadv (x86-64)
WRITE = {1, 18, 20, 44, 46, 296}  # write pwrite64 writev sendto sendmsg pwritev
EVENT = re.compile(
    r"^\s*\S+\s+(\d+)(?:/(\d+))?\s+\[\d+\]\s+([\d.]+):\s+"
    r"raw_syscalls:sys_(enter|exit):\s+NR (\d+) (.*)$"
)


def main(path):
    entered = {}  # tid -> (nr, fd)
    last_read = {}  # tid -> (fd, time of the read's return, system calls since)
    samples = collections.defaultdict(list)
    between = collections.defaultdict(int)
    for line in open(path, encoding="utf-8", errors="replace"):
        m = EVENT.match(line)
        if not m:
            continue
        pid, tid, ts, kind, nr, rest = m.groups()
        tid = tid or pid
        t = float(ts) * 1e6
        nr = int(nr)
        if kind == "enter":
            arg = re.match(r"\((\w+)", rest)
            fd = int(arg.group(1), 16) if arg else -1
            entered[tid] = (nr, fd)
            if tid in last_read:
                x, t0, calls = last_read[tid]
                if nr in WRITE:
                    del last_read[tid]
                    if fd != x:
                        samples[(x, fd)].append(t - t0)
                        between[(x, fd)] += calls
                else:
                    last_read[tid] = (x, t0, calls + 1)
        else:
            ret = re.match(r"= (-?\d+)", rest)
            call = entered.pop(tid, None)
            if call and call[0] == nr and nr in READ and ret and int(ret.group(1)) > 0:
                last_read[tid] = (call[1], t, 0)
    top = sorted(samples.items(), key=lambda kv: -len(kv[1]))[:2]
    if len(top) < 2:
        sys.exit("fewer than two directions seen: no proxied requests traced")
    parts, total = [], 0.0
    for (x, y), v in top:
        med = statistics.median(v)
        total += med
        parts.append(
            f"fd {x}->{y} {med:6.2f} us (n={len(v)}, {between[(x, y)] / len(v):.2f} calls between)"
        )
    print(f"{total:7.2f} us on path = " + " + ".join(parts))


if __name__ == "__main__":
    main(sys.argv[1])

#!/usr/bin/env python3
"""Where a running process's resident memory is, by kind of mapping (/proc/<pid>/smaps).

Kinds: ``file:<name>`` for each mapped file (shared libraries, extension modules), ``heap``
(the brk heap: glibc's main arena), ``malloc_arenas`` (glibc's per-thread arenas: anonymous
mappings that start on a 64 MiB boundary), ``thread_stacks`` (anonymous mappings right
behind a guard page, as pthread allocates them), ``anon`` (the other anonymous mappings:
CPython's 1 MiB object arenas, which the kernel merges into larger mappings where they are
adjacent, and the large blocks malloc maps on their own), ``stack`` (the main thread's). Nothing is changed in the
process; its threads are counted from /proc/<pid>/task.

    tools/rss_breakdown.py PID [PID ...]

prints per process ``rss: pid=<n> total_kb=<n> threads=<n> <kind>=<kb> ...`` (the file
kinds summed as ``files``, the five largest named after it).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

ARENA_ALIGN = 64 << 20


def breakdown(pid: int) -> tuple[Counter[str], int]:
    """Resident kB by kind, and the number of threads."""
    kinds: Counter[str] = Counter()
    prev_guard_end = -1
    start = end = 0
    kind = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            perms, path = head[1], head[5] if len(head) > 5 else ""
            start, end = lo, hi
            if path.startswith("/"):
                kind = "file:" + os.path.basename(path)
            elif path == "[heap]":
                kind = "heap"
            elif path == "[stack]":
                kind = "stack"
            elif path.startswith("["):
                kind = "other"
            elif perms.startswith("---"):
                kind = "guard"
            elif start == prev_guard_end:
                kind = "thread_stacks"
            elif start % ARENA_ALIGN == 0:
                kind = "malloc_arenas"
            else:
                kind = "anon"
            if perms.startswith("---"):
                prev_guard_end = end
        elif head[0] == "Rss:":
            kinds[kind] += int(head[1])
    threads = len(os.listdir(f"/proc/{pid}/task"))
    return kinds, threads


def line(pid: int) -> str:
    kinds, threads = breakdown(pid)
    files = {k: v for k, v in kinds.items() if k.startswith("file:")}
    rest = {k: v for k, v in kinds.items() if not k.startswith("file:") and k != "guard"}
    top = sorted(files.items(), key=lambda kv: -kv[1])[:5]
    parts = [f"{k}={v}" for k, v in sorted(rest.items(), key=lambda kv: -kv[1])]
    return (
        f"rss: pid={pid} total_kb={sum(kinds.values())} threads={threads} "
        + " ".join(parts)
        + f" files={sum(files.values())} "
        + " ".join(f"{k}={v}" for k, v in top)
    )


def main(argv: list[str]) -> int:
    for pid in argv:
        print(line(int(pid)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

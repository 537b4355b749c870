#!/usr/bin/env python3
"""A sample clustered program for the lab, the demo and the tests.

It appends to a ledger one line when it starts, one every ``--tick`` seconds while it runs,
and one when it stops on SIGTERM:

    <server> <pid> <tag> start|tick|stop <CLOCK_MONOTONIC seconds>

Lines are short single writes to an O_APPEND file, so copies on several servers of one
machine (network namespaces share the kernel's monotonic clock) can share one ledger.
A copy killed with SIGKILL writes no stop line; its last tick bounds when it died.
``--crash-after N`` exits with status 3 after N seconds (supervision tests).
``--warmup S`` prepares for S seconds after the start line (ticking) before it serves,
and then writes a ``serving`` line (a program that loads its data first; ``tools/bench_aware.py``).
"""

from __future__ import annotations

import os
import signal
import sys
import time

USAGE = (
    "usage: sample_app.py --ledger FILE [--tag TAG] [--server NAME] [--tick SECONDS] "
    "[--crash-after SECONDS] [--warmup SECONDS]"
)
NUMBERS = ("tick", "crash_after", "warmup")


class Args:
    def __init__(self) -> None:
        self.ledger = ""
        self.tag = os.environ.get("NDSCLUST_TAG", "app")
        self.server = os.environ.get("NDSCLUST_SERVER", "?")
        self.tick = 0.05
        self.crash_after = 0.0
        self.warmup = 0.0


def parse(argv: list[str]) -> Args:
    """The options above, read by hand: argparse (or dataclasses) alone takes longer to
    import than the rest of this program takes to start, and failovers are timed to its
    first ledger line."""
    a = Args()
    it = iter(argv)
    for opt in it:
        if opt in ("-h", "--help"):
            print(USAGE)
            sys.exit(0)
        name = opt.removeprefix("--").replace("-", "_")
        if not opt.startswith("--") or name not in vars(a):
            sys.exit(f"{USAGE}\nunknown option {opt!r}")
        value = next(it, None)
        if value is None:
            sys.exit(f"{USAGE}\n{opt} needs a value")
        try:
            setattr(a, name, float(value) if name in NUMBERS else value)
        except ValueError:
            sys.exit(f"{USAGE}\n{opt}: {value!r} is not a number")
    if not a.ledger:
        sys.exit(f"{USAGE}\n--ledger is required")
    return a


def main() -> int:
    a = parse(sys.argv[1:])
    fd = os.open(a.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(what: str) -> None:
        os.write(fd, f"{a.server} {os.getpid()} {a.tag} {what} {time.monotonic():.6f}\n".encode())

    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    write("start")
    print(f"{a.tag} started on {a.server} pid {os.getpid()}", flush=True)
    began = time.monotonic()
    serve_at = began + a.warmup if a.warmup else None
    next_tick = began + a.tick
    while not stopping:
        wake = next_tick if serve_at is None else min(next_tick, serve_at)
        time.sleep(max(0.0, wake - time.monotonic()))
        if stopping:
            break
        now = time.monotonic()
        if serve_at is not None and now >= serve_at:
            write("serving")
            serve_at = None
        if now < next_tick:
            continue
        write("tick")
        next_tick = now + a.tick
        if a.crash_after and now - began >= a.crash_after:
            print(f"{a.tag} crashing on purpose", file=sys.stderr, flush=True)
            return 3
    write("stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())

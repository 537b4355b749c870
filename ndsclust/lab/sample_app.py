#!/usr/bin/env python3
"""A sample clustered program for the lab, the demo and the tests.

It appends to a ledger one line when it starts, one every ``--tick`` seconds while it runs,
and one when it stops on SIGTERM:

    <server> <pid> <tag> start|tick|stop <CLOCK_MONOTONIC seconds>

Lines are short single writes to an O_APPEND file, so copies on several servers of one
machine (network namespaces share the kernel's monotonic clock) can share one ledger.
A copy killed with SIGKILL writes no stop line; its last tick bounds when it died.
``--crash-after N`` exits with status 3 after N seconds (supervision tests).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ledger", required=True)
    p.add_argument("--tag", default=os.environ.get("NDSCLUST_TAG", "app"))
    p.add_argument("--server", default=os.environ.get("NDSCLUST_SERVER", "?"))
    p.add_argument("--tick", type=float, default=0.05)
    p.add_argument("--crash-after", type=float, default=0.0)
    a = p.parse_args()
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
    while not stopping:
        time.sleep(a.tick)
        if stopping:
            break
        write("tick")
        if a.crash_after and time.monotonic() - began >= a.crash_after:
            print(f"{a.tag} crashing on purpose", file=sys.stderr, flush=True)
            return 3
    write("stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A small TCP service for the lab's stack example (ndsclust/lab/stack.py) and its tests.

It listens on ``--port`` on every IPv4 address of its server (so also on a service address
added after it starts) and answers every connection with one line, ``<server> <tag>``,
then closes it. Like ``sample_app.py`` it appends ``start`` and ``stop`` lines to the
ledger (``<server> <pid> <tag> start|tick|stop <CLOCK_MONOTONIC seconds>``) and a ``tick``
every ``--tick`` seconds, so the lab's double-run check covers it too.

    echo_service.py --ledger FILE --tag TAG --port PORT [--tick SECONDS]
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time


def main(argv: list[str]) -> int:
    opts = dict(zip(argv[::2], argv[1::2], strict=False))
    ledger = opts.get("--ledger")
    port = opts.get("--port")
    if not ledger or not port or len(argv) % 2:
        sys.exit("usage: echo_service.py --ledger FILE --tag TAG --port PORT [--tick SECONDS]")
    tag = opts.get("--tag", os.environ.get("NDSCLUST_TAG", "echo"))
    server = os.environ.get("NDSCLUST_SERVER", "?")
    tick = float(opts.get("--tick", "0.05"))
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(what: str) -> None:
        os.write(fd, f"{server} {os.getpid()} {tag} {what} {time.monotonic():.6f}\n".encode())

    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", int(port)))
    listener.listen(64)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    write("start")
    answer = f"{server} {tag}\n".encode()
    next_tick = time.monotonic() + tick
    while not stopping:
        for _ in sel.select(timeout=max(0.0, next_tick - time.monotonic())):
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.sendall(answer)
                except OSError:
                    pass
        if time.monotonic() >= next_tick and not stopping:
            write("tick")
            next_tick = time.monotonic() + tick
    write("stop")
    sel.close()
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

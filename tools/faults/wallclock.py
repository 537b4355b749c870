"""Run a Python module with its wall clock offset: a clock step on one server of the lab
without touching the host's clock.

    python wallclock.py OFFSET_FILE -m MODULE [ARGS...]

``time.time`` and ``time.time_ns`` return the real wall clock plus the number of seconds
written in OFFSET_FILE (re-read every 50 ms; a missing or unreadable file means 0), so the
offset can be stepped while the program runs. CLOCK_MONOTONIC is left alone: the sentinel
takes every timeout from it, and the wall clock only stamps heartbeats (the timestamp
window of the lan channel) and events. The clock is replaced before MODULE is imported, so
a default argument such as ``wall=time.time`` is bound to the offset clock.
"""

from __future__ import annotations

import runpy
import sys
import threading
import time

POLL_INTERVAL = 0.05
_real_time = time.time
_real_time_ns = time.time_ns
_offset = 0.0


def _read(path: str) -> float:
    try:
        with open(path, encoding="ascii") as f:
            return float(f.read().strip() or 0.0)
    except (OSError, ValueError):
        return 0.0


def _poll(path: str) -> None:
    global _offset
    while True:
        _offset = _read(path)
        time.sleep(POLL_INTERVAL)


def _time() -> float:
    return _real_time() + _offset


def _time_ns() -> int:
    return _real_time_ns() + int(_offset * 1e9)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "-m":
        sys.exit("usage: wallclock.py OFFSET_FILE -m MODULE [ARGS...]")
    global _offset
    path, module, args = argv[0], argv[2], argv[3:]
    _offset = _read(path)
    time.time = _time
    time.time_ns = _time_ns
    threading.Thread(target=_poll, args=(path,), name="wallclock", daemon=True).start()
    sys.argv = [module, *args]
    sys.path[0] = ""  # as ``python -m`` has it: the working directory, not this script's
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])

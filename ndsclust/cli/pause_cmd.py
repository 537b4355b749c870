"""``ndsclust pause [--for DURATION] [--reason TEXT]`` and ``ndsclust resume``.

A pause is one attribute, ``ndsclustPause``, on the cluster base (``ndsclust/pause.py``):
every sentinel keeps its programs running and takes no automatic action until it is
removed or its time is up. What that means exactly is docs/operating.md, "Pause".
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from ndsclust.cli import common
from ndsclust.pause import Pause

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(value: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` or a sum of them (``1h30m``) in seconds."""
    text = value.strip().lower()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration: a number of seconds or e.g. 90s, 15m, 2h, 1h30m"
        )
    seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a duration must be positive")
    return seconds


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pause",
        help="hold every automatic action cluster-wide (failover, failback, restart)",
        description="Pause the cluster: every sentinel keeps its programs running under "
        "their leases and takes no automatic action (no failover, failback, restart, "
        "hand-off or move off a server in maintenance) until 'ndsclust resume' or the "
        "time given with --for. Operators' requests (load, unload, migrate, failback) are "
        "still carried out. See docs/operating.md, 'Pause'.",
    )
    p.add_argument(
        "--for",
        dest="duration",
        type=duration,
        metavar="DURATION",
        help="resume by itself after this long (90s, 15m, 2h, 1h30m); default: until resume",
    )
    p.add_argument("--reason", default="", help="why, shown by 'ndsclust status'")
    p.set_defaults(handler=cmd_pause)
    r = sub.add_parser(
        "resume",
        help="end a pause: automatic actions resume at once",
        description="Remove the cluster-wide pause. Every sentinel decides again at once: "
        "applications of servers that died during the pause fail over, exited programs "
        "are restarted, failbacks and maintenance moves happen.",
    )
    r.set_defaults(handler=cmd_resume)


def cmd_pause(args: argparse.Namespace) -> int:
    wall = time.time()
    until = None if args.duration is None else wall + args.duration
    reason = " ".join(str(args.reason).split())  # one line
    pause = Pause(until, reason)
    st = common.store(args)
    try:
        st.set_pause(pause)
        common.audit(st, "pause", text=pause.value())
    finally:
        st.close()
    print(pause.describe(wall))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        was = st.pause()
        if was is None:
            print("not paused", file=sys.stderr)
            return 0
        st.set_pause(None)
        common.audit(st, "resume", text=f"was={was.value()}")
    finally:
        st.close()
    print("resumed")
    return 0

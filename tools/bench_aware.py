#!/usr/bin/env python3
"""Failback time of a cluster-aware program next to a cluster-capable one (docs/design.md
sections 3 and 6; patent FIG. 7B and its comparison of the two kinds).

A two-server lab runs, with alpha as primary and beta as backup, the sample program
(``cap``, capable, ticking every 20 ms) and the aware example (``awr``,
``ndsclust.lab.aware_counter``, one item every 20 ms; registered by starting it once by
hand). Auto-recover is off for both, so each failback happens on an operator's request.

With ``--warmup S`` both programs take S seconds after they start before they serve (a
program loading its data): the capable one writes ``serving`` then, the aware one
prepares before it waits, so that its paused copy on the primary is ready to serve when
it is granted the start (what FIG. 7B loads it early for).

Each trial migrates both to beta (``migrate:beta``), waits until alpha has loaded the
aware program's paused copy (and it has warmed up), then requests the failback of ``cap``
and then of ``awr`` and measures, on CLOCK_MONOTONIC, from the request's write to the
primary's copy serving: the capable program's first ledger line (its ``serving`` line
with a warm-up), the aware program's ``start`` line (the start was granted). Split into: request -> the backup's copy stopped (its ``stop`` line),
and stopped -> active on alpha (host swap, then a fresh start or the paused copy let
through). Both ledgers are checked for double runs, the aware items for gaps and repeats.

The last line is exactly ``aware_failback_ms=<n> capable_failback_ms=<n>`` (medians).

    tools/bench_aware.py [--trials 10] [--fast] [--warmup S]

``--fast`` uses the shortest timings the configuration loader allows for 10 ms heartbeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab import aware_counter
from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.ledger import double_runs, lives
from ndsclust.model import Request, RequestKind, ServerName, Tag

A, B = ServerName("alpha"), ServerName("beta")
CAP, AWR = Tag("cap"), Tag("awr")

# The shortest timings the loader allows with 10 ms heartbeats: fence > 0.1 s kill
# allowance + 2 intervals; failover > max(lease, fence) + 2 x 0.01 + 0.001 x failover + 0.05.
FAST = {
    "timeouts": {"failover": 0.2, "fence": 0.125, "lease": 0.1, "loop_interval": 0.01},
    "intervals": 0.01,
}


def line_time(lab: LabCluster, tag: str, kind: str, server: str, after: float) -> float | None:
    """Time of the first ``kind`` line (start, stop, waiting) of ``tag`` on ``server``
    written at or after ``after``."""
    for line in lab.ledger_lines():
        parts = line.split()
        if (
            len(parts) == 5
            and parts[0] == server
            and parts[2] == tag
            and parts[3] == kind
            and float(parts[4]) >= after
        ):
            return float(parts[4])
    return None


def register_by_hand(lab: LabCluster, warmup: float = 0.0) -> None:
    sock = lab.servers[A].dir / "control.sock"
    wait_until(sock.exists, timeout=30, what="alpha's control socket")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NDSCLUST_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            aware_counter.MODULE,
            "--output",
            str(lab.ledger),
            "--tag",
            AWR,
            "--primary",
            A,
            "--backups",
            B,
            "--socket",
            str(sock),
            *(["--warmup", repr(warmup)] if warmup else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"registering {AWR} failed: {done.stderr.strip()}")


def move(
    lab: LabCluster, tag: Tag, request: Request, to: ServerName, serving: str = "start"
) -> tuple[float, float, float]:
    """Write ``request``; return (request time, backup stop time, ``to`` serving time):
    ``serving`` names the line that says so."""
    frm = B if to == A else A
    t0 = time.monotonic()
    lab.store().set_request(tag, request)
    wait_until(
        lambda: line_time(lab, tag, serving, to, t0) is not None,
        timeout=30,
        what=f"{tag} serving on {to}",
    )
    stopped = line_time(lab, tag, "stop", frm, t0)
    active = line_time(lab, tag, serving, to, t0)
    if stopped is None or active is None:
        seen = [ln for ln in lab.ledger_lines() if f" {tag} " in ln and float(ln.split()[-1]) >= t0]
        raise SystemExit(f"{tag}: no stop line on {frm} before serving on {to}: {seen[:20]}")
    return t0, stopped, active


def run(
    trials: int, fast: bool, options: Mapping[str, Any] | None = None, warmup: float = 0.0
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], str]:
    """``options``: LabCluster timing options (``Timings.lab_options``), instead of ``fast``;
    ``warmup``: seconds both programs take after they start before they serve."""
    opts: dict[str, Any] = dict(options) if options is not None else FAST if fast else {}
    aware: list[tuple[float, float]] = []
    capable: list[tuple[float, float]] = []
    # The program registers itself through alpha's sentinel: an operator under the ACLs.
    with LabCluster(2, log_level="warning", operator_servers=(A,), **opts) as lab:
        ready = ["--warmup", repr(warmup)] if warmup else []
        lab.add_app(CAP, A, [B], auto_recover=False, extra=["--tick", "0.02", *ready])
        register_by_hand(lab, warmup)
        lab.store().replace_app_attrs(AWR, {"ndsclustAutoRecover": ["FALSE"]})
        lab.wait_running(CAP, A, timeout=30)
        lab.wait_running(AWR, A, timeout=30)
        for i in range(trials):
            t = time.monotonic()
            for tag in (CAP, AWR):
                move(lab, tag, Request(RequestKind.MIGRATE, B), B)
            # FIG. 7B: alpha loads the aware program paused while beta hosts it.
            wait_until(
                lambda: line_time(lab, AWR, "waiting", A, t) is not None,
                timeout=30,
                what="the paused copy on alpha",
            )
            for tag, out, serving in (
                (CAP, capable, "serving" if warmup else "start"),
                (AWR, aware, "start"),
            ):
                t0, stopped, active = move(lab, tag, Request(RequestKind.FAILBACK), A, serving)
                out.append(((stopped - t0) * 1000, (active - stopped) * 1000))
            print(
                f"trial {i + 1}: capable {sum(capable[-1]):.0f} ms "
                f"(unload {capable[-1][0]:.0f} + start {capable[-1][1]:.0f}), "
                f"aware {sum(aware[-1]):.0f} ms "
                f"(unload {aware[-1][0]:.0f} + start {aware[-1][1]:.0f})",
                flush=True,
            )
        lines = lab.ledger_lines()
    doubles = double_runs(lives(aware_counter.ledger_lines(lines)))
    nums = [it.n for it in aware_counter.items(lines, AWR)]
    gaps = sorted(set(range(1, max(nums) + 1)) - set(nums))
    repeats = sorted(n for n, k in Counter(nums).items() if k > 1)
    check = f"double_runs={len(doubles)} items={len(nums)} gaps={len(gaps)} repeats={len(repeats)}"
    return aware, capable, check


def summary_line(aware: list[tuple[float, float]], capable: list[tuple[float, float]]) -> str:
    """``aware_failback_ms=<n> capable_failback_ms=<n>``: medians of ``run``'s trials."""
    return (
        f"aware_failback_ms={statistics.median(u + s for u, s in aware):.0f} "
        f"capable_failback_ms={statistics.median(u + s for u, s in capable):.0f}"
    )


def passed(check: str) -> bool:
    """``run``'s check found no double run, no gap and no repeat."""
    return check.startswith("double_runs=0 ") and check.endswith(" gaps=0 repeats=0")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--fast", action="store_true", help="shortest timings the loader allows")
    p.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds both programs take after they start before they serve",
    )
    a = p.parse_args()
    if not a.warmup >= 0:
        p.error("--warmup must be >= 0 seconds")
    aware, capable, check = run(a.trials, a.fast, warmup=a.warmup)
    settings = "fastest allowed (10 ms heartbeats)" if a.fast else "default"
    settings += f"; warmup {a.warmup:g} s"
    for name, parts in (("capable", capable), ("aware", aware)):
        print(
            f"{name}: unload median={statistics.median(u for u, _ in parts):.0f} ms, "
            f"swap+start median={statistics.median(s for _, s in parts):.0f} ms, "
            f"total min={min(u + s for u, s in parts):.0f} "
            f"max={max(u + s for u, s in parts):.0f} ms"
        )
    print(f"settings: {settings}; trials={a.trials}; {check}")
    print(summary_line(aware, capable))
    return 0 if passed(check) else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Failover and failback time on a local lab cluster (docs/design.md section 6).

Each trial SIGKILLs the host server of a sample program (its sentinel, lease guard,
program and slapd provider at once) and measures, on CLOCK_MONOTONIC, from the kill to the
backup's copy writing its first ledger line. The server is then restarted and the program
fails back by itself (auto-recover). Failback is measured separately on an application
without auto-recover: from the operator's ``ndsclustRequest: failback`` write to the
primary's copy starting (the hand-over itself: backup unloads, host swapped, primary loads).

The ledger of every trial is checked for double runs. The last line is exactly
``failover: p50_ms=<n> p99_ms=<n> failback_ms=<n> trials=<n> double_runs=<n>``.

    tools/bench_failover.py [--trials 20] [--fast | --timings FILE]

``--fast`` uses the shortest timings the configuration loader allows for 10 ms heartbeats;
``--timings FILE`` the heartbeat intervals, witness and timeouts of a sentinel
configuration file (e.g. ``deploy/sentinel.example.yaml``, ``tools.timings``), and
prints them on a ``timings:`` line before the last.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import LabError, wait_until
from ndsclust.ledger import double_runs, lives
from ndsclust.model import Request, RequestKind, ServerName, Tag
from tools.timings import Timings, read_timings

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")

# The shortest timings the loader allows with 10 ms heartbeats: fence > 0.1 s kill
# allowance + 2 intervals; failover > max(lease, fence) + 2 x 0.01 + 0.001 x failover + 0.05.
FAST = {
    "timeouts": {"failover": 0.2, "fence": 0.125, "lease": 0.1, "loop_interval": 0.01},
    "intervals": 0.01,
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def allow_flapping(lab: LabCluster) -> None:
    """Every trial fails the same application over again. Failovers no longer count towards
    flap damping (only program failures do); the limit is still lifted, through a
    configuration reload, so that no trial can ever be damped."""
    for server in lab.servers.values():
        # A sentinel takes SIGHUP once its handlers are in place (before its watch is up).
        wait_until(
            lambda: "event=directory_ready" in lab.log_tail(server.name),
            timeout=30,
            what=f"sentinel of {server.name} ready",
        )
        cfg = yaml.safe_load(server.config_path.read_text())
        cfg["supervision"] = {"flap_max_failovers": 1000}
        server.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        if server.pid is not None:
            os.kill(server.pid, signal.SIGHUP)


def run(
    trials: int, fast: bool, options: Mapping[str, Any] | None = None
) -> tuple[list[float], list[float], int]:
    """``options``: LabCluster timing options (``Timings.lab_options``), instead of ``fast``."""
    opts: dict[str, Any] = dict(options) if options is not None else FAST if fast else {}
    # Every wait covers a failover of the timings in use (30 s was sized for lab timings).
    timeouts: Mapping[str, Any] = opts.get("timeouts") or {}
    slack = 3 * float(timeouts.get("failover", 0.0))
    failovers: list[float] = []
    failbacks: list[float] = []
    with LabCluster(3, log_level="info", **opts) as lab:
        allow_flapping(lab)
        lab.add_app("web", A, [B, C], auto_recover=True)
        lab.add_app("db", A, [B, C], auto_recover=False)
        lab.wait_running("web", A, timeout=30)
        lab.wait_running("db", A, timeout=30)
        for i in range(trials):
            t0 = lab.kill_server(A)
            wait_until(
                lambda: lab.first_start_after("web", t0, server=B) is not None,
                timeout=30 + slack,
                what="web started on beta",
            )
            started = lab.first_start_after("web", t0, server=B)
            assert started is not None
            failovers.append((started - t0) * 1000)
            lab.wait_running("db", B, timeout=30 + slack)
            lab.restart_server(A)
            lab.wait_running("web", A, timeout=60 + slack)
            # Failback of db on the operator's word, timed from the request, once the
            # restarted provider's peers replicate from it again (they reconnect at their
            # next syncrepl retry, up to 1 s later, docs/platform.md fact 4): the hand-over
            # itself, not the directory's recovery, which the failover figure already includes.
            wait_until(
                lambda: lab.app("db").state.state.value == "awaiting-failback",
                timeout=30 + slack,
                what="db awaiting failback",
            )
            lab.directory.wait_replicating(timeout=10)
            t1 = time.monotonic()
            lab.store().set_request(Tag("db"), Request(RequestKind.FAILBACK))
            wait_until(
                lambda: lab.first_start_after("db", t1, server=A) is not None,
                timeout=30 + slack,
                what="db failed back to alpha",
            )
            back = lab.first_start_after("db", t1, server=A)
            assert back is not None
            failbacks.append((back - t1) * 1000)
            print(
                f"trial {i + 1}: failover {failovers[-1]:.0f} ms, failback {failbacks[-1]:.0f} ms",
                flush=True,
            )
        doubles = len(double_runs(lives(lab.ledger_lines())))
    return failovers, failbacks, doubles


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fast", action="store_true", help="shortest timings the loader allows")
    g.add_argument(
        "--timings",
        metavar="FILE",
        default=None,
        help="timings of this sentinel configuration (deploy/sentinel.example.yaml)",
    )
    p.add_argument(
        "--aware-trials",
        type=int,
        default=5,
        help="trials of the cluster-aware failback comparison (0: skip)",
    )
    a = p.parse_args()
    timings: Timings | None = None
    if a.timings:
        try:
            timings = read_timings(a.timings)
        except LabError as e:
            p.error(str(e))
    options = timings.lab_options() if timings else None
    failovers, failbacks, doubles = run(a.trials, a.fast, options)
    aware_ok = True
    if a.aware_trials:
        # Cluster-aware failback next to a capable one (tools/bench_aware.py): the aware
        # primary's copy is already loaded and paused when the hand-over starts.
        from tools import bench_aware

        aware, capable, check = bench_aware.run(a.aware_trials, a.fast, options)
        aware_ok = bench_aware.passed(check)
        print(f"aware check: {check}")
        print(bench_aware.summary_line(aware, capable))
    settings = (
        "fastest allowed (10 ms heartbeats)"
        if a.fast
        else f"from {a.timings}"
        if a.timings
        else "default"
    )
    if timings is not None:
        print(timings.line())
    print(
        f"settings: {settings}; failover min={min(failovers):.0f} ms "
        f"median={statistics.median(failovers):.0f} ms max={max(failovers):.0f} ms"
    )
    print(
        f"failover: p50_ms={percentile(failovers, 50):.0f} p99_ms={percentile(failovers, 99):.0f} "
        f"failback_ms={statistics.median(failbacks):.0f} trials={len(failovers)} "
        f"double_runs={doubles}"
    )
    return 0 if doubles == 0 and aware_ok else 1


if __name__ == "__main__":
    sys.exit(main())

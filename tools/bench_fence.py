#!/usr/bin/env python3
"""Failover of a host frozen as a whole, with fencing (docs/design.md section 4, "Fencing
other servers").

A namespace lab of three servers whose sentinels fence each other through
``tools/fence_netns`` (it SIGKILLs everything in a namespace and takes its links down).
Each trial SIGSTOPs every process in the host's namespace (sentinel, lease guard, program,
slapd: nothing there can act) and measures, on CLOCK_MONOTONIC, from the freeze to the
fence agent's report (its log line, written once the namespace is empty) and to the
backup's copy writing its first ledger line. The frozen
server is then brought back (links, provider, sentinel) and the program fails back by
itself before the next trial.

``--required`` sets ``fencing.required: true`` and a failover timeout of 0.35 s, below
the lease and fence timeouts (0.5 s), which the loader accepts only because no takeover
starts before a confirmed fence. The ledger of every trial is checked for double runs. The
last line is exactly
``fence: p50_ms=<n> p99_ms=<n> fenced_p50_ms=<n> trials=<n> double_runs=<n> required=<0|1>``.

    tools/bench_fence.py [--trials 10] [--required]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.cluster import LabCluster, LabServer
from ndsclust.lab.directory import wait_until
from ndsclust.ledger import double_runs, lives
from ndsclust.model import ServerName
from tools.faults.harness import Faults, make_lab
from tools.netns import NetLab

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
AGENT = Path(__file__).resolve().parent / "fence_netns"
REQUIRED_TIMEOUTS = {"failover": 0.35, "lease": 0.5, "fence": 0.5}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def fencing_config(lab: LabCluster, server: LabServer, required: bool) -> dict[str, Any]:
    assert isinstance(lab.net, NetLab)
    log = str(lab.base_dir / "fence-calls.log")
    return {
        "required": required,
        "retry_min": 0.5,
        "retry_max": 2.0,
        "servers": {
            s: [{"agent": str(AGENT), "options": {"netns": lab.net.namespace(s), "log": log}}]
            for s in lab.names
            if s != server.name
        },
    }


def pids(lab: LabCluster, server: ServerName) -> list[int]:
    assert isinstance(lab.net, NetLab)
    out = subprocess.run(
        ["ip", "netns", "pids", lab.net.namespace(server)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def agent_calls(lab: LabCluster) -> list[float]:
    try:
        lines = (lab.base_dir / "fence-calls.log").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [float(line.split()[0]) for line in lines if "action=off" in line]


def bring_back(lab: LabCluster, faults: Faults, server: ServerName) -> None:
    """The fenced server powered on again: its namespace's links up, then its provider and
    sentinel (Faults.server_up)."""
    assert isinstance(lab.net, NetLab)
    ns = lab.net.namespace(server)
    for dev in ("lan0", "dir0"):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True, timeout=10)
    faults.server_down(server)  # what the agent left (links, process handles) made consistent
    faults.server_up(server)


def run(trials: int, required: bool) -> tuple[list[float], list[float], int]:
    plain = LabCluster.sentinel_config

    def with_fencing(lab: LabCluster, server: LabServer) -> dict[str, Any]:
        cfg = plain(lab, server)
        cfg["fencing"] = fencing_config(lab, server, required)
        cfg["supervision"] = {"flap_max_failovers": 1000}
        return cfg

    LabCluster.sentinel_config = with_fencing  # type: ignore[method-assign]
    options: dict[str, Any] = {"base_dir": tempfile.mkdtemp(prefix="bench-fence-")}
    if required:
        options["timeouts"] = REQUIRED_TIMEOUTS
    lab = make_lab(3, **options)
    faults = Faults(lab)
    takeovers: list[float] = []
    agents: list[float] = []
    try:
        lab.add_app("web", A, [B, C], auto_recover=True)
        lab.wait_running("web", A, timeout=60)
        for _ in range(trials):
            time.sleep(3.0)  # the sentinels settle after the last failback
            before = len(agent_calls(lab))
            for pid in pids(lab, A):
                os.kill(pid, signal.SIGSTOP)
            frozen = time.monotonic()
            wait_until(lambda: lab.running_on("web") == {B}, timeout=60, what="web on beta")
            started = lab.first_start_after("web", frozen, server=B)
            calls = agent_calls(lab)[before:]
            if started is None or not calls:
                raise SystemExit("bench_fence: no fence or no start seen")
            takeovers.append(started - frozen)
            agents.append(calls[0] - frozen)
            bring_back(lab, faults, A)
            lab.wait_running("web", A, timeout=60)
        found = double_runs(lives(lab.ledger_lines()))
    finally:
        for pid in pids(lab, A):
            os.kill(pid, signal.SIGCONT)
        faults.release()
        lab.stop()
        LabCluster.sentinel_config = plain  # type: ignore[method-assign]
    return takeovers, agents, len(found)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--required", action="store_true", help="fencing.required, failover 0.35 s")
    args = p.parse_args()
    takeovers, agents, doubles = run(args.trials, args.required)
    print(
        f"fence: p50_ms={statistics.median(takeovers) * 1000:.0f} "
        f"p99_ms={percentile(takeovers, 99) * 1000:.0f} "
        f"fenced_p50_ms={statistics.median(agents) * 1000:.0f} trials={len(takeovers)} "
        f"double_runs={doubles} required={int(args.required)}"
    )
    return 0 if doubles == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

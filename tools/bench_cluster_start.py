"""Start-up time of the lab directory cluster, or cold start of a whole cluster.

    python tools/bench_cluster_start.py [--providers 3] [--runs 5]

Prints, per run, the seconds from the first slapd spawn until every provider answers and
replicates from every other one (start_s), and the whole ``start()`` call including the
configuration and slapadd before it (total_s); then the median and the maximum.

    python tools/bench_cluster_start.py --servers 32 --apps 1000 [--providers 3] [--hold 30]

Cold start (one run): a ``ScaleLab`` (``tools/scale_lab.py``) of ``--servers`` servers over
``--providers`` providers whose directory already holds ``--apps`` applications
(``/bin/sleep``), each hosted by its primary (round robin) and ``loading``, as after the
whole site was powered up. Every sentinel is started at once; the time is measured from
the first spawn until the directory shows every application ``running`` (its primary's
sentinel writes that once the program is up). The cluster then runs ``--hold`` seconds more
with nothing failing, and the sentinels' logs are read (docs/style.md section 7): a lease
expiry is a program the lease guard killed (``event=program_exited reason=lease-expired``),
a restart any start of a program beyond its first (``event=program_start``), cluster-wide.
The last line is

    cold_start: servers=<n> apps=<n> all_running_ms=<n> lease_expiries=<n> restarts=<n> ...

followed by the counts of what else went wrong (``loop_hung``, ``rejoin``, ``fenced``,
``failover``, ``claim``) and ``ready_ms``, when the last sentinel's watch was complete
(``event=directory_ready``). ``all_running_ms=-1`` when not all ran within ``--timeout``.
Everything the run started is stopped and its directory removed, also after a failure,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.directory import DirectoryCluster, LabTimeout, wait_until
from tools.scale_lab import (
    ScaleLab,
    count_running,
    sample_apps,
    sentinel_events,
    server_names,
    stop_on_sigterm,
)

# Events counted after a cold start: none of them should happen where nothing failed.
TROUBLE = ("loop_hung", "rejoin", "fenced", "failover", "claim", "swap_conflict")


def directory_start(providers: int, runs: int) -> int:
    starts = []
    for run in range(1, runs + 1):
        cluster = DirectoryCluster(n=providers)
        try:
            began = time.monotonic()
            start = cluster.start()
            total = time.monotonic() - began
        finally:
            cluster.stop()
        starts.append(start)
        print(f"run={run} providers={providers} start_s={start:.3f} total_s={total:.3f}")
    print(
        f"providers={providers} runs={runs} "
        f"median_start_s={statistics.median(starts):.3f} max_start_s={max(starts):.3f}"
    )
    return 0


def cold_start(
    servers: int, providers: int, n_apps: int, hold: float, timeout: float, logs: Path | None
) -> int:
    stop_on_sigterm()
    lab = ScaleLab(servers, providers, log_level="info")
    try:
        lab.start()
        took = lab.add_apps(sample_apps(server_names(servers), n_apps, n_apps, prefix="c"))
        print(f"added {n_apps} applications in {took:.1f}s", flush=True)
        lab.directory.wait_converged(timeout=120)
        wall0 = time.time()
        t0 = lab.start_sentinels()
        store = lab.admin_store()
        seen: tuple[int, int] = (0, n_apps)
        try:

            def all_running() -> bool:
                nonlocal seen
                seen = count_running(store)
                return seen[0] >= n_apps

            wait_until(all_running, timeout=timeout, interval=0.25, what="all running")
            all_ms = (time.monotonic() - t0) * 1000
            print(f"all {n_apps} running after {all_ms / 1000:.1f}s", flush=True)
        except LabTimeout:
            all_ms = -1.0
            print(f"only {seen[0]} of {n_apps} running after {timeout:g}s", flush=True)
        time.sleep(hold)
        seen = count_running(store)
        store.close()
        counts: Counter[str] = Counter()
        starts: Counter[str] = Counter()
        ready = []
        for server in lab.servers.values():
            for e in sentinel_events(server.log_path, wall0 - 1):
                counts[e.event] += 1
                if e.event == "program_start":
                    starts[e.fields.get("tag", "")] += 1
                elif e.event == "program_exited" and e.fields.get("reason") == "lease-expired":
                    counts["lease_expired"] += 1
                elif e.event == "directory_ready":
                    ready.append(e.wall)
        restarts = sum(starts.values()) - len(starts)
        ready_ms = (max(ready) - wall0) * 1000 if len(ready) == servers else -1
        trouble = " ".join(f"{k}={counts[k]}" for k in TROUBLE)
        print(
            f"cold_start: servers={servers} apps={n_apps} all_running_ms={all_ms:.0f} "
            f"lease_expiries={counts['lease_expired']} restarts={restarts} "
            f"running_after_hold={seen[0]} {trouble} ready_ms={ready_ms:.0f}"
        )
    finally:
        if logs is not None:
            lab.save_logs(logs)
        lab.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--servers", type=int, help="cold start of this many sentinels")
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds after all run")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--logs", type=Path, help="keep the sentinels' logs in this directory")
    args = parser.parse_args(argv)
    if args.servers is None:
        return directory_start(args.providers, args.runs)
    return cold_start(args.servers, args.providers, args.apps, args.hold, args.timeout, args.logs)


if __name__ == "__main__":
    raise SystemExit(main())

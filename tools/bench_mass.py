#!/usr/bin/env python3
"""A thousand applications fail over at once (docs/design.md section 6).

A 3-server lab; N applications with primary alpha and backups beta, gamma, each a tiny
program (``/bin/sleep``). When all run on alpha, alpha is killed (sentinel, guard,
programs and slapd at once); the time is measured until the directory shows every
application hosted by a survivor and ``running`` (the backup's sentinel writes
``running`` once its program is up). The last line is exactly
``mass: apps=<n> all_running_ms=<n>``.

    tools/bench_mass.py [--apps 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.ldapstore.store import Store
from ndsclust.model import App, AppState, AppType, ServerName, StateValue, Tag

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
SLEEP = ("/bin/sleep", "1000000")


def settled(lab: LabCluster, n: int, hosts: set[str]) -> tuple[int, int]:
    apps, _ = lab.store().apps()
    ok = sum(1 for a in apps.values() if a.host in hosts and a.state.state is AppState.RUNNING)
    return ok, len(apps)


def unsettled(store: Store, hosts: set[str]) -> int:
    """How many applications are not yet running on one of ``hosts``: a search that returns
    only those, without attributes, so polling every 50 ms does not load the provider with
    a thousand entries each time (the final count reads them all)."""
    on_hosts = "".join(f"(ndsclustHostServer={h})" for h in sorted(hosts))
    filt = f"(&(objectClass=ndsclustApplication)(|(!(ndsclustState=running))(!(|{on_hosts}))))"
    return len(store.search(store.apps_dn, filt, attributes=["1.1"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--apps", type=int, default=1000)
    a = p.parse_args()
    with LabCluster(3, log_level="warning") as lab:
        store = lab.store()
        t_add = time.monotonic()
        for i in range(a.apps):
            store.add_app(
                App(
                    tag=Tag(f"m{i:04d}"),
                    type=AppType.CAPABLE,
                    command=SLEEP,
                    primary=A,
                    backups=(B, C),
                    host=A,
                    state=StateValue(AppState.LOADING),
                )
            )
        print(f"registered {a.apps} applications in {time.monotonic() - t_add:.1f}s", flush=True)
        t_up = time.monotonic()
        wait_until(  # not measured: long enough for a machine loaded by other work
            lambda: settled(lab, a.apps, {A})[0] == a.apps,
            timeout=1200,
            interval=0.5,
            what=f"{a.apps} applications running on alpha",
        )
        print(f"all running on alpha after {time.monotonic() - t_up:.1f}s", flush=True)
        t0 = lab.kill_server(A)
        watcher = lab.store()
        wait_until(
            lambda: unsettled(watcher, {B, C}) == 0,
            timeout=300,
            interval=0.05,
            what=f"{a.apps} applications running on beta or gamma",
        )
        took = (time.monotonic() - t0) * 1000
        ok, total = settled(lab, a.apps, {B, C})
        assert ok == total == a.apps, (ok, total)
        apps, _ = store.apps()
        on_b = sum(1 for x in apps.values() if x.host == B)
        print(f"after the failover: {on_b} on beta, {a.apps - on_b} on gamma", flush=True)
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"load average at the end: {load}", flush=True)
    print(f"mass: apps={a.apps} all_running_ms={took:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Idle footprint of the sentinels: resident memory and CPU with a large directory.

A ``ScaleLab`` (``tools/scale_lab.py``): ``--servers`` sentinels on loopback addresses over
``--providers`` slapd providers. The directory is filled before any sentinel starts with
``--apps`` applications (``/bin/sleep``), primaries round robin, the next two servers as
backups; the first ``--running`` are hosted by their primary, the rest are unloaded (in
the directory, in every sentinel's cache, not running). The sentinels then start; once
every hosted application is ``running``, every sentinel has caught up
(``event=directory_ready``, ``event=replication_caught_up``) and the cluster data has
stopped changing (no provider's contextCSN moved for ``--quiet`` seconds: the registration
events are written), each sentinel is sampled for
``--idle`` seconds: resident memory (VmRSS of /proc/<pid>/status) every second, CPU time
(utime + stime of /proc/<pid>/stat, every thread) per ``--window``-second slice.
``cpu_pct`` is the CPU of a slice as a percentage of one core; ``cpu_pct_max`` the largest
slice. Per sentinel it prints

    footprint: servers=<n> apps=<n> rss_mb_max=<n> cpu_pct_max=<n> server=<name>

then the same line with ``server=all`` (the largest of each over all sentinels), a
``guard:`` and a ``slapd:`` line per process, and the events the sentinels logged during
the idle window; before them an ``rss:`` line per sentinel says where its resident memory
is at the end of the window (``tools/rss_breakdown.py``). ``--linger S`` keeps the cluster
up S seconds more (to attach py-spy to a pid printed on the ``pids:`` line). Everything the run started is stopped and its
directory removed at the end, also after a failure, Ctrl-C or SIGTERM.

With ``--http`` every sentinel serves its HTTP face (``http.listen`` on a loopback port),
and ``--scrape S`` fetches every sentinel's ``/metrics`` and ``/health`` every S seconds
while sampling; a ``scraped:`` line says how many, how large and how slow.

    tools/bench_footprint.py [--servers 8] [--apps 10000] [--running 200] [--http [--scrape 15]]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.directory import LabTimeout, wait_until
from tools.rss_breakdown import line as rss_line
from tools.scale_lab import (
    ScaleLab,
    count_running,
    sample_apps,
    sentinel_events,
    server_names,
    stop_on_sigterm,
    watch_usage,
)

MB = 1024 * 1024


class Scraper:
    """GET /metrics and /health of every sentinel every ``every`` seconds, on a thread."""

    def __init__(self, lab: ScaleLab, every: float) -> None:
        self.lab, self.every = lab, every
        self.sizes: list[int] = []
        self.times: list[float] = []
        self.errors = 0  # no answer within 10 s, or refused
        self.statuses: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for server in self.lab.servers.values():
                for path in ("/metrics", "/health"):
                    began = time.monotonic()
                    try:
                        with urllib.request.urlopen(f"http://{server.http}{path}", timeout=10) as r:
                            size = len(r.read())
                    except urllib.error.HTTPError as e:  # answered: /health's 503
                        e.close()
                        self.statuses[f"{path}:{e.code}"] += 1
                        continue
                    except OSError:
                        self.errors += 1
                        continue
                    self.statuses[f"{path}:200"] += 1
                    if path == "/metrics":
                        self.sizes.append(size)
                        self.times.append(time.monotonic() - began)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def report(self) -> str:
        if not self.times:
            return f"none errors={self.errors}"
        return (
            f"metrics_scrapes={len(self.times)} metrics_kb={max(self.sizes) / 1024:.0f} "
            f"scrape_s_max={max(self.times):.3f} errors={self.errors} "
            + " ".join(f"{k}={v}" for k, v in sorted(self.statuses.items()))
        )


def wait_quiet(lab: ScaleLab, quiet: float, timeout: float) -> tuple[bool, float]:
    """Wait until no provider's contextCSN of the cluster data moved for ``quiet``
    seconds; returns whether that happened within ``timeout`` and the seconds waited."""
    began = time.monotonic()
    suffix = lab.directory.suffix
    last, since = None, began
    while (now := time.monotonic()) - began < timeout:
        csns = {i: frozenset(s.get(suffix, ())) for i, s in lab.directory.contextcsns().items()}
        if csns != last:
            last, since = csns, now
        elif now - since >= quiet:
            return True, now - began
        time.sleep(0.5)
    return False, time.monotonic() - began


def ready(log: Path) -> bool:
    """The sentinel's watch is complete and its provider caught up: from then on it
    registers (FIG. 6) and the directory can fall quiet."""
    seen = {e.event for e in sentinel_events(log)}
    return {"directory_ready", "replication_caught_up"} <= seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", type=int, default=8)
    p.add_argument("--providers", type=int, default=3)
    p.add_argument("--apps", type=int, default=10000)
    p.add_argument("--running", type=int, default=200, help="applications hosted (default 200)")
    p.add_argument("--idle", type=float, default=60.0, help="seconds sampled")
    p.add_argument("--window", type=float, default=5.0, help="seconds per CPU slice")
    p.add_argument("--quiet", type=float, default=5.0)
    p.add_argument("--settle-timeout", type=float, default=300.0)
    p.add_argument("--linger", type=float, default=0.0)
    p.add_argument("--logs", type=Path, help="keep the sentinels' logs in this directory")
    p.add_argument("--no-disk", action="store_true", help="no disk-pulse channel")
    p.add_argument("--http", action="store_true", help="every sentinel serves its HTTP face")
    p.add_argument(
        "--scrape",
        type=float,
        default=0.0,
        metavar="S",
        help="with --http, GET /metrics and /health of every sentinel every S seconds while "
        "sampling, as a Prometheus server and a load balancer would",
    )
    a = p.parse_args(argv)
    running: int = min(a.running, a.apps)
    stop_on_sigterm()
    lab = ScaleLab(a.servers, a.providers, disk=not a.no_disk, log_level="info")
    try:
        lab.start()
        if a.http:
            lab.assign_http()
            for server in lab.servers.values():
                lab.write_config(server)
        apps = sample_apps(server_names(a.servers), a.apps, running)
        took = lab.add_apps(apps)
        print(f"added {a.apps} applications ({running} hosted) in {took:.1f}s", flush=True)
        lab.directory.wait_converged(timeout=300)
        t0 = lab.start_sentinels()
        store = lab.admin_store()
        seen: tuple[int, int] = (0, running)

        def all_running() -> bool:
            nonlocal seen
            seen = count_running(store)
            return seen[0] >= running

        try:
            wait_until(all_running, timeout=a.settle_timeout, interval=1.0, what="all running")
            print(f"all {running} running {time.monotonic() - t0:.1f}s after start", flush=True)
            wait_until(
                lambda: all(ready(s.log_path) for s in lab.servers.values()),
                timeout=a.settle_timeout,
                interval=1.0,
                what="every sentinel caught up",
            )
            print(f"every sentinel caught up {time.monotonic() - t0:.1f}s after start", flush=True)
            quiet, waited = wait_quiet(lab, a.quiet, a.settle_timeout)
            print(
                f"cluster data {'quiet' if quiet else 'still changing'} after {waited:.1f}s more",
                flush=True,
            )
        except LabTimeout:
            # Measured anyway: what a sentinel costs while it never settles is a figure too.
            quiet = False
            print(f"only {seen[0]} of {running} running after {a.settle_timeout:g}s", flush=True)
        finally:
            store.close()
        settled = "yes" if quiet else "no"
        pids = {f"sentinel {n}": pid for n, pid in lab.sentinel_pids().items()}
        for n in lab.servers:
            if (g := lab.guard_pid(n)) is not None:
                pids[f"guard {n}"] = g
        for i, pid in enumerate(lab.slapd_pids()):
            pids[f"slapd {i}"] = pid
        print(
            "pids: " + " ".join(f"{k.replace(' ', ':')}={v}" for k, v in pids.items()), flush=True
        )
        wall0 = time.time()
        scraper = Scraper(lab, a.scrape) if a.http and a.scrape > 0 else None
        try:
            usage = watch_usage(pids, a.idle, a.window)
        finally:
            if scraper is not None:
                scraper.stop()
                print(f"scraped: {scraper.report()}", flush=True)
        for name, pid in lab.sentinel_pids().items():
            # Where the resident memory is at the end of the window (tools/rss_breakdown.py).
            print(f"{rss_line(pid)} server={name}", flush=True)
        head = f"servers={a.servers} apps={a.apps}"
        rows = [(k.split(" ", 1)[1], u) for k, u in usage.items() if k.startswith("sentinel ")]
        for name, u in rows:
            print(
                f"footprint: {head} rss_mb_max={u.rss_max / MB:.1f} "
                f"cpu_pct_max={u.cpu_pct_max:.2f} server={name} cpu_pct_mean={u.cpu_pct_mean:.2f} "
                f"settled={settled}"
            )
        print(
            f"footprint: {head} rss_mb_max={max(u.rss_max for _, u in rows) / MB:.1f} "
            f"cpu_pct_max={max(u.cpu_pct_max for _, u in rows):.2f} server=all "
            f"cpu_pct_mean={sum(u.cpu_pct_mean for _, u in rows) / len(rows):.2f} "
            f"settled={settled}"
        )
        for key, u in usage.items():
            kind, name = key.split(" ", 1)
            if kind != "sentinel":
                print(
                    f"{kind}: {name} rss_mb_max={u.rss_max / MB:.1f} "
                    f"cpu_pct_max={u.cpu_pct_max:.2f} cpu_pct_mean={u.cpu_pct_mean:.2f}"
                )
        idle_events: Counter[str] = Counter()
        for server in lab.servers.values():
            idle_events.update(e.event for e in sentinel_events(server.log_path, wall0))
        print(
            "idle events: "
            + (" ".join(f"{k}={v}" for k, v in idle_events.most_common()) or "none"),
            flush=True,
        )
        if a.linger > 0:
            print(f"lingering {a.linger:g}s", flush=True)
            time.sleep(a.linger)
    finally:
        if a.logs is not None:
            lab.save_logs(a.logs)
        lab.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

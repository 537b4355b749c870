#!/usr/bin/env python3
"""Benchmark the change watch: modify on one provider -> event on a watch of another.

Starts its own 3-provider lab cluster, follows a test OU with a ``Watch`` on the second
provider (index 1), and modifies one entry on the first (index 0, the write provider) one
change at a time: each modify waits for its event before the next is sent. The latency of
a change runs from just before the modify request is sent to the moment ``Watch.get()``
returns its ``Changed`` event, so it covers the write, the replication hop (docs/platform.md fact
5), the RFC 4533 persist message and the watch's own queue.

Budget: p50 <= 50 ms, p99 <= 200 ms. The last line is machine-readable:
``watch: p50_ms=<n> p99_ms=<n> changes=<n>``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import ldap3

from ndsclust.lab.directory import DirectoryCluster
from ndsclust.ldapstore.connection import Providers, open_connection
from ndsclust.ldapstore.watch import Changed, RefreshDone, Watch


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def wait_for(watch: Watch, match: type | tuple[str, str], timeout: float) -> None:
    """Take events until one matches: a type, or (dn, description) of a Changed."""
    deadline = time.monotonic() + timeout
    while True:
        event = watch.get(max(0.0, deadline - time.monotonic()))
        if event is None:
            raise SystemExit(f"bench_watch: no event matching {match} within {timeout} s")
        if isinstance(match, type):
            if isinstance(event, match):
                return
        elif (
            isinstance(event, Changed)
            and event.entry.dn == match[0]
            and event.entry.attributes.get("description") == (match[1],)
        ):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--changes",
        type=int,
        default=300,
        help="number of modifies, one after another (default 300)",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for any one event (default 5)"
    )
    args = parser.parse_args(argv)
    if args.changes < 1:
        parser.error("--changes must be at least 1")

    cluster = DirectoryCluster(3)
    watch: Watch | None = None
    writer: ldap3.Connection | None = None
    try:
        startup = cluster.start()
        print(f"cluster: 3 providers answering and replicating after {startup:.3f} s")
        creds = cluster.admin_credentials()
        writer = open_connection(cluster.uris[0], creds)
        base = f"ou=bench,{cluster.suffix}"
        dn = f"ou=probe,{base}"
        for entry_dn, ou in ((base, "bench"), (dn, "probe")):
            if not writer.add(entry_dn, ["organizationalUnit"], {"ou": ou}):
                raise SystemExit(f"bench_watch: cannot add {entry_dn}: {writer.result}")
        cluster.wait_converged()

        watch = Watch(Providers(cluster.uris, creds), base, prefer=1, name="bench")
        watch.start()
        wait_for(watch, RefreshDone, args.timeout)
        print(f"watch: following {base} on {watch.provider}; writing on {cluster.uris[0]}")

        latencies: list[float] = []
        for i in range(args.changes):
            value = f"change {i}"
            began = time.perf_counter()
            if not writer.modify(dn, {"description": [(ldap3.MODIFY_REPLACE, [value])]}):
                raise SystemExit(f"bench_watch: modify {i} failed: {writer.result}")
            wait_for(watch, (dn, value), args.timeout)
            latencies.append((time.perf_counter() - began) * 1000)

        ordered = sorted(latencies)
        p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
        print(
            f"latency ms: min={ordered[0]:.1f} p50={p50:.1f} p90={percentile(ordered, 90):.1f} "
            f"p99={p99:.1f} max={ordered[-1]:.1f}"
        )
        print(
            f"budget: p50 <= 50 ms {'ok' if p50 <= 50 else 'MISSED'}, "
            f"p99 <= 200 ms {'ok' if p99 <= 200 else 'MISSED'}; stats {watch.stats}"
        )
        print(f"watch: p50_ms={p50:.1f} p99_ms={p99:.1f} changes={len(latencies)}")
        return 0
    finally:
        if watch is not None:
            watch.stop()
        if writer is not None:
            writer.unbind()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())

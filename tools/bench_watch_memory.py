#!/usr/bin/env python3
"""Resident memory of the sentinel's picture of a real directory: imports, refresh, after.

Starts one slapd provider (``DirectoryCluster``), fills it offline (slapadd) with
``--apps`` application entries and 8 servers, then in this process does what the
sentinel's loop does with its cluster watch: a ``Watch`` over the cluster base with the
sentinel's attributes, every event folded into a ``ClusterCache`` in batches as the loop
drains them, one ``snapshot()`` kept. It prints the resident memory (VmRSS, and RssAnon:
the process's own pages) after the imports, after the refresh and after a garbage
collection, CPython's object allocator figures (``sys._debugmallocstats``: its arenas and
the bytes in use in them) and the figures of ``tools/rss_breakdown.py``. With
``--trim`` glibc's ``malloc_trim(0)`` runs before the last figures.

The last line is machine-readable:
``watch_memory: apps=<n> rss_imports_mb=<n> rss_refresh_mb=<n> rss_after_mb=<n> per_entry_b=<n>``.

    tools/bench_watch_memory.py [--apps 10000] [--trim]
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.directory import DirectoryCluster
from ndsclust.ldapstore.cache import ClusterCache
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.store import APP_ATTRS, Store
from ndsclust.ldapstore.watch import RefreshDone, Watch
from tools.rss_breakdown import line as rss_line

SERVERS = 8
MB = 1024 * 1024


def status_kb(key: str) -> int:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(key + ":"):
            return int(row.split()[1])
    return 0


def pymalloc_stats() -> dict[str, int]:
    """The summary lines of ``sys._debugmallocstats`` (written by C to fd 2)."""
    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    out: dict[str, int] = {}
    for row in text.splitlines():
        for key, name in (
            ("# arenas allocated current", "arenas"),
            ("# bytes in allocated blocks", "in_use_kb"),
            ("# bytes in available blocks", "free_in_pools_kb"),
        ):
            if row.startswith(key):
                value = int(row.split("=")[-1].replace(",", "").strip())
                out[name] = value if name == "arenas" else value // 1024
    return out


def pymalloc_line() -> str:
    return " ".join(f"{k}={v}" for k, v in pymalloc_stats().items())


def ldif(base: str, apps: int) -> str:
    out = []
    csn_base = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    for i in range(SERVERS):
        out.append(
            f"dn: cn=s{i:02d},ou=servers,{base}\nobjectClass: top\nobjectClass: ndsclustServer\n"
            f"cn: s{i:02d}\nndsclustServerState: up\nndsclustAddress: 127.0.1.{i + 1}:7946\n"
            f"entryUUID: {uuid.uuid4()}\nentryCSN: {csn_base}.{i:06d}Z#000000#001#000000\n"
        )
    for i in range(apps):
        tag, primary = f"app-{i:05d}", i % SERVERS
        backups = [(primary + k) % SERVERS for k in (1, 2)]
        out.append(
            f"dn: ndsclustTag={tag},ou=applications,{base}\nobjectClass: top\n"
            f"objectClass: ndsclustApplication\nndsclustTag: {tag}\nndsclustType: capable\n"
            f"ndsclustCommand: /bin/sleep 1000000\nndsclustPrimaryServer: s{primary:02d}\n"
            + "".join(f"ndsclustBackupServer: {{{k}}}s{b:02d}\n" for k, b in enumerate(backups))
            + "ndsclustAutoRecover: TRUE\nndsclustState: stopped\n"
            f"entryUUID: {uuid.uuid4()}\nentryCSN: {csn_base}.{i % 1000000:06d}Z#000000#001#000000\n"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--apps", type=int, default=10_000)
    ap.add_argument("--trim", action="store_true", help="malloc_trim(0) before the last figures")
    a = ap.parse_args()
    with DirectoryCluster(n=1) as cluster:
        cluster.wait_replicating(15)
        store = Store(Providers(cluster.uris, cluster.admin_credentials()), cluster.suffix)
        store.ensure_base()
        base = store.base
        store.close()
        data = ldif(base, a.apps)
        (p,) = cluster.providers
        p.stop()
        subprocess.run(
            ["slapadd", "-q", "-F", str(p.conf_dir), "-b", cluster.suffix],
            input=data.encode(),
            check=True,
            capture_output=True,
        )
        p.start()
        del data
        gc.collect()
        rss_imports = status_kb("VmRSS")
        print(f"imports: rss_kb={rss_imports} anon_kb={status_kb('RssAnon')} {pymalloc_line()}")
        cache = ClusterCache()
        providers = Providers(cluster.uris, cluster.admin_credentials())
        watch = Watch(providers, base, attributes=APP_ATTRS, name="cluster")
        began = time.monotonic()
        watch.start()
        try:
            done = False
            while not done:
                ev = watch.get(60)
                if ev is None:
                    raise SystemExit("no event for 60 s")
                batch = [ev]
                while (more := watch.get(0)) is not None:
                    batch.append(more)
                for ev in batch:
                    if isinstance(ev, RefreshDone):
                        done = True
                    cache.apply(ev)
                del batch, ev
            snap = cache.snapshot()
            took = time.monotonic() - began
            rss_refresh = status_kb("VmRSS")
            print(f"refresh: {took:.1f}s rss_kb={rss_refresh} anon_kb={status_kb('RssAnon')}")
            gc.collect()
            if a.trim:
                import ctypes

                ctypes.CDLL("libc.so.6").malloc_trim(0)
            time.sleep(1.0)
            rss_after = status_kb("VmRSS")
            print(f"after: rss_kb={rss_after} anon_kb={status_kb('RssAnon')} {pymalloc_line()}")
            print(rss_line(os.getpid()))
            assert len(snap.apps) == a.apps, f"{len(snap.apps)} of {a.apps} applications"
        finally:
            watch.stop()
            providers.close()
    entries = a.apps + SERVERS
    print(
        f"watch_memory: apps={a.apps} rss_imports_mb={rss_imports / 1024:.1f} "
        f"rss_refresh_mb={rss_refresh / 1024:.1f} rss_after_mb={rss_after / 1024:.1f} "
        f"per_entry_b={(rss_after - rss_imports) * 1024 // entries}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

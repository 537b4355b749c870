#!/usr/bin/env python3
"""Measure what the sentinel's picture of the directory costs per entry, with tracemalloc.

Feeds ``--apps`` application entries (and 32 servers), built as ldap3 hands them to the
watch (attribute values as bytes, names as slapd returns them, entryUUID and entryCSN
included), through the RFC 4533 consumer state (``SyncSession``) into a ``ClusterCache``,
as the sentinel's watch and loop do, then keeps one ``snapshot()``. What stays allocated
once the raw entries are gone is divided by the number of entries: the watch's
entryUUID -> DN map, the cache's typed entries and the snapshot's maps. No server is
started; nothing is timed.

The last line is machine-readable: ``cache: entries=<n> bytes_per_entry=<n>``.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
import uuid

from ndsclust.ldapstore.cache import ClusterCache
from ndsclust.ldapstore.syncproto import EntryState, SyncState
from ndsclust.ldapstore.watch import Changed, SyncSession

SERVERS = 32
BASE = "ou=ndsclust,dc=ndsclust,dc=test"


def _csn(i: int) -> bytes:
    return f"20261202{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}.{i:06d}Z#000000#001#000000".encode()


def server_entry(i: int) -> tuple[str, dict[str, list[bytes]]]:
    name = f"s{i:02d}"
    return f"cn={name},ou=servers,{BASE}", {
        "objectClass": [b"top", b"ndsclustServer"],
        "cn": [name.encode()],
        "ndsclustServerState": [b"up"],
        "ndsclustAddress": [f"198.18.0.{i + 2}:7946".encode()],
        "entryUUID": [str(uuid.uuid4()).encode()],
        "entryCSN": [_csn(i)],
        "modifyTimestamp": [b"20261202000000Z"],
    }


def app_entry(i: int) -> tuple[str, dict[str, list[bytes]]]:
    tag = f"app-{i:05d}"
    primary, backup = i % SERVERS, (i + 1) % SERVERS
    return f"ndsclustTag={tag},ou=applications,{BASE}", {
        "objectClass": [b"top", b"ndsclustApplication"],
        "ndsclustTag": [tag.encode()],
        "ndsclustType": [b"capable"],
        "ndsclustCommand": [f"/usr/lib/ndsclust/counter --name {tag}".encode()],
        "ndsclustPrimaryServer": [f"s{primary:02d}".encode()],
        "ndsclustBackupServer": [f"{{0}}s{backup:02d}".encode()],
        "ndsclustHostServer": [f"s{primary:02d}".encode()],
        "ndsclustAutoRecover": [b"TRUE"],
        "ndsclustState": [b"running"],
        "entryUUID": [str(uuid.uuid4()).encode()],
        "entryCSN": [_csn(i)],
        "modifyTimestamp": [b"20261202000000Z"],
    }


def measure(apps: int) -> tuple[int, int]:
    """(entries, bytes held per entry) once ``apps`` applications were folded in."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    # Built while tracing: the DNs and values the cache keeps are counted, the rest is freed.
    raw = [server_entry(i) for i in range(SERVERS)] + [app_entry(i) for i in range(apps)]
    session = SyncSession()
    cache = ClusterCache()
    for dn, attrs in raw:
        u = attrs["entryUUID"][0].decode()
        for event, _ in session.on_entry(dn, attrs, SyncState(EntryState.ADD, u)):
            if isinstance(event, Changed):
                cache.apply(event)
    snap = cache.snapshot()
    del raw
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(snap.apps) == apps, f"{len(snap.apps)} of {apps} applications parsed"
    entries = apps + SERVERS
    return entries, held // entries


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--apps", type=int, default=10_000, help="applications (default 10000)")
    args = p.parse_args()
    entries, per_entry = measure(args.apps)
    print(f"cache: entries={entries} bytes_per_entry={per_entry}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

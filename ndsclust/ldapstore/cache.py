"""A typed, current picture of the cluster, folded from watch events and own writes.

The watch (RFC 4533) delivers raw entries; this cache turns them into ``App`` and
``Server`` snapshots, keeps the invalid ones aside with their errors (one bad entry affects
nothing else), and never lets an older copy of an entry replace a newer one: each entry is
kept with its entryCSN, and an event carrying an older CSN than the copy we hold is ignored.
That matters after our own writes: the shell reads the entry back from the write provider and
``put``s it, so the decision core sees its own claim at once, and a watch event that was
already queued from before the write cannot make it look as if the claim had not happened.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.store import Snapshot
from ndsclust.model import App, Server, ServerName, Tag


@dataclass(frozen=True, slots=True)
class _Held:
    dn: str
    csn: str
    value: App | Server | EntryInvalid | None   # None: an entry of no interest (ou=...)


@dataclass(frozen=True, slots=True)
class Move:
    """An event of the audit trail that moved an application: flap damping counts them."""

    tag: Tag
    kind: str
    wall: float          # seconds since the epoch (the event's ndsclustEventTime)


def _csn_of(attrs: Mapping[str, Sequence[Any]]) -> str:
    for k, v in attrs.items():
        if k.lower() == "entrycsn" and v:
            x = v[0]
            return x.decode() if isinstance(x, bytes) else str(x)
    return ""


def _object_classes(attrs: Mapping[str, Sequence[Any]]) -> set[str]:
    for k, v in attrs.items():
        if k.lower() == "objectclass":
            return {(x.decode() if isinstance(x, bytes) else str(x)).lower() for x in v}
    return set()


class ClusterCache:
    """Thread-safe map entryUUID -> typed entry; ``snapshot()`` gives a frozen Snapshot."""

    def __init__(self, move_kinds: frozenset[str] = frozenset()) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._move_kinds = move_kinds
        self._moves: dict[str, Move] = {}
        self._version = 0
        self._snap: Snapshot | None = None

    @property
    def version(self) -> int:
        """Grows with every change that was applied: cheap 'did anything change?' checks."""
        return self._version

    def put(self, uuid: str, dn: str, attrs: Mapping[str, Sequence[Any]]) -> bool:
        """Apply one entry (from the watch or a read-back); False if older than what we hold."""
        csn = _csn_of(attrs)
        classes = _object_classes(attrs)
        if "ndsclustevent" in classes:
            self._put_move(uuid, dn, attrs)
            return True
        value: App | Server | EntryInvalid | None
        try:
            if "ndsclustapplication" in classes:
                value = entries.parse_app(dn, attrs)
            elif "ndsclustserver" in classes:
                value = entries.parse_server(dn, attrs)
            else:
                value = None
        except EntryInvalid as e:
            value = e
        with self._lock:
            old = self._held.get(uuid)
            if old is not None and csn and old.csn and csn < old.csn:
                return False
            self._held[uuid] = _Held(dn, csn, value)
            self._version += 1
            self._snap = None
        return True

    def _put_move(self, uuid: str, dn: str, attrs: Mapping[str, Sequence[Any]]) -> None:
        try:
            event = entries.parse_event(dn, attrs)
        except (EntryInvalid, ValueError):
            return
        if event.kind not in self._move_kinds or event.tag is None:
            return
        try:
            when = datetime.strptime(event.time, "%Y%m%d%H%M%S.%fZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return
        with self._lock:
            self._moves[uuid] = Move(event.tag, event.kind, when.timestamp())

    def moves(self) -> list[Move]:
        """Recent moves of the kinds asked for at construction, from the audit trail."""
        with self._lock:
            return list(self._moves.values())

    def delete(self, uuid: str) -> None:
        with self._lock:
            self._moves.pop(uuid, None)
            if self._held.pop(uuid, None) is not None:
                self._version += 1
                self._snap = None

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._version += 1
            self._snap = None

    def snapshot(self) -> Snapshot:
        """Valid applications (checked against the known servers), servers, invalid entries."""
        with self._lock:
            if self._snap is not None:
                return self._snap
            held = list(self._held.values())
            version = self._version
        servers: dict[ServerName, Server] = {}
        apps: dict[Tag, App] = {}
        invalid: list[EntryInvalid] = []
        for h in held:
            if isinstance(h.value, Server):
                servers[h.value.name] = h.value
            elif isinstance(h.value, EntryInvalid):
                invalid.append(h.value)
        for h in held:
            if isinstance(h.value, App):
                try:
                    entries.check_references(h.value, servers)
                    apps[h.value.tag] = h.value
                except EntryInvalid as e:
                    invalid.append(e)
        snap = Snapshot(apps, servers, tuple(sorted(invalid, key=lambda e: e.dn)))
        with self._lock:
            if self._version == version:      # nothing changed while we built it
                self._snap = snap
        return snap

"""A typed, current picture of the cluster, folded from watch events and own writes.

The watch (RFC 4533) delivers raw entries; this cache turns them into ``App`` and
``Server`` snapshots and keeps the invalid ones aside with their errors (one bad entry
affects nothing else). What the watch delivers is authoritative and applied in the order
it arrives, whatever its entryCSN: after a partition heals, replication may bring a change
whose CSN is older than the copy we hold, and it is the converged value.

Our own writes are shown at once as *local* copies (``put(..., local=True)`` with the entry
as the write left it), so the decision core sees its own claim in the next cycle. A local
copy hides the watch's copy until the watch delivers the entry with a CSN at least as new
(the echo of our write), so an event already queued from before the write cannot make it
look as if the claim had not happened; it also lapses after ``LOCAL_TTL`` seconds, should
the echo never come.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.store import Snapshot
from ndsclust.model import App, Server, ServerName, Tag

LOCAL_TTL = 10.0


@dataclass(frozen=True, slots=True)
class _Held:
    dn: str
    csn: str
    value: App | Server | EntryInvalid | None  # None: an entry of no interest (ou=...)
    since: float = 0.0  # local copies: when we wrote it


@dataclass(frozen=True, slots=True)
class Move:
    """An event of the audit trail that moved an application: flap damping counts them."""

    tag: Tag
    kind: str
    wall: float  # seconds since the epoch (the event's ndsclustEventTime)


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

    def __init__(
        self, move_kinds: frozenset[str] = frozenset(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._local: dict[str, _Held] = {}
        self._clock = clock
        self._move_kinds = move_kinds
        self._moves: dict[str, Move] = {}
        self._version = 0
        self._snap: Snapshot | None = None

    @property
    def version(self) -> int:
        """Grows with every change that was applied: cheap 'did anything change?' checks."""
        return self._version

    def put(
        self, uuid: str, dn: str, attrs: Mapping[str, Sequence[Any]], *, local: bool = False
    ) -> None:
        """Apply one entry: from the watch, or (``local``) as our own write left it."""
        csn = _csn_of(attrs)
        classes = _object_classes(attrs)
        if "ndsclustevent" in classes:
            self._put_move(uuid, dn, attrs)
            return
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
            if local:
                self._local[uuid] = _Held(dn, csn, value, self._clock())
            else:
                self._held[uuid] = _Held(dn, csn, value)
                mine = self._local.get(uuid)
                if mine is not None and (not mine.csn or (csn and csn >= mine.csn)):
                    del self._local[uuid]  # the watch has caught up with our write
            self._version += 1
            self._snap = None

    def _put_move(self, uuid: str, dn: str, attrs: Mapping[str, Sequence[Any]]) -> None:
        try:
            event = entries.parse_event(dn, attrs)
        except (EntryInvalid, ValueError):
            return
        if event.kind not in self._move_kinds or event.tag is None:
            return
        try:
            when = datetime.strptime(event.time, "%Y%m%d%H%M%S.%fZ").replace(tzinfo=UTC)
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
            self._local.pop(uuid, None)
            if self._held.pop(uuid, None) is not None:
                self._version += 1
                self._snap = None

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._local.clear()
            self._version += 1
            self._snap = None

    def snapshot(self) -> Snapshot:
        """Valid applications (checked against the known servers), servers, invalid entries."""
        with self._lock:
            now = self._clock()
            lapsed = [u for u, h in self._local.items() if now - h.since > LOCAL_TTL]
            for uuid in lapsed:
                del self._local[uuid]
            if lapsed:
                self._version += 1
                self._snap = None
            if self._snap is not None:
                return self._snap
            held = list({**self._held, **self._local}.values())
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
            if self._version == version:  # nothing changed while we built it
                self._snap = snap
        return snap

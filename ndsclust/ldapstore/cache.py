"""A typed, current picture of the cluster, folded from watch events and own writes.

The watch (RFC 4533) delivers entries; this cache turns them into ``App`` and ``Server``
snapshots and keeps the invalid ones aside with their errors (one bad entry affects nothing
else). What the watch delivers is authoritative and applied in the order it arrives,
whatever its entryCSN: after a partition heals, replication may bring a change whose CSN is
older than the copy we hold, and it is the converged value.

Our own writes are shown at once as *local* copies (``put(..., local=True)`` with the entry
as the write left it), so the decision core sees its own claim in the next cycle. A local
copy hides the watch's copy until the watch delivers the entry with a CSN at least as new
(the echo of our write), so an event already queued from before the write cannot make it
look as if the claim had not happened; it also lapses after ``LOCAL_TTL`` seconds, should
the echo never come. An echo with exactly the local copy's CSN is that same version of the
entry: the local copy's value is kept and the echo is not parsed again.

What is held per entry is the typed value only (its DN, entryUUID and entryCSN are the
value's own fields), with the values many entries share kept once (``entries.py``):
``tools/bench_cache_memory.py`` measures it.

Change marks: besides ``version``, the cache notes which applications (by tag) a change
touched since the loop last asked (``take_marks``), and whether a change reached what
every decision reads (a server entry, the cluster base entry, an entry of no tag), so the
loop decides again for those applications only (``ndsclust/sentinel/ondemand.py``).
``moves_version`` grows with every change to the moves kept.
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
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.store import Snapshot
from ndsclust.ldapstore.syncsession import Changed, Deleted, WatchEvent
from ndsclust.model import App, Event, Server, ServerName, Tag
from ndsclust.pause import ATTRIBUTE as PAUSE_ATTRIBUTE
from ndsclust.pause import Pause, of_values

LOCAL_TTL = 10.0


@dataclass(frozen=True, slots=True)
class _Base:
    """The cluster base entry: what it says of a pause (docs/operating.md, "Pause")."""

    pause: Pause | None


Value = App | Server | EntryInvalid | _Base | None  # None: an entry of no interest (ou=...)


@dataclass(frozen=True, slots=True)
class _Local:
    """Our own write, shown until the watch echoes it."""

    value: Value
    csn: str
    since: float  # when we wrote it


@dataclass(frozen=True, slots=True)
class Move:
    """An event of the audit trail that moved an application: flap damping counts them."""

    tag: Tag
    kind: str
    wall: float  # seconds since the epoch (the event's ndsclustEventTime)
    server: ServerName | None = None  # the server that recorded it


def _value(entry: Entry) -> Value:
    classes = entry.classes
    try:
        if "ndsclustapplication" in classes:
            return entries.parse_app(entry)
        if "ndsclustserver" in classes:
            return entries.parse_server(entry)
        if "ndsclustcluster" in classes:
            return _Base(of_values(list(entry.all(PAUSE_ATTRIBUTE))))
    except EntryInvalid as e:
        return e
    return None


class ClusterCache:
    """Thread-safe map entryUUID -> typed entry; ``snapshot()`` gives a frozen Snapshot."""

    def __init__(
        self, move_kinds: frozenset[str] = frozenset(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, Value] = {}
        self._local: dict[str, _Local] = {}
        self._clock = clock
        self._move_kinds = move_kinds
        self._moves: dict[str, tuple[Move, ...]] = {}
        self._version = 0
        self._snap: Snapshot | None = None
        self._moves_version = 0
        self._marked: set[Tag] = set()
        self._marked_all = True  # nothing was asked yet: everything is new

    def _mark(self, value: Value) -> None:
        """Note what a change of ``value`` (old or new) touches; under the lock."""
        if isinstance(value, App):
            self._marked.add(value.tag)
        elif isinstance(value, EntryInvalid):
            tag = _tag_of(value.dn)
            if tag is None:
                self._marked_all = True
            else:
                self._marked.add(tag)
        elif value is not None:
            self._marked_all = True  # a server or the base entry: every decision reads it

    def take_marks(self) -> tuple[frozenset[Tag], bool]:
        """The tags changed since the last call, and whether everything may have: the
        caller decides again for those (``ndsclust/sentinel/ondemand.py``)."""
        with self._lock:
            tags, everything = frozenset(self._marked), self._marked_all
            self._marked.clear()
            self._marked_all = False
        return tags, everything

    @property
    def moves_version(self) -> int:
        """Grows with every move added or removed (``moves``)."""
        return self._moves_version

    @property
    def version(self) -> int:
        """Grows with every change that was applied: cheap 'did anything change?' checks."""
        return self._version

    def apply(self, event: WatchEvent) -> bool:
        """Fold one watch event in; True when it was an entry's change or deletion."""
        if isinstance(event, Changed):
            self.put_entry(event.entry.record)
            return True
        if isinstance(event, Deleted):
            self.delete(event.uuid)
            return True
        return False

    def put(
        self, uuid: str, dn: str, attrs: Mapping[str, Sequence[Any]], *, local: bool = False
    ) -> None:
        """Apply one entry given as a DN and attribute map (see ``put_entry``)."""
        self.put_entry(Entry(dn, attrs, uuid=uuid), local=local, uuid=uuid)

    def put_entry(self, entry: Entry, *, local: bool = False, uuid: str | None = None) -> None:
        """Apply one entry: from the watch, or (``local``) as our own write left it."""
        uuid = uuid or entry.uuid
        classes = entry.classes
        if "ndsclustevent" in classes:
            self._put_move(uuid, entry)
            return
        csn = entry.csn
        if not local:
            with self._lock:
                mine = self._local.get(uuid)
                if mine is not None and csn and csn == mine.csn:
                    # The echo of our own write: the same version we already hold.
                    del self._local[uuid]
                    self._held[uuid] = mine.value
                    return
        value = _value(entry)
        with self._lock:
            self._mark(self._shown(uuid))
            self._mark(value)
            if local:
                self._local[uuid] = _Local(value, csn, self._clock())
            else:
                self._held[uuid] = value
                mine = self._local.get(uuid)
                if mine is not None and (not mine.csn or (csn and csn >= mine.csn)):
                    del self._local[uuid]  # the watch has caught up with our write
                    self._mark(mine.value)
            self._version += 1
            self._snap = None

    def _put_move(self, uuid: str, entry: Entry) -> None:
        try:
            event = entries.parse_event(entry)
        except (EntryInvalid, ValueError):
            return
        self.put_event(uuid, event)

    def put_event(self, uuid: str, event: Event) -> None:
        """An event of the audit trail: kept when it is a move of a kind asked for, one
        per application it names."""
        if event.kind not in self._move_kinds or (event.tag is None and not event.tags):
            return
        try:
            when = datetime.strptime(event.time, "%Y%m%d%H%M%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            return
        moves = tuple(
            Move(e.tag, e.kind, when.timestamp(), e.server)
            for e in event.each()
            if e.tag is not None
        )
        with self._lock:
            self._moves[uuid] = moves
            self._moves_version += 1

    def moves(self) -> list[Move]:
        """Recent moves of the kinds asked for at construction, from the audit trail."""
        with self._lock:
            return [m for ms in self._moves.values() for m in ms]

    def delete(self, uuid: str) -> None:
        with self._lock:
            if self._moves.pop(uuid, None) is not None:
                self._moves_version += 1
            self._mark(self._shown(uuid))
            self._local.pop(uuid, None)
            if uuid in self._held:
                del self._held[uuid]
                self._version += 1
                self._snap = None

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._local.clear()
            self._marked_all = True
            self._version += 1
            self._snap = None

    def _shown(self, uuid: str) -> Value:
        """The value a snapshot shows for ``uuid`` now (a local copy hides the watch's)."""
        mine = self._local.get(uuid)
        return mine.value if mine is not None else self._held.get(uuid)

    def snapshot(self) -> Snapshot:
        """Valid applications (checked against the known servers), servers, invalid entries."""
        with self._lock:
            now = self._clock()
            lapsed = [u for u, h in self._local.items() if now - h.since > LOCAL_TTL]
            for uuid in lapsed:
                self._mark(self._local.pop(uuid).value)
                self._mark(self._held.get(uuid))
            if lapsed:
                self._version += 1
                self._snap = None
            if self._snap is not None:
                return self._snap
            held = list({**self._held, **{u: h.value for u, h in self._local.items()}}.values())
            version = self._version
        servers: dict[ServerName, Server] = {}
        apps: dict[Tag, App] = {}
        invalid: list[EntryInvalid] = []
        pause: Pause | None = None
        for v in held:
            if isinstance(v, Server):
                servers[v.name] = v
            elif isinstance(v, EntryInvalid):
                invalid.append(v)
            elif isinstance(v, _Base):
                pause = v.pause
        for v in held:
            if isinstance(v, App):
                try:
                    entries.check_references(v, servers)
                    apps[v.tag] = v
                except EntryInvalid as e:
                    invalid.append(e)
        snap = Snapshot(apps, servers, tuple(sorted(invalid, key=lambda e: e.dn)), pause)
        with self._lock:
            if self._version == version:  # nothing changed while we built it
                self._snap = snap
        return snap


def _tag_of(dn: str) -> Tag | None:
    """The tag an application entry's DN names (``ndsclustTag=<tag>,...``), else None."""
    name, _, value = dn.split(",", 1)[0].partition("=")
    return Tag(value.strip()) if name.strip().lower() == "ndsclusttag" else None

"""The RFC 4533 consumer without I/O: the watch's events and the state a consumer keeps.

``SyncSession`` is what a consumer must remember across refreshAndPersist searches (the
cookie, and which entries it has been told about); fed the decoded messages of a search
(``syncproto.py``), it returns the events to deliver, each with the cookie to record once
the consumer has taken it (docs/style.md section 8). ``watch.py`` runs it over ldap3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.syncproto import (
    EntryState,
    RefreshDelete,
    RefreshPresent,
    SyncDone,
    SyncIdSet,
    SyncInfo,
    SyncState,
    resume_cookie,
)

# ---- events --------------------------------------------------------------------------


class ChangeKind(Enum):
    ADD = "add"
    MODIFY = "modify"


@dataclass(frozen=True, slots=True)
class SyncEntry:
    """An entry as slapd sent it, named by the entryUUID of its Sync State control."""

    dn: str
    uuid: str  # entryUUID, canonical form
    record: Entry = field(hash=False)  # decoded when its values are first read

    @property
    def attributes(self) -> Mapping[str, tuple[str, ...]]:
        """Attribute names as returned, values decoded as UTF-8."""
        return self.record.attributes


@dataclass(frozen=True, slots=True)
class Changed:
    entry: SyncEntry
    kind: ChangeKind  # ADD: the watch did not know this entryUUID before


@dataclass(frozen=True, slots=True)
class Deleted:
    uuid: str
    dn: str | None  # None: deleted before the watch ever saw it


@dataclass(frozen=True, slots=True)
class RefreshDone:
    """The refresh phase ended: the events so far give a complete view of the subtree."""


@dataclass(frozen=True, slots=True)
class Reconnected:
    provider_uri: str
    resumed: bool  # True: resumed from a cookie; False: a full refresh follows


WatchEvent = Changed | Deleted | RefreshDone | Reconnected
# What the queue carries: an event (None: only the cookie moved) and the cookie the
# consumer holds once it has taken it out.
Emitted = tuple[WatchEvent | None, bytes | None]


@dataclass(frozen=True, slots=True)
class WatchStats:
    entries: int  # searchResEntry messages received
    reconnects: int
    full_refreshes: int  # searches sent without a cookie (the first one included)


# ---- the RFC 4533 consumer, without I/O ----------------------------------------------


class SyncSession:
    """What a consumer must remember across RFC 4533 searches: the cookie, and which
    entries (entryUUID -> DN) it has been told about, so that deletions reported by
    entryUUID alone can be named, and so that a present phase can reveal what vanished.

    ``begin()`` starts a search; each decoded message returns the events to deliver,
    each paired with the cookie to record once the consumer has taken that event.
    """

    def __init__(
        self, cookie: bytes | None = None, known: Mapping[str, str | None] | None = None
    ) -> None:
        self.cookie = cookie
        self.known: dict[str, str | None] = dict(known or {})
        self._present: set[str] | None = None
        self._full = False

    def begin(self) -> bytes | None:
        """A search is about to be sent; return the cookie to send with it."""
        # Without a cookie the refresh is the whole content, whatever slapd calls the
        # phase (it ends such a refresh with refreshDelete): what it omits has vanished.
        self._full = self.cookie is None
        self._present = set()
        return None if self.cookie is None else resume_cookie(self.cookie)

    def drop_cookie(self) -> None:
        """The provider cannot resume from our cookie (e-syncRefreshRequired)."""
        self.cookie = None

    def on_entry(
        self, dn: str, attributes: Mapping[str, Sequence[bytes]], state: SyncState
    ) -> list[Emitted]:
        u = state.uuid
        events: list[WatchEvent] = []
        if state.state is EntryState.DELETE:
            known_dn = self.known.pop(u, None)
            events.append(Deleted(u, dn or known_dn))
        else:
            if self._present is not None:
                self._present.add(u)
            if state.state is not EntryState.PRESENT:
                kind = (
                    ChangeKind.MODIFY
                    if state.state is EntryState.MODIFY or u in self.known
                    else ChangeKind.ADD
                )
                events.append(Changed(SyncEntry(dn, u, Entry(dn, attributes, uuid=u)), kind))
            self.known[u] = dn
        return self._emit(events, state.cookie)

    def on_info(self, info: SyncInfo) -> list[Emitted]:
        events: list[WatchEvent] = []
        if isinstance(info, SyncIdSet):
            if info.refresh_deletes:
                events = [Deleted(u, self.known.pop(u, None)) for u in sorted(info.uuids)]
            elif self._present is not None:
                self._present.update(info.uuids)
        elif isinstance(info, RefreshPresent):
            events = self._reconcile()
            if info.refresh_done:
                events += self._end_refresh()
        elif isinstance(info, RefreshDelete):
            if self._full:
                events = self._reconcile()
            if info.refresh_done:
                events += self._end_refresh()
        return self._emit(events, info.cookie)

    def on_done(self, done: SyncDone | None) -> list[Emitted]:
        """A successful searchResDone: the provider ended the search after its refresh."""
        events: list[WatchEvent] = []
        if self._present is not None:
            if self._full or (done is not None and not done.refresh_deletes):
                events = self._reconcile()
            events += self._end_refresh()
        return self._emit(events, done.cookie if done is not None else None)

    def _reconcile(self) -> list[WatchEvent]:
        """End of a present phase: every entry known but not reported present is gone."""
        if self._present is None:
            return []
        gone = sorted(u for u in self.known if u not in self._present)
        self._present = None
        return [Deleted(u, self.known.pop(u)) for u in gone]

    def _end_refresh(self) -> list[WatchEvent]:
        self._present = None
        self._full = False
        return [RefreshDone()]

    def _emit(self, events: list[WatchEvent], cookie: bytes | None) -> list[Emitted]:
        # A message's new cookie covers all of its events, so it goes with the last one:
        # a consumer that stops halfway through still holds the older cookie and replays.
        # slapd answers an unusable cookie with an empty one; keep ours instead.
        old = self.cookie
        if cookie:
            self.cookie = cookie
        out: list[Emitted] = [(e, old) for e in events[:-1]]
        if events:
            out.append((events[-1], self.cookie))
        elif self.cookie != old:
            out.append((None, self.cookie))
        return out

"""Following the cluster: the RFC 4533 watches turned into typed events and a live view.

``typed(source, event)`` is the pure part: a watch event becomes one ``Update``, with
audit-trail events and pulses parsed (``EventSeen``, ``PulseSeen``), application and server
entries handed on as they are (``EntryChanged``, for a ``ClusterCache`` to parse and fold),
and the refresh, deletions and reconnections named (``Ready``, ``Gone``, ``Resumed``).

``Follower`` runs the watches a command needs (the cluster base or only the events, and the
pulse database), waits on all of them at once without polling (each watch notifies it) and
keeps what they show: the snapshot of applications and servers, the events, the pulses.
``status --watch``, ``events --follow``, the request verbs' ``--wait`` and ``ndsclust lab``
read the cluster through it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ndsclust.errors import EntryInvalid, ProviderUnreachable
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.cache import ClusterCache
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.store import Snapshot, Store, event_filter
from ndsclust.ldapstore.syncsession import (
    Changed,
    ChangeKind,
    Deleted,
    Reconnected,
    RefreshDone,
    WatchEvent,
)
from ndsclust.ldapstore.watch import Watch
from ndsclust.model import Event, Pulse, ServerName

log = logging.getLogger("ndsclust.ldapstore.follow")

EVENT_CLASS = "ndsclustevent"
PULSE_CLASS = "ndsclustpulseentry"


# ---- typed events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryChanged:
    """An application, server or other cluster entry was added or changed."""

    source: str
    uuid: str
    entry: Entry


@dataclass(frozen=True, slots=True)
class EventSeen:
    """An entry of the audit trail; ``added``: new to the watch (not known before). Its
    ``event`` may name several applications (``Event.each``); ``Follower.new_events``
    holds one per application."""

    source: str
    uuid: str
    event: Event
    csn: str
    added: bool


@dataclass(frozen=True, slots=True)
class PulseSeen:
    source: str
    uuid: str
    pulse: Pulse


@dataclass(frozen=True, slots=True)
class Invalid:
    """An event or pulse entry that breaks the rules: reported, never applied."""

    source: str
    uuid: str
    error: EntryInvalid


@dataclass(frozen=True, slots=True)
class Gone:
    source: str
    uuid: str
    dn: str | None


@dataclass(frozen=True, slots=True)
class Ready:
    """The watch's refresh ended: what it delivered so far is complete."""

    source: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """The watch reconnected (``resumed``: from its cookie; else a full refresh follows)."""

    source: str
    provider: str
    resumed: bool


Update = EntryChanged | EventSeen | PulseSeen | Invalid | Gone | Ready | Resumed


def typed(source: str, event: WatchEvent) -> Update:
    """The typed form of one watch event of the watch named ``source``."""
    if isinstance(event, Changed):
        record, uuid = event.entry.record, event.entry.uuid
        classes = record.classes
        try:
            if PULSE_CLASS in classes:
                return PulseSeen(source, uuid, entries.parse_pulse(record))
            if EVENT_CLASS in classes:
                added = event.kind is ChangeKind.ADD
                return EventSeen(source, uuid, entries.parse_event(record), record.csn, added)
        except EntryInvalid as e:
            return Invalid(source, uuid, e)
        except ValueError as e:  # an event's tag that is not a tag
            return Invalid(source, uuid, EntryInvalid(record.dn, "ndsclustEventTag", str(e)))
        return EntryChanged(source, uuid, record)
    if isinstance(event, Deleted):
        return Gone(source, event.uuid, event.dn)
    if isinstance(event, RefreshDone):
        return Ready(source)
    assert isinstance(event, Reconnected)
    return Resumed(source, event.provider_uri, event.resumed)


# ---- the live view --------------------------------------------------------------------


class Follower:
    """The cluster as the RFC 4533 watches show it, kept current without polling.

    Applications and servers are folded into a ``ClusterCache``; events and pulses, when
    asked for, are kept by entryUUID. ``new_events`` are the events added after the
    refresh: what happened since this follower started.
    """

    def __init__(
        self,
        st: Store,
        *,
        cluster: bool = True,
        events: bool = True,
        pulses: bool = False,
        event_tag: str | None = None,
        providers: Providers | None = None,
        cache: ClusterCache | None = None,
        attributes: Sequence[str] = ("*", "+"),
        prefer: int = 0,
        keepalive: float = 2.0,
        name: str = "cli",
    ) -> None:
        """``cluster``: follow the whole cluster base, else (with ``events``) only the audit
        trail, of one application with ``event_tag``; ``pulses``: the pulse database too.
        ``providers`` (default the store's) are where the watches read, from the one at
        index ``prefer``; ``cache`` (default a new one) is where applications, servers and
        the moves of the audit trail are folded; ``name`` prefixes the watches' names."""
        self.store = st
        self.cache = cache if cache is not None else ClusterCache()
        self.events: dict[str, Event] = {}  # by entryUUID, as the entries are
        self.new_events: list[EventSeen] = []  # one per application
        self._event_tag = event_tag.lower() if event_tag else None
        self.pulses: dict[str, Pulse] = {}
        self._wake = threading.Event()
        self._ready: set[str] = set()
        self._want_events = events
        where = providers or st.providers

        def watch(base: str, filt: str, label: str) -> Watch:
            return Watch(
                where,
                base,
                filter=filt,
                attributes=attributes,
                prefer=prefer,
                keepalive=keepalive,
                name=label,
                notify=self._wake.set,
            )

        self.watches: dict[str, Watch] = {}
        if cluster:
            self.watches["cluster"] = watch(st.base, "(objectClass=*)", f"{name}-cluster")
        elif events:
            self.watches["cluster"] = watch(st.events_dn, event_filter(event_tag), f"{name}-events")
        if pulses and st.pulse_base:
            self.watches["pulses"] = watch(
                st.pulse_base, "(objectClass=ndsclustPulseEntry)", f"{name}-pulses"
            )

    def __enter__(self) -> Follower:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for w in self.watches.values():
            w.start()

    def stop(self) -> None:
        for w in self.watches.values():
            w.stop()

    @property
    def ready(self) -> bool:
        return self._ready >= set(self.watches)

    def wait_ready(self, timeout: float) -> None:
        """Block until every watch finished its refresh; ProviderUnreachable after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProviderUnreachable(
                    f"the directory watch got no complete answer within {timeout:g}s "
                    f"from {', '.join(self.store.providers.uris)}"
                )
            self.updates(left)

    def updates(self, timeout: float) -> list[Update]:
        """Apply what the watches deliver; return the updates that changed the view, as
        soon as there are any, or [] after ``timeout`` seconds. A burst is one answer."""
        deadline = time.monotonic() + timeout
        while True:
            self._wake.clear()  # before draining: a later event sets it again
            changed = [u for u in self._drain() if self._apply(u)]
            if changed:
                return changed
            left = deadline - time.monotonic()
            if left <= 0 or not self._wake.wait(left):
                return []

    def wait_change(self, timeout: float) -> bool:
        """Apply what arrives within ``timeout``; True when something changed."""
        return bool(self.updates(timeout))

    def _drain(self) -> list[Update]:
        out: list[Update] = []
        for source, w in self.watches.items():
            while (ev := w.get(0)) is not None:
                out.append(typed(source, ev))
        return out

    def _apply(self, u: Update) -> bool:
        if isinstance(u, Ready):
            self._ready.add(u.source)
            return True
        if isinstance(u, Gone):
            if u.source == "pulses":
                return self.pulses.pop(u.uuid, None) is not None
            self.cache.delete(u.uuid)
            self.events.pop(u.uuid, None)
            return True
        if isinstance(u, PulseSeen):
            self.pulses[u.uuid] = u.pulse
            return True
        if isinstance(u, EventSeen):
            if not self._want_events:
                return False
            self.events[u.uuid] = u.event
            self.cache.put_event(u.uuid, u.event)
            if u.source in self._ready and u.added:
                self.new_events += [replace(u, event=e) for e in self._each(u.event)]
            return True
        if isinstance(u, EntryChanged):
            self.cache.put_entry(u.entry, uuid=u.uuid)
            return True
        if isinstance(u, Invalid):
            log.warning("event=invalid_entry dn=%s error=%s", u.error.dn, u.error.problem)
        return False  # Resumed: the watch resumes by itself

    def snapshot(self) -> Snapshot:
        return self.cache.snapshot()

    def pulse_map(self) -> dict[ServerName, Pulse]:
        return {p.server: p for p in self.pulses.values()}

    def _each(self, event: Event) -> list[Event]:
        """One event per application (of ``event_tag`` only, when one was given)."""
        got = event.each()
        if self._event_tag is None:
            return list(got)
        return [e for e in got if e.tag is not None and e.tag.lower() == self._event_tag]

    def event_list(self) -> list[Event]:
        """The events, one per application, oldest first."""
        found = [e for event in self.events.values() for e in self._each(event)]
        return sorted(found, key=lambda e: (e.time, e.id))

    def fresh_events(self, since_csn: str = "") -> Sequence[Event]:
        """The events added since the refresh, those written at ``since_csn`` or later."""
        return [n.event for n in self.new_events if n.csn >= since_csn]

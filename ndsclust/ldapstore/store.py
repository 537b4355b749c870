"""The cluster store: reads, writes and compare-and-swaps against the write provider.

Layout under the cluster base (docs/design.md section 2)::

    ou=ndsclust,<suffix>    ou=servers / ou=applications / ou=events
    <pulse suffix>          cn=<server>: one pulse entry per server (own database)

Every write goes to the write provider through ``session.Session`` (connection, failover,
the low-level operations and what a conflict becomes). A move is one compare-and-swap
modify with several parts (``swap_app``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ldap3
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from ndsclust.errors import (
    EntryExists,
    EntryInvalid,
    NoSuchEntry,
    StoreError,
)
from ndsclust.fencing.record import FenceState
from ndsclust.ldapstore import entries
from ndsclust.ldapstore import fence_records as fences
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.fence_records import FenceRecord
from ndsclust.ldapstore.session import APP_ATTRS as APP_ATTRS
from ndsclust.ldapstore.session import DEFAULT_OP_DEADLINE as DEFAULT_OP_DEADLINE
from ndsclust.ldapstore.session import Session
from ndsclust.liveness import encode_report
from ndsclust.model import (
    App,
    Event,
    LivenessReport,
    Pulse,
    Request,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
    networks_values,
)
from ndsclust.pause import ATTRIBUTE as PAUSE_ATTRIBUTE
from ndsclust.pause import Pause, of_values

log = logging.getLogger("ndsclust.ldapstore")

# Events added through one store between two prunes of the audit trail.
PRUNE_EVERY = 50


def event_filter(tag: str | None = None) -> str:
    """The LDAP filter of the audit trail's events; with ``tag``, those that may be about
    that application: tagged with it, or naming several (``entries.event_text``), which
    the reader sorts out."""
    filt = "(objectClass=ndsclustEvent)"
    if not tag:
        return filt
    return f"(&{filt}(|(ndsclustEventTag={escape_filter_chars(tag)})(!(ndsclustEventTag=*))))"


def generalized_time(t: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if t is None else t, tz=UTC)
    return dt.strftime("%Y%m%d%H%M%S.%fZ")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the directory says now: valid entries and the invalid ones with their errors."""

    apps: Mapping[Tag, App]
    servers: Mapping[ServerName, Server]
    invalid: tuple[EntryInvalid, ...] = ()
    pause: Pause | None = None  # ndsclustPause on the cluster base (docs/operating.md, "Pause")


class Store(Session):
    """Typed CRUD and compare-and-swap over the provider list. Thread-safe."""

    def __init__(
        self,
        providers: Providers,
        suffix: str,
        *,
        base: str | None = None,
        pulse_base: str | None = None,
        op_deadline: float = DEFAULT_OP_DEADLINE,
        event_limit: int = 1000,
        name: str = "write",
    ) -> None:
        super().__init__(providers, suffix, op_deadline=op_deadline, name=name)
        self.base = base or f"ou=ndsclust,{suffix}"
        self.pulse_base = pulse_base
        self.servers_dn = f"ou=servers,{self.base}"
        self.apps_dn = f"ou=applications,{self.base}"
        self.events_dn = f"ou=events,{self.base}"
        self.event_limit = event_limit
        self._event_seq = 0
        self._pruned_at = 0

    # -- cluster base ---------------------------------------------------------------------

    def ensure_base(self) -> None:
        """Create the cluster base and its three branches when missing (idempotent)."""
        ou = self.base.split(",", 1)[0].split("=", 1)[1]
        wanted = [
            (
                self.base,
                {"objectClass": ["top", "organizationalUnit", "ndsclustCluster"], "ou": [ou]},
            )
        ]
        for name in ("servers", "applications", "events"):
            wanted.append(
                (
                    f"ou={name},{self.base}",
                    {"objectClass": ["top", "organizationalUnit"], "ou": [name]},
                )
            )
        for dn, attrs in wanted:
            try:
                self.add(dn, attrs)
            except EntryExists:
                pass
        if self.pulse_base and not self.search(
            self.pulse_base, "(objectClass=*)", scope=ldap3.BASE, attributes=["1.1"]
        ):
            raise StoreError(
                f"pulse database {self.pulse_base} has no base entry; "
                "configure the pulse database on every provider "
                "(deploy/INSTALL.md, step 4)"
            )

    def pause(self) -> Pause | None:
        """The cluster-wide pause on the cluster base, None when there is none."""
        found = self.search(self.base, "(objectClass=*)", scope=ldap3.BASE, attributes=["*"])
        if not found:
            return None
        return of_values(list(Entry(*found[0]).all(PAUSE_ATTRIBUTE)))

    def set_pause(self, pause: Pause | None) -> None:
        """Write (None: remove) the pause: docs/operating.md, "Pause"."""
        values = [] if pause is None else [pause.value()]
        self.modify(self.base, {PAUSE_ATTRIBUTE: [(ldap3.MODIFY_REPLACE, values)]})

    # -- servers --------------------------------------------------------------------------

    def server_dn(self, name: str) -> str:
        return f"cn={escape_rdn(name)},{self.servers_dn}"

    def add_server(self, server: Server) -> None:
        self.add(self.server_dn(server.name), entries.server_attributes(server))

    def servers(self) -> tuple[dict[ServerName, Server], list[EntryInvalid]]:
        good: dict[ServerName, Server] = {}
        bad: list[EntryInvalid] = []
        for dn, attrs in self.search(self.servers_dn, "(objectClass=ndsclustServer)"):
            try:
                s = entries.parse_server(dn, attrs)
                good[s.name] = s
            except EntryInvalid as e:
                bad.append(e)
        return good, bad

    def set_server_state(self, name: str, state: ServerState) -> None:
        self.modify(
            self.server_dn(name), {"ndsclustServerState": [(ldap3.MODIFY_REPLACE, [state.value])]}
        )

    def delete_server(self, name: str) -> None:
        self.delete(self.server_dn(name))

    # -- applications ---------------------------------------------------------------------

    def app_dn(self, tag: str) -> str:
        return f"ndsclustTag={escape_rdn(tag)},{self.apps_dn}"

    def add_app(self, app: App) -> None:
        self.add(self.app_dn(app.tag), entries.app_attributes(app))

    def app(self, tag: str) -> App:
        """Read one application; NoSuchEntry or EntryInvalid when it cannot be used."""
        found = self.search(self.app_dn(tag), "(objectClass=ndsclustApplication)", scope=ldap3.BASE)
        if not found:
            raise NoSuchEntry(f"no application with tag {tag!r} (looked for {self.app_dn(tag)})")
        return entries.parse_app(*found[0])

    def app_entry(self, tag: str) -> tuple[str, str, dict[str, list[Any]]] | None:
        """The raw entry of one application as the write provider has it now: (entryUUID,
        DN, attributes with entryCSN), for a cache that shows its own writes; None when
        it is gone."""
        for dn, attrs in self.search(self.app_dn(tag), "(objectClass=*)", scope=ldap3.BASE):
            uuid = (attrs.get("entryUUID") or [b""])[0]
            return (uuid.decode() if isinstance(uuid, bytes) else str(uuid)), dn, attrs
        return None

    def apps(self) -> tuple[dict[Tag, App], list[EntryInvalid]]:
        good: dict[Tag, App] = {}
        bad: list[EntryInvalid] = []
        for dn, attrs in self.search(self.apps_dn, "(objectClass=ndsclustApplication)"):
            try:
                a = entries.parse_app(dn, attrs)
                good[a.tag] = a
            except EntryInvalid as e:
                bad.append(e)
        return good, bad

    def snapshot(self) -> Snapshot:
        """Servers and applications, each application checked against the server names."""
        servers, bad = self.servers()
        apps, bad_apps = self.apps()
        bad += bad_apps
        valid: dict[Tag, App] = {}
        for tag, a in apps.items():
            try:
                entries.check_references(a, servers)
                valid[tag] = a
            except EntryInvalid as e:
                bad.append(e)
        return Snapshot(valid, servers, tuple(bad), self.pause())

    def replace_app_attrs(self, tag: str, values: Mapping[str, list[str] | None]) -> None:
        """Replace attributes of one application (None or [] removes the attribute)."""
        self.modify(
            self.app_dn(tag), {k: [(ldap3.MODIFY_REPLACE, v or [])] for k, v in values.items()}
        )

    def delete_app(self, tag: str) -> None:
        self.delete(self.app_dn(tag))

    def swap_host(
        self,
        tag: str,
        expected: ServerName | None,
        new: ServerName | None,
        *,
        state: StateValue | None = None,
        post_read: Sequence[str] | None = None,
        unless: Callable[[], str | None] | None = None,
    ) -> dict[str, list[Any]] | None:
        """Move the host from ``expected`` to ``new`` (None = absent) atomically, optionally
        setting the state in the same request. SwapConflict when the host was not ``expected``;
        Withdrawn when ``unless`` gives a reason just before the send (see ``modify``)."""
        return self.swap_app(
            tag, host=(expected, new), state=state, post_read=post_read, unless=unless
        )

    def swap_app(
        self,
        tag: str,
        *,
        host: tuple[ServerName | None, ServerName | None] | None = None,
        consume: Request | None = None,
        state: StateValue | None = None,
        post_read: Sequence[str] | None = None,
        unless: Callable[[], str | None] | None = None,
    ) -> dict[str, list[Any]] | None:
        """One compare-and-swap modify of an application with several parts: the host from
        ``host[0]`` to ``host[1]`` (None = absent), the request ``consume`` removed (it must
        still be that value), the state replaced. All apply or none: SwapConflict when the
        host or the request was not what the caller saw (re-read and decide again)."""
        changes: dict[str, list[tuple[str, list[str]]]] = {}
        parts: list[tuple[str, str | None, str | None]] = []
        if host is not None:
            expected, new = host
            ops: list[tuple[str, list[str]]] = []
            if expected is not None:
                ops.append((ldap3.MODIFY_DELETE, [expected]))
            if new is not None:
                ops.append((ldap3.MODIFY_ADD, [new]))
            if not ops:
                raise ValueError("a host swap needs an expected or a new value")
            changes["ndsclustHostServer"] = ops
            parts.append(("ndsclustHostServer", expected, new))
        if consume is not None:
            changes["ndsclustRequest"] = [(ldap3.MODIFY_DELETE, [str(consume)])]
            parts.append(("ndsclustRequest", str(consume), None))
        if not parts:
            raise ValueError("swap_app needs a host swap or a request to consume")
        if state is not None:
            changes["ndsclustState"] = [(ldap3.MODIFY_REPLACE, [str(state)])]
        attribute = "+".join(p[0] for p in parts)
        return self.modify(
            self.app_dn(tag),
            changes,
            swap=(attribute, parts[0][1], parts[0][2]),
            post_read=post_read,
            unless=unless,
        )

    def set_state(
        self, tag: str, state: StateValue, *, post_read: Sequence[str] | None = None
    ) -> dict[str, list[Any]] | None:
        return self.modify(
            self.app_dn(tag),
            {"ndsclustState": [(ldap3.MODIFY_REPLACE, [str(state)])]},
            post_read=post_read,
        )

    def set_request(self, tag: str, request: Request | None) -> None:
        self.replace_app_attrs(tag, {"ndsclustRequest": [str(request)] if request else None})

    def consume_request(
        self, tag: str, request: Request, *, post_read: Sequence[str] | None = None
    ) -> dict[str, list[Any]] | None:
        """Remove exactly this request; SwapConflict if an operator replaced it meanwhile."""
        return self.swap_app(tag, consume=request, post_read=post_read)

    def add_request(
        self, tag: str, request: Request, *, post_read: Sequence[str] | None = None
    ) -> dict[str, list[Any]] | None:
        """Write ``request`` where none is pending; SwapConflict when one is (stacks)."""
        return self.modify(
            self.app_dn(tag),
            {"ndsclustRequest": [(ldap3.MODIFY_ADD, [str(request)])]},
            swap=("ndsclustRequest", None, str(request)),
            post_read=post_read,
        )

    def swap_marker(self, tag: str, expected: str | None, new: str) -> None:
        self.swap(self.app_dn(tag), "ndsclustMarker", expected, new)

    # -- events ---------------------------------------------------------------------------

    def record_event(
        self,
        kind: str,
        *,
        server: str | None = None,
        tag: str | None = None,
        text: str = "",
        prune: bool = True,
    ) -> Event:
        """Append one event to the audit trail; prune the oldest beyond ``event_limit``."""
        event = self._add_event(kind, server=server, tag=tag, text=text[: entries.EVENT_TEXT_LIMIT])
        if prune:
            self._maybe_prune()
        return event

    def _add_event(self, kind: str, *, server: str | None, tag: str | None, text: str) -> Event:
        """Add one event entry with exactly these values.

        Every attempt adds under a new name: an add whose answer was lost with its provider
        may have been applied there, and the same name added again on another provider
        would be two entries of one DN once replication resumes, which it resolves by
        dropping one of them on some provider. A lost answer may leave the event twice."""
        now = time.time()
        made: list[tuple[int, str, dict[str, list[str]]]] = []

        def op(conn: ldap3.Connection) -> None:
            with self._lock:
                self._event_seq += 1
                seq = self._event_seq
            event_id = f"{generalized_time(now)}-{server or 'cli'}-{os.getpid()}-{seq}"
            dn = f"ndsclustEventId={escape_rdn(event_id)},{self.events_dn}"
            attrs: dict[str, list[str]] = {
                "objectClass": ["top", "ndsclustEvent"],
                "ndsclustEventId": [event_id],
                "ndsclustEventTime": [generalized_time(now)],
                "ndsclustEventKind": [kind],
            }
            if server:
                attrs["ndsclustEventServer"] = [server]
            if tag:
                attrs["ndsclustEventTag"] = [tag]
            if text:
                attrs["ndsclustEventText"] = [text]
            self._add_on(conn, dn, attrs)
            made.append((seq, dn, attrs))

        self._run("add", op)
        _, dn, attrs = made[-1]
        return entries.parse_event(dn, attrs)

    def _maybe_prune(self) -> None:
        """Prune once ``PRUNE_EVERY`` events were added since the last prune: a prune
        searches every event, so a batch of a thousand prunes once, not twenty times."""
        with self._lock:
            due = self._event_seq - self._pruned_at >= PRUNE_EVERY
            if due:
                self._pruned_at = self._event_seq
        if due:
            self.prune_events()

    def record_events(self, events: Sequence[tuple[str, str | None, str]], *, server: str) -> None:
        """Append several events (kind, tag, text) written by ``server`` (the recorder's
        batch), pruning at most once, after them. Those of several applications with the
        same kind and text share one entry (``entries.batch_events``): a thousand
        applications taken over in one cycle are a few adds, not a thousand."""
        for kind, tags, text in entries.batch_events(events):
            if len(tags) > 1:
                self._add_event(kind, server=server, tag=None, text=entries.event_text(text, tags))
            else:
                self._add_event(kind, server=server, tag=tags[0] if tags else None, text=text)
        self._maybe_prune()

    def events(self, *, tag: str | None = None, limit: int | None = None) -> list[Event]:
        """The audit trail, oldest first, one event per application (``Event.each``)."""
        found: list[Event] = []
        for dn, attrs in self.search(self.events_dn, event_filter(tag), scope=ldap3.LEVEL):
            try:
                found += entries.parse_event(dn, attrs).each()
            except EntryInvalid as e:
                log.warning("event=invalid_entry dn=%s error=%s", dn, e.problem)
        if tag:
            found = [e for e in found if e.tag is not None and e.tag.lower() == tag.lower()]
        found.sort(key=lambda e: (e.time, e.id))
        return found[-limit:] if limit else found

    def prune_events(self) -> int:
        """Delete the oldest events beyond ``event_limit``; returns how many went."""
        found = self.search(
            self.events_dn,
            "(objectClass=ndsclustEvent)",
            scope=ldap3.LEVEL,
            attributes=["ndsclustEventTime", "ndsclustEventId"],
        )
        if len(found) <= self.event_limit:
            return 0
        found.sort(
            key=lambda r: (
                r[1].get("ndsclustEventTime", [b""])[0],
                r[1].get("ndsclustEventId", [b""])[0],
            )
        )
        gone = 0
        for dn, _ in found[: len(found) - self.event_limit]:
            try:
                self.delete(dn)
                gone += 1
            except NoSuchEntry:
                pass  # another sentinel pruned it first
        return gone

    # -- fence records (fence_records.py) -------------------------------------------------

    def fence_record(self, server: str) -> FenceRecord:
        return fences.read(self, self.base, server)

    def fence_records(self) -> dict[str, FenceRecord]:
        return fences.read_all(self, self.base)

    def swap_fence_record(
        self, server: str, found: FenceRecord, new: FenceState, text: str | None = None
    ) -> FenceRecord:
        return fences.write(self, self.base, server, found, new, text)

    # -- pulses ---------------------------------------------------------------------------

    def pulse_dn(self, server: str) -> str:
        if not self.pulse_base:
            raise StoreError("no pulse database configured")
        return f"cn={escape_rdn(server)},{self.pulse_base}"

    def write_pulse(self, server: str, counter: int) -> None:
        """Advance this server's pulse (claim 44); creates the entry on first use."""
        dn = self.pulse_dn(server)
        values = {"ndsclustPulse": [str(counter)], "ndsclustPulseTime": [generalized_time()]}
        try:
            self.modify(dn, {k: [(ldap3.MODIFY_REPLACE, v)] for k, v in values.items()})
        except NoSuchEntry:
            self.add(dn, {"objectClass": ["top", "ndsclustPulseEntry"], "cn": [server], **values})

    def write_pulse_report(self, server: str, counter: int, report: LivenessReport) -> None:
        """Advance this server's pulse and, in the same modify, replace its liveness report
        (``ndsclust.liveness``); creates the entry on first use."""
        dn = self.pulse_dn(server)
        classes = ["top", "ndsclustPulseEntry", "ndsclustLivenessReport"]
        values = {
            "ndsclustPulse": [str(counter)],
            "ndsclustPulseTime": [generalized_time()],
            **encode_report(report),
        }
        changes = {k: [(ldap3.MODIFY_REPLACE, v)] for k, v in values.items()}
        try:
            self.modify(dn, {"objectClass": [(ldap3.MODIFY_REPLACE, classes)], **changes})
        except NoSuchEntry:
            self.add(dn, {"objectClass": classes, "cn": [server], **values})

    def write_networks(self, server: str, networks: frozenset[str]) -> None:
        """Publish on this server's pulse entry what it can hold service addresses on
        (``ndsclustNetwork``, ``model.parse_networks``); a modify of its own, so a provider
        that refuses it never stops the pulse. The entry must exist (the pulse creates it)."""
        classes = ["top", "ndsclustPulseEntry", "ndsclustLivenessReport"]
        self.modify(
            self.pulse_dn(server),
            {
                "objectClass": [(ldap3.MODIFY_REPLACE, classes)],
                "ndsclustNetwork": [(ldap3.MODIFY_REPLACE, networks_values(networks))],
            },
        )

    def pulses(self) -> dict[ServerName, Pulse]:
        out: dict[ServerName, Pulse] = {}
        if not self.pulse_base:
            return out
        for dn, attrs in self.search(
            self.pulse_base, "(objectClass=ndsclustPulseEntry)", scope=ldap3.LEVEL
        ):
            try:
                p = entries.parse_pulse(dn, attrs)
                out[p.server] = p
            except EntryInvalid as e:
                log.warning("event=invalid_entry dn=%s error=%s", dn, e.problem)
        return out

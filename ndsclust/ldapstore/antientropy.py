"""Anti-entropy: find the cluster entries the providers hold differently and repair them.

OpenLDAP 2.5.13 can leave a provider without an entry its peers hold, or holding one they
deleted, for good, while every contextCSN agrees (docs/platform.md fact 10). Equal
contextCSNs therefore prove nothing; this module compares the entries themselves
(docs/design.md invariant 3, "Anti-entropy"):

- ``read_digests``: one paged read per provider of the cluster subtree (servers,
  applications, events), keeping per entry only its entryCSN and a 16-byte digest of its
  user attribute values (docs/platform.md fact 9: entryCSN alone may differ for equal values).
- ``plan``: pure. The write provider's copy is authoritative (every write went through it):
  an entry that differs or is missing elsewhere is *rewritten* through the write provider,
  so that a newer change replicates everywhere; an entry the write provider no longer holds
  is *deleted* where it is still held. Nothing is planned while a provider is unreachable
  or replication says the providers are cut off from each other (a partition), and only a
  difference seen on two looks with the write provider's copy unchanged counts, so a write
  still on its way is not taken for divergence.
- ``Repairer``: reads, plans, applies, writes one ``repair`` event per repair (entry,
  provider, values before and after) and looks again: what still differs is reported with
  its remedy, re-seeding that provider (``ndsclust doctor --repair``).

What the providers' contextCSNs say before any entry is read (unreachable, replication
under way, cut off) and the probe that tells when a provider came back are in
``antientropy_probe.py``.

Pulses are not compared: they live in a database of their own, each entry has one writer and
plain syncrepl copies whole entries, so a stale pulse is replaced by the next one.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.operation.search import compile_filter, parse_filter
from pyasn1.codec.ber import encoder

from ndsclust.errors import ProviderUnreachable, StoreError
from ndsclust.ldapstore.antientropy_probe import CSNs, lagging, partition_reason, unreachable
from ndsclust.ldapstore.connection import Credentials, open_connection
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.replication import read_context_csns

log = logging.getLogger("ndsclust.antientropy")

PAGE = 500
ASSERTION = "1.3.6.1.1.12"  # RFC 4528: the rewrite applies only to the copy it read
ASSERTION_FAILED = 122
# Operational attributes a provider keeps for itself: never compared, never rewritten.
OPERATIONAL = frozenset(
    {
        "entrycsn",
        "entryuuid",
        "modifytimestamp",
        "modifiersname",
        "createtimestamp",
        "creatorsname",
        "entrydn",
        "structuralobjectclass",
        "subschemasubentry",
        "hassubordinates",
        "contextcsn",
    }
)
# Attributes an LDAP modify may not replace (the RDN value stays; objectClass is kept).
KEEP = frozenset({"objectclass"})


# One provider's entries: lower-cased DN -> 16-byte digest of the entry's user values. Only
# the digest is kept (about 200 bytes an entry with its DN): the write provider's entryCSN
# is read when a repair is carried out, so the plan needs no CSN.
Digests = Mapping[str, bytes]
Values = dict[str, tuple[str, ...]]  # lower-cased attribute -> sorted values


class Action(Enum):
    REWRITE = "rewrite"  # through the write provider, so that it replicates everywhere
    DELETE = "delete"  # on the provider that still holds what the write provider deleted


@dataclass(frozen=True, slots=True)
class Repair:
    dn: str
    action: Action
    providers: tuple[str, ...]  # the providers whose copy differs (or still exists)


@dataclass(frozen=True, slots=True)
class Plan:
    repairs: tuple[Repair, ...] = ()
    held: str = ""  # why nothing is repaired now ("" when the plan may be applied)
    differing: tuple[str, ...] = ()  # DNs that differ, confirmed or not


def user_values(attrs: Mapping[str, Sequence[bytes]]) -> Values:
    return {
        a.lower(): tuple(sorted(bytes(v).decode("utf-8", "replace") for v in vs))
        for a, vs in attrs.items()
        if a.lower() not in OPERATIONAL
    }


def entry_digest(values: Values) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in sorted(values):
        h.update(a.encode())
        for v in values[a]:
            h.update(b"\0")
            h.update(v.encode())
        h.update(b"\1")
    return h.digest()


def _differs(w: bytes | None, o: bytes | None) -> bool:
    return w != o


def plan(
    write: str,
    seen: Mapping[str, Digests | None],
    *,
    earlier: Mapping[str, Digests | None] | None = None,
    partitioned: str = "",
) -> Plan:
    """The repairs that make every provider hold what ``write`` (the write provider) holds.

    ``seen``: every provider's digests, None for one that did not answer. ``earlier``: the
    previous look; a repair is planned only for an entry that differed the same way then, with
    the write provider's copy unchanged (a change on its way is not divergence). Without
    ``earlier`` nothing is confirmed and only ``differing`` is filled. ``partitioned``: why
    replication says the providers are cut off from each other; then nothing is planned."""
    unreachable = sorted(u for u, d in seen.items() if d is None)
    if write not in seen:
        return Plan(held=f"write provider {write} was not read")
    if unreachable:
        return Plan(held="unreachable: " + ", ".join(unreachable))
    if partitioned:
        return Plan(held=partitioned)
    views = {u: d for u, d in seen.items() if d is not None}
    w = views[write]
    others = sorted(u for u in views if u != write)
    repairs: list[Repair] = []
    differing: list[str] = []
    for dn in sorted({dn for d in views.values() for dn in d}):
        bad = tuple(u for u in others if _differs(w.get(dn), views[u].get(dn)))
        if not bad:
            continue
        differing.append(dn)
        if earlier is None or not _confirmed(write, dn, bad, views, earlier):
            continue
        if dn in w:
            repairs.append(Repair(dn, Action.REWRITE, bad))
        else:
            repairs.append(Repair(dn, Action.DELETE, tuple(u for u in bad if dn in views[u])))
    return Plan(tuple(repairs), "", tuple(differing))


def _confirmed(
    write: str,
    dn: str,
    bad: tuple[str, ...],
    views: Mapping[str, Digests],
    earlier: Mapping[str, Digests | None],
) -> bool:
    before_w = earlier.get(write)
    if before_w is None or before_w.get(dn) != views[write].get(dn):
        return False
    for u in bad:
        before = earlier.get(u)
        if before is None or not _differs(before_w.get(dn), before.get(dn)):
            return False
    return True


# -- reading ---------------------------------------------------------------------------------


def read_digests(
    conn: ldap3.Connection, base: str, names: dict[str, str] | None = None
) -> dict[str, bytes]:
    """Every entry under ``base`` through ``conn`` as DN -> digest, in pages of ``PAGE``: the
    values are folded into the digest as each page arrives, so memory stays one page plus
    the DN and 16 bytes per entry."""
    found = conn.extend.standard.paged_search(
        base,
        "(objectClass=*)",
        search_scope=ldap3.SUBTREE,
        dereference_aliases=ldap3.DEREF_NEVER,
        attributes=["*"],
        paged_size=PAGE,
        generator=True,
    )
    out: dict[str, bytes] = {}
    for e in found:
        if e.get("type") != "searchResEntry":
            continue
        dn = str(e["dn"])
        key = sys.intern(dn.lower())  # interned: the providers' tables share one string per DN
        out[key] = entry_digest(user_values(e["raw_attributes"]))
        if names is not None and dn != key:
            names[key] = dn
    return out


def read_values(conn: ldap3.Connection, dn: str) -> tuple[Values, str] | None:
    """The user values of one entry and its entryCSN, None when the provider lacks it."""
    ok = conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["*", "entryCSN"])
    if not ok:
        code = (conn.result or {}).get("result")
        if code == 32:
            return None
        raise StoreError(f"read {dn}: {(conn.result or {}).get('description')}")
    got = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
    if not got:
        return None
    raw = got[0]["raw_attributes"]
    return user_values(raw), Entry(dn, raw).csn


def _values(conn: ldap3.Connection, dn: str) -> Values | None:
    got = read_values(conn, dn)
    return got[0] if got else None


def _assertion(filt: str) -> tuple[str, bool, bytes]:
    node = parse_filter(filt, None, True, True, None, False)
    return (ASSERTION, True, encoder.encode(compile_filter(node.elements[0])))


def brief(values: Values | None) -> str:
    """Values as one short line for an event: ``attr=v1|v2;...``, or ``absent``."""
    if values is None:
        return "absent"
    return ";".join(f"{a}={'|'.join(vs)}" for a, vs in sorted(values.items()))


# -- applying ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """One repair carried out (or given up), with the values before and after."""

    repair: Repair
    provider: str
    before: Values | None
    after: Values | None
    ok: bool
    note: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One sweep: what it found, what it did, what still differs afterwards."""

    held: str = ""
    differing: tuple[str, ...] = ()
    done: tuple[Done, ...] = ()
    still: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (DN, providers) after the re-check
    read_s: float = 0.0
    entries: int = 0

    @property
    def repaired(self) -> int:
        return sum(1 for d in self.done if d.ok)


EventSink = Callable[[str, str], object]  # (kind, text): the store's record_event


@dataclass
class Repairer:
    """Sweeps the cluster subtree of ``uris`` and repairs it through ``write`` (the write
    provider's URI, asked each sweep). ``record(kind, text)`` writes an audit event."""

    uris: Sequence[str]
    creds: Credentials
    base: str
    suffix: str
    write: Callable[[], str | None]
    record: EventSink
    look_gap: float = 1.0
    recheck_after: float = 1.0
    timeout: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    _conns: dict[str, ldap3.Connection] = field(default_factory=dict)
    # Lower-cased DN -> the DN as a provider gave it: the plan compares DNs case-blind, but an
    # RDN of exact matching (an event's id) must be named as it is to be found.
    _names: dict[str, str] = field(default_factory=dict)

    def interrupt(self) -> None:
        """Nothing to cut short: a sweep in this process ends by itself (its reads time out)."""

    def close(self) -> None:
        for c in self._conns.values():
            try:
                c.unbind()
            except LDAPException:
                pass
        self._conns.clear()

    def _conn(self, uri: str) -> ldap3.Connection:
        c = self._conns.get(uri)
        if c is None or c.closed:
            c = self._conns[uri] = open_connection(uri, self.creds, timeout=self.timeout)
        return c

    def _read(self, uri: str, what: Callable[[ldap3.Connection], Any]) -> Any:
        try:
            return what(self._conn(uri))
        except (LDAPException, ProviderUnreachable, StoreError) as e:
            log.info("event=antientropy_unreadable provider=%s error=%s", uri, type(e).__name__)
            self._conns.pop(uri, None)
            return None

    def csns(self) -> dict[str, Mapping[str, str] | None]:
        """Every provider's contextCSNs (None for one that did not answer): one small read
        each, made before any entry is read, so a sweep that must wait costs little."""
        return {u: self._read(u, lambda c: read_context_csns(c, self.suffix)) for u in self.uris}

    def digests(self) -> dict[str, Digests | None]:
        """Every provider's digests (None for one that did not answer)."""
        return {
            u: self._read(u, lambda c: read_digests(c, self.base, self._names)) for u in self.uris
        }

    def look(self) -> tuple[dict[str, Digests | None], dict[str, Mapping[str, str] | None]]:
        """Every provider's digests and contextCSNs (None for one that did not answer)."""
        csns = self.csns()
        return self.digests(), csns

    def _whole(self) -> tuple[str, CSNs]:
        """Why the cluster is not whole now ("" when it is), and the contextCSNs read: every
        provider must answer, and their contextCSNs agree; ones that differ are looked at
        again after ``look_gap``, to tell a cut (stays behind) from a lag (moves)."""
        first = self.csns()
        why = unreachable(first) or lagging(first)
        if not why or why.startswith("unreachable"):
            return why, first
        self.sleep(self.look_gap)
        second = self.csns()
        return unreachable(second) or partition_reason(first, second) or lagging(second), second

    def sweep(self) -> Outcome:
        write = self.write()
        if write is None:
            return Outcome(held="no write provider")
        t0 = time.monotonic()
        why, csns1 = self._whole()
        if why:
            return Outcome(held=why)
        first = self.digests()
        read_s = time.monotonic() - t0
        entries = len(first.get(write) or {})
        p = plan(write, first)
        if p.held or not p.differing:
            return Outcome(held=p.held, read_s=read_s, entries=entries)
        first = {u: _only(d, p.differing) for u, d in first.items()}  # all the plan needs
        self.sleep(self.look_gap)
        second, csns2 = self.look()
        why = partition_reason(csns1, csns2) or unreachable(csns2) or lagging(csns2)
        p = plan(write, second, earlier=first, partitioned=why)
        if p.held or not p.repairs:
            return Outcome(p.held, p.differing, read_s=read_s, entries=entries)
        done = tuple(d for r in p.repairs for d in self.apply(write, r))
        self.sleep(self.recheck_after)
        again, _ = self.look()
        left = plan(write, again)
        repaired = {d.repair.dn for d in done}
        still = tuple(
            (dn, tuple(u for u in self.uris if u != write and _differs_at(again, write, u, dn)))
            for dn in left.differing
            if dn in repaired
        )
        for dn, where in still:
            log.warning(
                "event=repair_failed dn=%s providers=%s remedy=%s",
                dn,
                ",".join(where),
                "ndsclust doctor --repair (re-seed that provider)",
            )
            self.record(
                "repair_failed",
                f"dn={dn} providers={','.join(where)} still differs after a repair; "
                "re-seed that provider: ndsclust doctor --repair",
            )
        return Outcome(p.held, p.differing, done, still, read_s, entries)

    def apply(self, write: str, r: Repair) -> list[Done]:
        """Carry out one repair and record it. A rewrite replaces, on the write provider, every
        attribute some provider holds differently with the write provider's values, under an
        assertion that its entryCSN is still the one planned: a change that came meanwhile is
        newer and wins. A delete removes the copy where the write provider has none."""
        out: list[Done] = []
        dn = self._names.get(r.dn, r.dn)
        if r.action is Action.REWRITE:
            wconn = self._conn(write)
            got = read_values(wconn, dn)
            mine = got[0] if got else None
            for u in r.providers:
                before = self._read(u, lambda c: _values(c, dn))
                out.append(Done(r, u, before, mine, False))
            if got is None or mine is None:
                return [_note(d, "gone from the write provider meanwhile") for d in out]
            changed = {
                a
                for d in out
                if d.before is not None  # a copy that is missing needs only the touch below
                for a in {*mine, *d.before}
                if a not in KEEP and d.before.get(a) != mine.get(a)
            }
            changes: dict[str, list[tuple[Any, list[str]]]] = {
                a: [(ldap3.MODIFY_REPLACE, list(mine.get(a, ())))] for a in changed
            }
            if not changes:
                # Only missing elsewhere: delete the entry's structural class and add it
                # again, one modify that leaves it as it was and that a server's identity
                # may make on any cluster entry (ndsclust/slapd/provider.ldif.in); its
                # replication brings the entry back (docs/platform.md fact 34).
                changes = {"objectClass": _touch(mine.get("objectclass", ()))}
            ok = wconn.modify(dn, changes, controls=[_assertion(f"(entryCSN={got[1]})")])
            code = (wconn.result or {}).get("result")
            note = "" if ok else ("changed meanwhile" if code == ASSERTION_FAILED else str(code))
            out = [Done(d.repair, d.provider, d.before, mine, ok, note) for d in out]
        else:
            for u in r.providers:
                before = self._read(u, lambda c: _values(c, dn))
                try:
                    c = self._conn(u)
                    ok = c.delete(dn) or (c.result or {}).get("result") == 32
                    note = "" if ok else str((c.result or {}).get("description"))
                except (LDAPException, ProviderUnreachable) as e:
                    ok, note = False, type(e).__name__
                out.append(Done(r, u, before, None, ok, note))
        for d in out:
            self._report(d)
        return out

    def _report(self, d: Done) -> None:
        level = logging.WARNING if d.ok else logging.ERROR
        log.log(
            level,
            "event=repair dn=%s provider=%s action=%s ok=%s%s",
            d.repair.dn,
            d.provider,
            d.repair.action.value,
            d.ok,
            f" note={d.note!r}" if d.note else "",
        )
        self.record(
            "repair",
            f"dn={d.repair.dn} provider={d.provider} action={d.repair.action.value} "
            f"ok={d.ok}{' note=' + d.note if d.note else ''} "
            f"before={brief(d.before)} after={brief(d.after)}",
        )


def _touch(classes: Sequence[str]) -> list[tuple[Any, list[str]]]:
    """The objectClass change that changes nothing: its ndsclust class out and in again."""
    ours = [c for c in classes if c.lower().startswith("ndsclust")] or [
        c for c in classes if c.lower() != "top"
    ]
    one = ours[:1] or list(classes[:1])
    return [(ldap3.MODIFY_DELETE, one), (ldap3.MODIFY_ADD, one)]


def _only(d: Digests | None, dns: Sequence[str]) -> Digests | None:
    return None if d is None else {dn: d[dn] for dn in dns if dn in d}


def _note(d: Done, note: str) -> Done:
    return Done(d.repair, d.provider, d.before, d.after, False, note)


def _differs_at(seen: Mapping[str, Digests | None], write: str, u: str, dn: str) -> bool:
    w, o = seen.get(write), seen.get(u)
    return w is None or o is None or _differs(w.get(dn), o.get(dn))


__all__ = [
    "Action",
    "Digests",
    "Done",
    "Outcome",
    "Plan",
    "Repair",
    "Repairer",
    "brief",
    "entry_digest",
    "plan",
    "read_digests",
    "user_values",
]

"""Where each provider stands in replication: contextCSN per server ID.

A provider's contextCSN holds one CSN per serverID that has written to the database.
Provider P has caught up with provider Q when, for every serverID in Q's set, P's CSN is at
least Q's (CSNs start with a GeneralizedTime, so they compare as strings). FIG. 6 step 614:
after a simultaneous failure a sentinel runs nothing until its own provider has caught up.
Convergence is judged by values elsewhere (docs/platform.md fact 9); this is about lag.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import ldap3

from ndsclust.errors import ProviderUnreachable, StoreError
from ndsclust.ldapstore.connection import Credentials, connected, read_entry
from ndsclust.ldapstore.entries import Entry

ContextCSNs = Mapping[str, str]  # serverID (3 hex digits) -> CSN
ACCESSLOG_BASE = "cn=accesslog"
_REQ_MOD = re.compile(r"^([^:]+):([=+\-#])(?: (.*))?$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class LogWrite:
    """One successful modify in a provider's accesslog (the delta-syncrepl log), as that
    provider applied it: ``start`` orders a provider's own log, ``csn`` says where and when
    the write was first made (its serverID is the third field)."""

    start: str  # reqStart on this provider
    uuid: str  # reqEntryUUID
    dn: str  # reqDN
    csn: str  # entryCSN of the write
    mods: tuple[tuple[str, str, str | None], ...]  # (attribute, op '=' '+' '-' '#', value)

    @property
    def sid(self) -> str:
        parts = self.csn.split("#")
        return parts[2] if len(parts) == 4 else ""


def parse_csns(values: Iterable[str]) -> dict[str, str]:
    """``20261125120000.000001Z#000000#001#000000`` -> {'001': csn}, keeping the newest."""
    out: dict[str, str] = {}
    for v in values:
        parts = v.split("#")
        if len(parts) == 4:
            sid = parts[2]
            if v > out.get(sid, ""):
                out[sid] = v
    return out


def context_csns(
    uri: str, creds: Credentials, suffix: str, *, timeout: float = 2.0
) -> dict[str, str]:
    with connected(uri, creds, timeout=timeout) as conn:
        return read_context_csns(conn, suffix) or {}


def read_context_csns(conn: ldap3.Connection, suffix: str) -> dict[str, str] | None:
    """The contextCSNs of the database ``suffix`` through the bound ``conn``; None when the
    provider does not answer the read."""
    ok = conn.search(
        suffix,
        "(objectClass=*)",
        search_scope=ldap3.BASE,
        attributes=["contextCSN"],
        dereference_aliases=ldap3.DEREF_NEVER,
    )
    if not ok:
        return None
    for r in conn.response or []:
        if r.get("type") == "searchResEntry":
            return parse_csns(bytes(v).decode() for v in r["raw_attributes"].get("contextCSN", []))
    return {}


def entry_csns(
    uris: Sequence[str], creds: Credentials, dn: str, *, timeout: float = 2.0
) -> dict[str, str | None]:
    """The entryCSN of ``dn`` on each provider that answers: uri -> CSN, or None where the
    entry is absent. Providers that do not answer are left out."""
    out: dict[str, str | None] = {}
    for uri in uris:
        try:
            e = read_entry(uri, creds, dn, attrs=["entryCSN"], timeout=timeout)
        except StoreError:  # ProviderUnreachable included: that provider is left out
            continue
        out[uri] = None if e is None else e.csn
    return out


def behind(local: ContextCSNs, peer: ContextCSNs) -> dict[str, tuple[str, str]]:
    """serverIDs where ``local`` lags ``peer``: sid -> (local csn, peer csn)."""
    return {sid: (local.get(sid, ""), csn) for sid, csn in peer.items() if local.get(sid, "") < csn}


def caught_up(
    local_uri: str,
    peer_uris: Sequence[str],
    creds: Credentials,
    suffixes: Sequence[str],
    *,
    required: Collection[str] = (),
    quorum: int = 1,
    timeout: float = 2.0,
) -> tuple[bool, str]:
    """Has the local provider caught up with every reachable peer? (answer, why-not text).

    The peers are read first and the local provider last: a write accepted between the two
    reads then has reached the peers' answers no later than it reaches ours, so ongoing
    writes do not make the local provider look behind when it is not.
    Unreachable peers are left out: they cannot hold anything the others lack for long, and
    a server must be able to run its programs when it is the only one left (FIG. 6) --
    except the ``required`` ones (providers of servers known alive), and unless fewer than
    ``quorum`` providers, the local one included, answered: a provider cut off together
    with this server agrees with itself and proves nothing."""
    peers: dict[str, dict[str, dict[str, str]]] = {}
    for uri in peer_uris:
        if uri == local_uri:
            continue
        try:
            peers[uri] = {s: context_csns(uri, creds, s, timeout=timeout) for s in suffixes}
        except ProviderUnreachable as e:
            if uri in required:
                return False, f"{uri} does not answer, and its server is alive: {e}"
            continue
    if len(peers) + 1 < quorum:
        return False, (
            f"only {len(peers) + 1} of {len(set(peer_uris) | {local_uri})} "
            f"providers answer; {quorum} needed"
        )
    try:
        local = {s: context_csns(local_uri, creds, s, timeout=timeout) for s in suffixes}
    except ProviderUnreachable as e:
        return False, f"local provider unreachable: {e}"
    for uri, peer in peers.items():
        for s in suffixes:
            lag = behind(local[s], peer[s])
            if lag:
                sid, (mine, theirs) = next(iter(lag.items()))
                return False, f"{s}: behind {uri} for serverID {sid} ({mine or 'none'} < {theirs})"
    return True, ""


def parse_req_mod(value: str) -> tuple[str, str, str | None]:
    """``description:= text`` -> ('description', '=', 'text'); ``x:-`` -> ('x', '-', None)."""
    m = _REQ_MOD.match(value)
    if m is None:
        return value, "?", None
    return m[1], m[2], m[3]


def access_log(
    uri: str, creds: Credentials, base: str, *, since: str, timeout: float = 5.0
) -> list[LogWrite]:
    """The modifies of entries under ``base`` that ``uri``'s accesslog holds from ``since``
    (GeneralizedTime) on. Needs read access to ``cn=accesslog`` (the replication identity
    or the directory's administrator have it)."""
    with connected(uri, creds, timeout=timeout) as conn:
        conn.search(
            ACCESSLOG_BASE,
            "(objectClass=*)",
            search_scope=ldap3.BASE,
            dereference_aliases=ldap3.DEREF_NEVER,
            attributes=["1.1"],
        )
        if not any(r.get("type") == "searchResEntry" for r in conn.response or []):
            raise StoreError(
                f"{uri}: {ACCESSLOG_BASE} is not readable with this identity "
                f"({conn.result.get('description') if conn.result else 'no answer'})"
            )
        entries = conn.extend.standard.paged_search(
            ACCESSLOG_BASE,
            f"(&(objectClass=auditModify)(reqStart>={since}))",
            search_scope=ldap3.LEVEL,
            dereference_aliases=ldap3.DEREF_NEVER,
            attributes=["reqStart", "reqDN", "reqEntryUUID", "entryCSN", "reqMod"],
            paged_size=500,
            generator=True,
        )
        out: list[LogWrite] = []
        suffix = "," + base.lower()
        for r in entries:
            if r.get("type") != "searchResEntry":
                continue
            e = Entry(r["dn"], r["raw_attributes"])
            dn = e.first("reqDN") or ""
            if not (dn.lower().endswith(suffix) or dn.lower() == base.lower()):
                continue
            out.append(
                LogWrite(
                    e.first("reqStart") or "",
                    e.first("reqEntryUUID") or "",
                    dn,
                    e.csn,
                    tuple(parse_req_mod(v) for v in e.all("reqMod")),
                )
            )
        if conn.result and conn.result.get("result") not in (0, None):
            raise StoreError(f"{uri}: reading {ACCESSLOG_BASE}: {conn.result.get('description')}")
        return out


# A subtree as one provider holds it: lower-cased DN -> attribute -> sorted values (user
# attributes only: providers may keep different operational ones, docs/platform.md fact 9).
Tree = dict[str, dict[str, tuple[str, ...]]]


def read_tree(uri: str, creds: Credentials, base: str, *, timeout: float = 5.0) -> Tree:
    """Every entry under ``base`` on the provider ``uri``; empty when ``base`` is not there."""
    with connected(uri, creds, timeout=timeout) as conn:
        return search_tree(conn, base)


def search_tree(conn: ldap3.Connection, base: str) -> Tree:
    """Every entry under ``base`` through the bound connection ``conn``, as a Tree."""
    entries = conn.extend.standard.paged_search(
        base,
        "(objectClass=*)",
        search_scope=ldap3.SUBTREE,
        dereference_aliases=ldap3.DEREF_NEVER,
        attributes=[ldap3.ALL_ATTRIBUTES],
        paged_size=500,
        generator=True,
    )
    return {
        str(e["dn"]).lower(): {
            str(a): tuple(sorted(bytes(v).decode("utf-8", "replace") for v in vs))
            for a, vs in e["raw_attributes"].items()
        }
        for e in entries
        if e.get("type") == "searchResEntry"
    }


def tree_differences(trees: Mapping[str, Tree]) -> list[tuple[str, str]]:
    """(DN, what differs) for every entry the providers do not hold alike, by value."""
    out: list[tuple[str, str]] = []
    names = sorted(trees)
    for dn in sorted({dn for t in trees.values() for dn in t}):
        views = {n: trees[n].get(dn) for n in names}
        missing = [n for n, v in views.items() if v is None]
        if missing:
            out.append((dn, f"missing on {', '.join(missing)}"))
            continue
        first = views[names[0]]
        assert first is not None
        for n in names[1:]:
            other = views[n]
            assert other is not None
            diff = sorted(a for a in {*first, *other} if first.get(a) != other.get(a))
            if diff:
                out.append(
                    (
                        dn,
                        f"{names[0]} and {n} differ in "
                        + ", ".join(
                            f"{a}={list(first.get(a, ()))}/{list(other.get(a, ()))}" for a in diff
                        ),
                    )
                )
                break
    return out

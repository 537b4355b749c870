"""Reads the command line needs beyond the store's typed ones, answered as ``Entry`` values.

The store (``store.py``) reads servers, applications, events and pulses as typed snapshots.
The commands also look at entries as they are, valid or not: whether an entry exists, the
entryCSN a write left, an application's attributes as an operator wrote them, which entries
name a server, a pulse with the provider's time of writing. Each is one search through the
store's write provider, so a command reads what it just wrote.
"""

from __future__ import annotations

from collections.abc import Sequence

import ldap3

from ndsclust.errors import EntryInvalid, NoSuchEntry
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.store import APP_ATTRS, Store
from ndsclust.model import Pulse


def find(
    st: Store,
    base: str,
    filt: str = "(objectClass=*)",
    *,
    attributes: Sequence[str] = APP_ATTRS,
    one_level: bool = False,
) -> list[Entry]:
    """The entries under ``base`` (it included) that match ``filt``; [] when base is absent."""
    scope = ldap3.LEVEL if one_level else ldap3.SUBTREE
    return [Entry(dn, a) for dn, a in st.search(base, filt, scope=scope, attributes=attributes)]


def read(
    st: Store, dn: str, filt: str = "(objectClass=*)", *, attributes: Sequence[str] = APP_ATTRS
) -> Entry | None:
    """The entry ``dn`` when it exists and matches ``filt``, else None."""
    found = st.search(dn, filt, scope=ldap3.BASE, attributes=attributes)
    return Entry(*found[0]) if found else None


def exists(st: Store, dn: str, filt: str = "(objectClass=*)") -> bool:
    return read(st, dn, filt, attributes=["1.1"]) is not None


def entry_csn(st: Store, dn: str) -> str:
    """The entryCSN of ``dn`` now: read right after a write, what the watch must show
    before its copy holds that write."""
    e = read(st, dn, attributes=["entryCSN"])
    if e is None or not e.csn:
        raise NoSuchEntry(f"{dn} vanished right after the write")
    return e.csn


def application(st: Store, tag: str) -> Entry:
    """An application's entry as it is, valid or not; NoSuchEntry when there is none."""
    e = read(st, st.app_dn(tag), "(objectClass=ndsclustApplication)")
    if e is None:
        raise NoSuchEntry(
            f"no application with tag {tag!r} under {st.apps_dn}; 'ndsclust status' lists them"
        )
    return e


def applications(st: Store, attributes: Sequence[str] = APP_ATTRS) -> list[Entry]:
    """Every application entry, valid or not, with the attributes asked for."""
    return find(st, st.apps_dn, "(objectClass=ndsclustApplication)", attributes=attributes)


def pulses_written(st: Store) -> list[tuple[Pulse, str]]:
    """Every valid pulse with its entryCSN (the accepting provider's time of the write)."""
    if not st.pulse_base:
        return []
    out = []
    for e in find(st, st.pulse_base, "(objectClass=ndsclustPulseEntry)", one_level=True):
        try:
            out.append((entries.parse_pulse(e), e.csn))
        except EntryInvalid:
            continue  # an invalid pulse entry: the server shows as without pulse
    return out

"""Fence records in the directory: ``cn=fence-<server>,ou=events,<base>`` (docs/design.md
section 2; the value format is ``ndsclust/fencing/record.py``).

``read`` decodes one record into a ``FenceRecord``, ``read_all`` every record by server
name, ``write`` compare-and-swaps a record's ``ndsclustFenceState`` from what was read to a
new state (with ``ndsclustFenceText`` in the same modify), adding the entry when there was
none: an add that finds it already made is a ``SwapConflict`` like any lost swap
(docs/style.md section 5). ``Store.fence_record``, ``fence_records`` and
``swap_fence_record`` call these with the store's session operations (search, add, swap);
nothing outside ``ndsclust.ldapstore`` names the attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ldap3

from ndsclust.errors import EntryExists, SwapConflict
from ndsclust.fencing.record import FenceState, Phase, parse
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.session import Session

OBJECT_CLASS = "ndsclustFence"
STATE_ATTR = "ndsclustFenceState"
TEXT_ATTR = "ndsclustFenceText"
TEXT_LIMIT = 2000  # characters of ndsclustFenceText kept
RDN_PREFIX = "fence-"


@dataclass(frozen=True, slots=True)
class FenceRecord:
    """A server's fence record as read. ``raw``: the exact stored state value a swap must
    expect (None: no value). ``state``: None when there is no record; a record without a
    readable state is ``owed`` (by ``?``), so nothing starts until it is fenced or cleared.
    ``text``: what the last attempt did."""

    raw: str | None
    state: FenceState | None
    text: str = ""


ABSENT = FenceRecord(None, None, "")


def fence_dn(base: str, server: str) -> str:
    return f"cn={RDN_PREFIX}{server},ou=events,{base}"


def decode(dn: str, attrs: Mapping[str, Sequence[Any]]) -> FenceRecord:
    """The record of one entry as a search returned it."""
    entry = Entry(dn, attrs)
    text = entry.first(TEXT_ATTR) or ""
    raw = entry.first(STATE_ATTR)
    if raw is None:
        return FenceRecord(None, FenceState(Phase.OWED, "?", 0.0), text)
    try:
        return FenceRecord(raw, parse(raw), text)
    except ValueError:
        return FenceRecord(raw, FenceState(Phase.OWED, "?", 0.0), text)


def read(ops: Session, base: str, server: str) -> FenceRecord:
    dn = fence_dn(base, server)
    rows = ops.search(
        dn, f"(objectClass={OBJECT_CLASS})", scope=ldap3.BASE, attributes=[STATE_ATTR, TEXT_ATTR]
    )
    return decode(*rows[0]) if rows else ABSENT


def read_all(ops: Session, base: str) -> dict[str, FenceRecord]:
    """Every record, by server name."""
    out = {}
    rows = ops.search(
        f"ou=events,{base}", f"(objectClass={OBJECT_CLASS})", scope=ldap3.LEVEL, attributes=["cn"]
    )
    for dn, _ in rows:
        name = dn.split(",", 1)[0].split("=", 1)[1]
        if name.startswith(RDN_PREFIX):
            out[name[len(RDN_PREFIX) :]] = read(ops, base, name[len(RDN_PREFIX) :])
    return out


def write(
    ops: Session,
    base: str,
    server: str,
    found: FenceRecord,
    new: FenceState,
    text: str | None = None,
) -> FenceRecord:
    """Compare-and-swap ``server``'s record from ``found`` to ``new`` (SwapConflict when
    another server changed it first); the record is made when there is none. ``text``
    replaces the record's text ("" removes it; None keeps it)."""
    dn = fence_dn(base, server)
    kept = text[:TEXT_LIMIT] if text else None
    if found.raw is None and found.state is None:
        attrs = {
            "objectClass": ["top", OBJECT_CLASS],
            "cn": [f"{RDN_PREFIX}{server}"],
            STATE_ATTR: [new.value()],
        }
        if kept:
            attrs[TEXT_ATTR] = [kept]
        try:
            ops.add(dn, attrs)
        except EntryExists:
            raise SwapConflict(dn, STATE_ATTR, None, new.value()) from None
    else:
        also = {TEXT_ATTR: [kept] if kept else None} if text is not None else None
        ops.swap(dn, STATE_ATTR, found.raw, new.value(), also=also)
    return FenceRecord(new.value(), new, text if text is not None else found.text)

"""RFC 4533 (LDAP Content Synchronization) messages, encoded and decoded with pyasn1.

ldap3 knows nothing of RFC 4533: it sends a control given as ``(oid, criticality, bytes)``
and hands the values of unknown controls and of intermediate responses over as raw bytes
(docs/platform.md fact 12). This module turns those bytes into frozen dataclasses and back; it does
no I/O, so every message slapd sends is a plain unit test.

The ASN.1 module of RFC 4533 section 2 uses IMPLICIT TAGS, like RFC 4511::

    syncUUID   ::= OCTET STRING (SIZE(16))
    syncCookie ::= OCTET STRING
    syncRequestValue ::= SEQUENCE { mode ENUMERATED { refreshOnly(1), refreshAndPersist(3) },
                                    cookie syncCookie OPTIONAL, reloadHint BOOLEAN DEFAULT FALSE }
    syncStateValue ::= SEQUENCE { state ENUMERATED { present(0), add(1), modify(2), delete(3) },
                                  entryUUID syncUUID, cookie syncCookie OPTIONAL }
    syncInfoValue ::= CHOICE {
        newcookie      [0] syncCookie,
        refreshDelete  [1] SEQUENCE { cookie syncCookie OPTIONAL, refreshDone BOOLEAN DEFAULT TRUE },
        refreshPresent [2] SEQUENCE { cookie syncCookie OPTIONAL, refreshDone BOOLEAN DEFAULT TRUE },
        syncIdSet      [3] SEQUENCE { cookie syncCookie OPTIONAL,
                                      refreshDeletes BOOLEAN DEFAULT FALSE,
                                      syncUUIDs SET OF syncUUID } }
    syncDoneValue ::= SEQUENCE { cookie syncCookie OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }

Cookies are opaque to RFC 4533; OpenLDAP's have a known form (``rid=NNN,sid=NNN,csn=...``),
which ``parse_openldap_cookie`` checks so that a damaged saved cookie is noticed before slapd
silently treats it as no cookie at all.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import Enum

from pyasn1.codec.ber import decoder
from pyasn1.codec.der import encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import constraint, namedtype, namedval, tag, univ

from ndsclust.errors import StoreError

SYNC_REQUEST_OID = "1.3.6.1.4.1.4203.1.9.1.1"
SYNC_STATE_OID = "1.3.6.1.4.1.4203.1.9.1.2"
SYNC_DONE_OID = "1.3.6.1.4.1.4203.1.9.1.3"
SYNC_INFO_OID = "1.3.6.1.4.1.4203.1.9.1.4"
# Result code of a searchResDone telling the consumer its cookie is of no use any more
# (RFC 4533 section 3.4): search again without a cookie.
E_SYNC_REFRESH_REQUIRED = 4096


class SyncProtocolError(StoreError):
    """A provider sent an RFC 4533 value that does not decode; names the message kind."""


class SyncMode(Enum):
    REFRESH_ONLY = 1
    REFRESH_AND_PERSIST = 3


class EntryState(Enum):
    PRESENT = 0
    ADD = 1
    MODIFY = 2
    DELETE = 3


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Sync Request control value, sent with the search."""

    mode: SyncMode = SyncMode.REFRESH_AND_PERSIST
    cookie: bytes | None = None
    reload_hint: bool = False


@dataclass(frozen=True, slots=True)
class SyncState:
    """Sync State control value, attached to every searchResEntry of a sync search."""

    state: EntryState
    uuid: str  # entryUUID, canonical lower-case form
    cookie: bytes | None = None


@dataclass(frozen=True, slots=True)
class NewCookie:
    cookie: bytes


@dataclass(frozen=True, slots=True)
class RefreshDelete:
    """End of a delete phase; ``refresh_done`` ends the refresh stage."""

    cookie: bytes | None = None
    refresh_done: bool = True


@dataclass(frozen=True, slots=True)
class RefreshPresent:
    """End of a present phase: entries not reported present since it began are gone."""

    cookie: bytes | None = None
    refresh_done: bool = True


@dataclass(frozen=True, slots=True)
class SyncIdSet:
    """Many entries at once by entryUUID: deleted ones (``refresh_deletes``) or present ones."""

    uuids: frozenset[str]  # a SET OF: the order on the wire means nothing
    cookie: bytes | None = None
    refresh_deletes: bool = False


SyncInfo = NewCookie | RefreshDelete | RefreshPresent | SyncIdSet


@dataclass(frozen=True, slots=True)
class SyncDone:
    """Sync Done control value, attached to the searchResDone that ends a sync search."""

    cookie: bytes | None = None
    refresh_deletes: bool = False


# ---- ASN.1 types ---------------------------------------------------------------------


class _Cookie(univ.OctetString):  # type: ignore[misc]
    """syncCookie ::= OCTET STRING"""


class _UUID(univ.OctetString):  # type: ignore[misc]
    subtypeSpec = constraint.ValueSizeConstraint(16, 16)


class _RequestValue(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType(
            "mode",
            univ.Enumerated(
                namedValues=namedval.NamedValues(("refreshOnly", 1), ("refreshAndPersist", 3))
            ),
        ),
        namedtype.OptionalNamedType("cookie", _Cookie()),
        namedtype.DefaultedNamedType("reloadHint", univ.Boolean(False)),
    )


class _StateValue(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType(
            "state",
            univ.Enumerated(
                namedValues=namedval.NamedValues(
                    ("present", 0), ("add", 1), ("modify", 2), ("delete", 3)
                )
            ),
        ),
        namedtype.NamedType("entryUUID", _UUID()),
        namedtype.OptionalNamedType("cookie", _Cookie()),
    )


class _DoneValue(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", _Cookie()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
    )


class _Refresh(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", _Cookie()),
        namedtype.DefaultedNamedType("refreshDone", univ.Boolean(True)),
    )


class _IdSet(univ.Sequence):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", _Cookie()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
        namedtype.NamedType("syncUUIDs", univ.SetOf(componentType=_UUID())),
    )


def _ctx(number: int, constructed: bool) -> tag.Tag:
    return tag.Tag(
        tag.tagClassContext,
        tag.tagFormatConstructed if constructed else tag.tagFormatSimple,
        number,
    )


class _InfoValue(univ.Choice):  # type: ignore[misc]
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("newcookie", _Cookie().subtype(implicitTag=_ctx(0, False))),
        namedtype.NamedType("refreshDelete", _Refresh().subtype(implicitTag=_ctx(1, True))),
        namedtype.NamedType("refreshPresent", _Refresh().subtype(implicitTag=_ctx(2, True))),
        namedtype.NamedType("syncIdSet", _IdSet().subtype(implicitTag=_ctx(3, True))),
    )


# ---- helpers -------------------------------------------------------------------------


def _decode(what: str, data: bytes, spec: univ.Asn1Item) -> univ.Asn1Item:
    try:
        value, rest = decoder.decode(data, asn1Spec=spec)
    except PyAsn1Error as e:
        raise SyncProtocolError(f"{what}: cannot decode {data[:64].hex()}: {e}") from None
    if rest:
        raise SyncProtocolError(f"{what}: {len(rest)} bytes left over after the value")
    return value


def _cookie(value: univ.Asn1Item) -> bytes | None:
    return bytes(value["cookie"]) if value["cookie"].isValue else None


def _uuid_text(raw: univ.Asn1Item) -> str:
    return str(uuid.UUID(bytes=bytes(raw)))


def _uuid_bytes(text: str) -> bytes:
    return uuid.UUID(text).bytes


def _encode(value: univ.Asn1Item) -> bytes:
    # DER satisfies RFC 4511 section 5.1: TRUE as 0xFF, default values left out.
    return bytes(encoder.encode(value))


# ---- Sync Request --------------------------------------------------------------------


def encode_sync_request(request: SyncRequest) -> bytes:
    v = _RequestValue()
    v["mode"] = request.mode.value
    if request.cookie is not None:
        v["cookie"] = request.cookie
    v["reloadHint"] = request.reload_hint
    return _encode(v)


def decode_sync_request(data: bytes) -> SyncRequest:
    v = _decode("Sync Request control", data, _RequestValue())
    return SyncRequest(SyncMode(int(v["mode"])), _cookie(v), bool(v["reloadHint"]))


def sync_request_control(
    cookie: bytes | None, mode: SyncMode = SyncMode.REFRESH_AND_PERSIST
) -> tuple[str, bool, bytes]:
    """The control as ldap3 takes it. Critical: a provider without syncprov must refuse
    the search instead of answering it as a plain one that silently ends
    (docs/platform.md fact 11)."""
    return SYNC_REQUEST_OID, True, encode_sync_request(SyncRequest(mode, cookie))


# ---- Sync State ----------------------------------------------------------------------


def encode_sync_state(state: SyncState) -> bytes:
    v = _StateValue()
    v["state"] = state.state.value
    v["entryUUID"] = _uuid_bytes(state.uuid)
    if state.cookie is not None:
        v["cookie"] = state.cookie
    return _encode(v)


def decode_sync_state(data: bytes) -> SyncState:
    v = _decode("Sync State control", data, _StateValue())
    return SyncState(EntryState(int(v["state"])), _uuid_text(v["entryUUID"]), _cookie(v))


# ---- Sync Info -----------------------------------------------------------------------


def encode_sync_info(info: SyncInfo) -> bytes:
    v = _InfoValue()
    if isinstance(info, NewCookie):
        v["newcookie"] = info.cookie
        return _encode(v)
    name = {
        RefreshDelete: "refreshDelete",
        RefreshPresent: "refreshPresent",
        SyncIdSet: "syncIdSet",
    }[type(info)]
    inner = v.componentType[name].asn1Object.clone()
    if info.cookie is not None:
        inner["cookie"] = info.cookie
    if isinstance(info, SyncIdSet):
        inner["refreshDeletes"] = info.refresh_deletes
        uuids = inner["syncUUIDs"]
        for i, u in enumerate(sorted(info.uuids)):
            uuids[i] = _uuid_bytes(u)
    else:
        inner["refreshDone"] = info.refresh_done
    v[name] = inner
    return _encode(v)


def decode_sync_info(data: bytes) -> SyncInfo:
    v = _decode("Sync Info message", data, _InfoValue())
    name = v.getName()
    c = v.getComponent()
    if name == "newcookie":
        return NewCookie(bytes(c))
    if name == "refreshDelete":
        return RefreshDelete(_cookie(c), bool(c["refreshDone"]))
    if name == "refreshPresent":
        return RefreshPresent(_cookie(c), bool(c["refreshDone"]))
    return SyncIdSet(
        frozenset(_uuid_text(u) for u in c["syncUUIDs"]), _cookie(c), bool(c["refreshDeletes"])
    )


# ---- Sync Done -----------------------------------------------------------------------


def encode_sync_done(done: SyncDone) -> bytes:
    v = _DoneValue()
    if done.cookie is not None:
        v["cookie"] = done.cookie
    v["refreshDeletes"] = done.refresh_deletes
    return _encode(v)


def decode_sync_done(data: bytes) -> SyncDone:
    v = _decode("Sync Done control", data, _DoneValue())
    return SyncDone(_cookie(v), bool(v["refreshDeletes"]))


# ---- OpenLDAP cookies ----------------------------------------------------------------

_CSN = r"\d{14}\.\d{6}Z#[0-9a-f]{6}#[0-9a-f]{3}#[0-9a-f]{6}"
_COOKIE_RE = re.compile(
    rf"rid=(?P<rid>\d{{3}})(?:,sid=(?P<sid>[0-9a-f]{{3}}))?"
    rf"(?:,csn=(?P<csns>{_CSN}(?:;{_CSN})*))?(?:,delcsn=(?P<delcsn>{_CSN}))?"
)


@dataclass(frozen=True, slots=True)
class OpenLDAPCookie:
    """The parts of a cookie slapd's syncprov hands out."""

    rid: int
    sid: int | None
    csns: tuple[str, ...]  # one contextCSN per provider that wrote to the database
    delcsn: str | None


def parse_openldap_cookie(cookie: bytes) -> OpenLDAPCookie:
    """Split a syncprov cookie; SyncProtocolError when it is not one. slapd answers a
    malformed cookie with a full refresh marked as a delete phase, as if the consumer had
    held nothing, so deletions made meanwhile would go unreported."""
    m = _COOKIE_RE.fullmatch(cookie.decode("ascii", errors="replace"))
    if m is None:
        raise SyncProtocolError(
            f"cookie {cookie[:80]!r} is not an OpenLDAP syncprov cookie "
            "(rid=NNN[,sid=NNN][,csn=...])"
        )
    return OpenLDAPCookie(
        int(m["rid"]),
        int(m["sid"], 16) if m["sid"] else None,
        tuple(m["csns"].split(";")) if m["csns"] else (),
        m["delcsn"],
    )


_SID_RE = re.compile(rb",sid=[0-9a-f]{3}(?=,|$)")


def resume_cookie(cookie: bytes) -> bytes:
    """The cookie to send when resuming: ``cookie`` without its ``sid=`` part.

    syncprov puts its own serverID in every cookie it hands out, and reads a sid in a
    cookie it receives as the serverID of a replicating *provider*: it then withholds
    every change that originated at (or was relayed by) that server, so as not to send a
    provider its own changes back. A watch that resumed on provider B with a cookie from
    provider A would never hear of a write made through A, which is where every ndsclust
    write goes (the write provider). We are a consumer, not a provider: no sid."""
    return _SID_RE.sub(b"", cookie)

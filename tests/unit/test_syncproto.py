"""RFC 4533 codec and the watch's consumer state, without a server.

The hex literals were captured from slapd 2.5.13 (Debian 12) serving a 3-provider
delta-syncrepl cluster: what ldap3 handed over as control values and intermediate response
values during refreshes, persist phases and resumptions.
"""

from __future__ import annotations

import logging

import pytest

from ndsclust.ldapstore.connection import Credentials, Providers
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.syncproto import (
    SYNC_REQUEST_OID,
    EntryState,
    NewCookie,
    OpenLDAPCookie,
    RefreshDelete,
    RefreshPresent,
    SyncDone,
    SyncIdSet,
    SyncInfo,
    SyncMode,
    SyncProtocolError,
    SyncRequest,
    SyncState,
    decode_sync_done,
    decode_sync_info,
    decode_sync_request,
    decode_sync_state,
    encode_sync_done,
    encode_sync_info,
    encode_sync_request,
    encode_sync_state,
    parse_openldap_cookie,
    resume_cookie,
    sync_request_control,
)
from ndsclust.ldapstore.watch import (
    Changed,
    ChangeKind,
    Deleted,
    Emitted,
    RefreshDone,
    SyncEntry,
    SyncSession,
    Watch,
)

# ---- bytes captured from slapd ---------------------------------------------------------

COOKIE_PERSIST_ADD = b"rid=000,sid=003,csn=20261125220542.580060Z#000000#001#000000"
COOKIE_MODIFY = b"rid=000,sid=003,csn=20261125220543.092598Z#000000#001#000000"
COOKIE_DELETE = b"rid=000,sid=003,csn=20261125220543.603838Z#000000#001#000000"
COOKIE_REFRESHED = b"rid=000,sid=003,csn=20261125220542.054612Z#000000#001#000000"
COOKIE_PRESENT = b"rid=000,sid=003,csn=20261125220544.129081Z#000000#001#000000"
COOKIE_DELCSN = (
    b"rid=000,sid=003,csn=20261125220543.603838Z#000000#001#000000,"
    b"delcsn=20261125220544.117273Z#000000#001#000000"
)
COOKIE_NEW = b"rid=000,sid=003,csn=20261125220613.634156Z#000000#001#000000"

# searchResEntry of a refresh: add, no cookie
STATE_REFRESH_ADD = "30150a010104102c1054f27d6810419711f70a34feb4e6"
# persist phase: add, modify, delete of one entry, each with a cookie
STATE_PERSIST_ADD = (
    "30530a0101041019e6830a7d6810418739e5f7207b7d0d043c7269643d3030302c7369643d3030332c"
    "63736e3d32303236313132353232303534322e3538303036305a233030303030302330303123303030303030"
)
STATE_PERSIST_MODIFY = (
    "30530a0102041019e6830a7d6810418739e5f7207b7d0d043c7269643d3030302c7369643d3030332c"
    "63736e3d32303236313132353232303534332e3039323539385a233030303030302330303123303030303030"
)
STATE_PERSIST_DELETE = (
    "30530a0103041019e6830a7d6810418739e5f7207b7d0d043c7269643d3030302c7369643d3030332c"
    "63736e3d32303236313132353232303534332e3630333833385a233030303030302330303123303030303030"
)
# the cn=accesslog root entry, which has no entryUUID: an empty syncUUID
STATE_EMPTY_UUID = "30050a01010400"

# end of an initial refresh without cookie
INFO_REFRESH_DELETE = (
    "a13e043c7269643d3030302c7369643d3030332c63736e3d32303236313132353232303534322e3035"
    "343631325a233030303030302330303123303030303030"
)
# resumption with a current cookie, nothing changed
INFO_REFRESH_DELETE_BARE = "a100"
# full refresh after a cookie slapd could not parse: an empty cookie
INFO_REFRESH_DELETE_EMPTY_COOKIE = "a1020400"
# end of a present phase (stale cookie)
INFO_REFRESH_PRESENT = (
    "a23e043c7269643d3030302c7369643d3030332c63736e3d32303236313132353232303534342e3132"
    "393038315a233030303030302330303123303030303030"
)
# resumption from the session log: one entry deleted meanwhile
INFO_ID_SET_DELETES = (
    "a38185046c7269643d3030302c7369643d3030332c63736e3d32303236313132353232303534332e36"
    "30333833385a2330303030303023303031233030303030302c64656c63736e3d3230323631313235"
    "3232303534342e3131373237335a2330303030303023303031233030303030300101ff311204101995"
    "53727d6810418733e5f7207b7d0d"
)
# resumption after a restart emptied the session log: the entries still present
INFO_ID_SET_PRESENT = (
    "a32631240410199512547d6810418731e5f7207b7d0d04101995f46c7d6810418735e5f7207b7d0d"
)
# persist phase: a change outside the watched subtree
INFO_NEW_COOKIE = (
    "803c7269643d3030302c7369643d3030332c63736e3d32303236313132353232303631332e3633343135"
    "365a233030303030302330303123303030303030"
)
# searchResDone of a refreshOnly search
DONE_REFRESH_ONLY = (
    "3041043c7269643d3030302c7369643d3030332c63736e3d32303236313132353232303534342e3132"
    "393038315a2330303030303023303031233030303030300101ff"
)

U_ENTRY = "19e6830a-7d68-1041-8739-e5f7207b7d0d"


def test_decode_captured_sync_state_values() -> None:
    assert decode_sync_state(bytes.fromhex(STATE_REFRESH_ADD)) == SyncState(
        EntryState.ADD, "2c1054f2-7d68-1041-9711-f70a34feb4e6", None
    )
    assert decode_sync_state(bytes.fromhex(STATE_PERSIST_ADD)) == SyncState(
        EntryState.ADD, U_ENTRY, COOKIE_PERSIST_ADD
    )
    assert decode_sync_state(bytes.fromhex(STATE_PERSIST_MODIFY)) == SyncState(
        EntryState.MODIFY, U_ENTRY, COOKIE_MODIFY
    )
    assert decode_sync_state(bytes.fromhex(STATE_PERSIST_DELETE)) == SyncState(
        EntryState.DELETE, U_ENTRY, COOKIE_DELETE
    )


def test_captured_entry_without_uuid_is_a_protocol_error() -> None:
    with pytest.raises(SyncProtocolError, match="Sync State control"):
        decode_sync_state(bytes.fromhex(STATE_EMPTY_UUID))


@pytest.mark.parametrize(
    ("hex_value", "expected"),
    [
        (INFO_REFRESH_DELETE, RefreshDelete(COOKIE_REFRESHED, True)),
        (INFO_REFRESH_DELETE_BARE, RefreshDelete(None, True)),
        (INFO_REFRESH_DELETE_EMPTY_COOKIE, RefreshDelete(b"", True)),
        (INFO_REFRESH_PRESENT, RefreshPresent(COOKIE_PRESENT, True)),
        (
            INFO_ID_SET_DELETES,
            SyncIdSet(frozenset({"19955372-7d68-1041-8733-e5f7207b7d0d"}), COOKIE_DELCSN, True),
        ),
        (
            INFO_ID_SET_PRESENT,
            SyncIdSet(
                frozenset(
                    {"19951254-7d68-1041-8731-e5f7207b7d0d", "1995f46c-7d68-1041-8735-e5f7207b7d0d"}
                ),
                None,
                False,
            ),
        ),
        (INFO_NEW_COOKIE, NewCookie(COOKIE_NEW)),
    ],
)
def test_decode_captured_sync_info_values(hex_value: str, expected: SyncInfo) -> None:
    assert decode_sync_info(bytes.fromhex(hex_value)) == expected


def test_decode_captured_sync_done_value() -> None:
    assert decode_sync_done(bytes.fromhex(DONE_REFRESH_ONLY)) == SyncDone(COOKIE_PRESENT, True)


def test_encoding_reproduces_slapd_bytes() -> None:
    # slapd's encoder and ours agree byte for byte (DER: defaults left out, TRUE as 0xFF).
    for hex_value in (STATE_REFRESH_ADD, STATE_PERSIST_DELETE):
        assert encode_sync_state(decode_sync_state(bytes.fromhex(hex_value))).hex() == hex_value
    for hex_value in (
        INFO_REFRESH_DELETE,
        INFO_REFRESH_DELETE_BARE,
        INFO_REFRESH_PRESENT,
        INFO_ID_SET_DELETES,
        INFO_ID_SET_PRESENT,
        INFO_NEW_COOKIE,
    ):
        assert encode_sync_info(decode_sync_info(bytes.fromhex(hex_value))).hex() == hex_value
    assert (
        encode_sync_done(decode_sync_done(bytes.fromhex(DONE_REFRESH_ONLY))).hex()
        == DONE_REFRESH_ONLY
    )


# ---- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        SyncRequest(),
        SyncRequest(SyncMode.REFRESH_ONLY),
        SyncRequest(cookie=COOKIE_DELCSN),
        SyncRequest(SyncMode.REFRESH_ONLY, b"", True),
    ],
)
def test_sync_request_round_trip(request_: SyncRequest) -> None:
    assert decode_sync_request(encode_sync_request(request_)) == request_


def test_sync_request_bytes_follow_rfc_4511_ber_rules() -> None:
    # SEQUENCE { ENUMERATED 3 }: reloadHint FALSE is a default, so it is left out.
    assert encode_sync_request(SyncRequest()).hex() == "30030a0103"
    assert (
        encode_sync_request(SyncRequest(cookie=b"c", reload_hint=True)).hex()
        == "30090a01030401630101ff"
    )
    oid, critical, value = sync_request_control(b"c")
    assert (oid, critical) == (SYNC_REQUEST_OID, True)
    assert decode_sync_request(value) == SyncRequest(SyncMode.REFRESH_AND_PERSIST, b"c")


@pytest.mark.parametrize(
    "state",
    [
        SyncState(EntryState.PRESENT, U_ENTRY),
        SyncState(EntryState.ADD, U_ENTRY, b""),
        SyncState(EntryState.MODIFY, U_ENTRY, COOKIE_MODIFY),
        SyncState(EntryState.DELETE, "00000000-0000-0000-0000-000000000000", COOKIE_DELETE),
    ],
)
def test_sync_state_round_trip(state: SyncState) -> None:
    assert decode_sync_state(encode_sync_state(state)) == state


@pytest.mark.parametrize(
    "info",
    [
        NewCookie(b""),
        NewCookie(COOKIE_NEW),
        RefreshDelete(),
        RefreshDelete(COOKIE_REFRESHED, False),
        RefreshPresent(None, False),
        RefreshPresent(COOKIE_PRESENT, True),
        SyncIdSet(frozenset()),
        SyncIdSet(
            frozenset({U_ENTRY, "2c1054f2-7d68-1041-9711-f70a34feb4e6"}), COOKIE_DELCSN, True
        ),
    ],
)
def test_sync_info_round_trip(info: SyncInfo) -> None:
    assert decode_sync_info(encode_sync_info(info)) == info


@pytest.mark.parametrize("done", [SyncDone(), SyncDone(COOKIE_PRESENT), SyncDone(None, True)])
def test_sync_done_round_trip(done: SyncDone) -> None:
    assert decode_sync_done(encode_sync_done(done)) == done


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x30",
        b"\x04\x03abc",
        bytes.fromhex("a4020400"),
        bytes.fromhex(INFO_NEW_COOKIE) + b"\x00",
    ],
)
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    for decode in (decode_sync_state, decode_sync_info, decode_sync_done, decode_sync_request):
        with pytest.raises(SyncProtocolError):
            decode(garbage)


def test_openldap_cookies() -> None:
    assert parse_openldap_cookie(COOKIE_DELCSN) == OpenLDAPCookie(
        0,
        3,
        ("20261125220543.603838Z#000000#001#000000",),
        "20261125220544.117273Z#000000#001#000000",
    )
    assert (
        parse_openldap_cookie(
            b"rid=123,csn=20000101000000.000000Z#000000#001#000000;"
            b"20000101000000.000000Z#000000#00a#000000"
        )
        .csns[1]
        .endswith("#00a#000000")
    )
    assert parse_openldap_cookie(b"rid=000,sid=001") == OpenLDAPCookie(0, 1, (), None)
    for bad in (b"not a cookie", b"", b"rid=0", b"rid=000,csn=yesterday", b"\xff\xfe"):
        with pytest.raises(SyncProtocolError, match="not an OpenLDAP syncprov cookie"):
            parse_openldap_cookie(bad)


# ---- SyncSession: what the watch makes of the messages ---------------------------------

U1, U2, U3 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
C0, C1, C2 = (f"rid=000,csn=2026010100000{i}.000000Z#000000#001#000000".encode() for i in range(3))


def entry(
    session: SyncSession,
    state: EntryState,
    uuid: str,
    dn: str,
    cookie: bytes | None = None,
    **attrs: list[bytes],
) -> list[Emitted]:
    return session.on_entry(dn, attrs, SyncState(state, uuid, cookie))


def test_full_refresh_reports_known_entries_it_did_not_mention_even_as_delete_phase() -> None:
    # slapd ends a refresh without a cookie with refreshDelete: still the whole content.
    s = SyncSession(known={U3: "ou=gone,o=x"})
    assert s.begin() is None
    out = entry(s, EntryState.ADD, U1, "ou=a,o=x", ou=[b"a"])
    assert out == [
        (
            Changed(SyncEntry("ou=a,o=x", U1, Entry("ou=a,o=x", {"ou": ("a",)})), ChangeKind.ADD),
            None,
        )
    ]
    out = s.on_info(RefreshDelete(C1))
    # The new cookie goes with the last event: stopping before it means replaying.
    assert out == [(Deleted(U3, "ou=gone,o=x"), None), (RefreshDone(), C1)]
    assert s.cookie == C1 and s.known == {U1: "ou=a,o=x"}


def test_resumed_delete_phase_names_deleted_entries_and_keeps_the_unmentioned() -> None:
    s = SyncSession(C0, known={U1: "ou=a,o=x", U2: "ou=b,o=x", U3: "ou=c,o=x"})
    assert s.begin() == C0
    assert s.on_info(SyncIdSet(frozenset({U2}), C1, refresh_deletes=True)) == [
        (Deleted(U2, "ou=b,o=x"), C1)
    ]
    out = entry(s, EntryState.ADD, U3, "ou=c,o=x", description=[b"new"])
    assert out[0][0] == Changed(
        SyncEntry("ou=c,o=x", U3, Entry("ou=c,o=x", {"description": ("new",)})), ChangeKind.MODIFY
    )  # known before: a modification
    assert s.on_info(RefreshDelete(C2)) == [(RefreshDone(), C2)]
    assert set(s.known) == {U1, U3}


def test_present_phase_reports_what_was_not_present() -> None:
    s = SyncSession(C0, known={U1: "ou=a,o=x", U2: "ou=b,o=x", U3: "ou=c,o=x"})
    s.begin()
    assert s.on_info(SyncIdSet(frozenset({U1}))) == []
    assert entry(s, EntryState.PRESENT, U3, "ou=c,o=x") == []
    out = s.on_info(RefreshPresent(C1))
    assert out == [(Deleted(U2, "ou=b,o=x"), C0), (RefreshDone(), C1)]


def test_present_phase_then_delete_phase_reconciles_once() -> None:
    s = SyncSession(C0, known={U1: "ou=a,o=x", U2: "ou=b,o=x"})
    s.begin()
    entry(s, EntryState.PRESENT, U1, "ou=a,o=x")
    assert s.on_info(RefreshPresent(None, refresh_done=False)) == [(Deleted(U2, "ou=b,o=x"), C0)]
    entry(s, EntryState.ADD, U3, "ou=c,o=x")
    assert s.on_info(RefreshDelete(C1)) == [(RefreshDone(), C1)]
    assert set(s.known) == {U1, U3}


def test_persist_phase_changes_carry_their_cookies() -> None:
    s = SyncSession()
    s.begin()
    s.on_info(RefreshDelete(C0))
    assert entry(s, EntryState.ADD, U1, "ou=a,o=x", C1) == [
        (Changed(SyncEntry("ou=a,o=x", U1, Entry("ou=a,o=x", {})), ChangeKind.ADD), C1)
    ]
    ((modified, cookie),) = entry(
        s, EntryState.MODIFY, U1, "ou=renamed,o=x", C2, description=[b"caf\xc3\xa9", b"\xff"]
    )
    assert cookie == C2 and isinstance(modified, Changed)
    assert modified.kind is ChangeKind.MODIFY
    assert modified.entry.attributes == {"description": ("café", "\ufffd")}
    # A delete names the entry's last DN, from the message or from what we knew.
    assert entry(s, EntryState.DELETE, U1, "", C0) == [(Deleted(U1, "ou=renamed,o=x"), C0)]
    assert entry(s, EntryState.DELETE, U2, "ou=never-seen,o=x") == [
        (Deleted(U2, "ou=never-seen,o=x"), C0)
    ]
    assert s.on_info(SyncIdSet(frozenset({U3}), None, True)) == [(Deleted(U3, None), C0)]


def test_cookie_only_messages_yield_a_marker_and_empty_cookies_are_ignored() -> None:
    s = SyncSession(C0)
    s.begin()
    assert s.on_info(RefreshDelete(b"")) == [(RefreshDone(), C0)]
    assert s.on_info(NewCookie(C1)) == [(None, C1)]
    assert s.on_info(NewCookie(C1)) == []


def test_dropped_cookie_means_a_full_refresh() -> None:
    s = SyncSession(C0, known={U1: "ou=a,o=x"})
    s.drop_cookie()
    assert s.begin() is None
    assert s.on_info(RefreshDelete(C1)) == [(Deleted(U1, "ou=a,o=x"), None), (RefreshDone(), C1)]


def test_a_resumed_search_sends_the_cookie_without_the_providers_sid() -> None:
    # A sid in a consumer's cookie makes syncprov withhold every change that server
    # originated: a watch resumed elsewhere would never hear of the write provider's writes.
    assert resume_cookie(COOKIE_DELCSN) == COOKIE_DELCSN.replace(b",sid=003", b"")
    assert resume_cookie(b"rid=000,sid=001") == b"rid=000"
    assert resume_cookie(C1) == C1.replace(b",sid=003", b"")
    parse_openldap_cookie(resume_cookie(COOKIE_DELCSN))
    s = SyncSession(COOKIE_MODIFY)
    assert s.begin() == COOKIE_MODIFY.replace(b",sid=003", b"")
    assert s.cookie == COOKIE_MODIFY


def test_refresh_only_done_reconciles_a_present_phase() -> None:
    s = SyncSession(C0, known={U1: "ou=a,o=x", U2: "ou=b,o=x"})
    s.begin()
    entry(s, EntryState.PRESENT, U1, "ou=a,o=x")
    assert s.on_done(SyncDone(C1, refresh_deletes=False)) == [
        (Deleted(U2, "ou=b,o=x"), C0),
        (RefreshDone(), C1),
    ]
    s.begin()
    assert s.on_done(SyncDone(C2, refresh_deletes=True)) == [(RefreshDone(), C2)]
    assert s.on_done(None) == []


# ---- Watch construction (no connection is made) ----------------------------------------


def _providers() -> Providers:
    return Providers(["ldap://127.0.0.1:1"], Credentials())


def test_watch_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="keepalive"):
        Watch(_providers(), "o=x", keepalive=0)
    with pytest.raises(ValueError, match="prefer=1"):
        Watch(_providers(), "o=x", prefer=1)


def test_watch_drops_an_invalid_cookie(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ndsclust.ldapstore.watch"):
        w = Watch(_providers(), "o=x", cookie=b"garbage", name="apps")
    assert w.cookie is None
    assert "event=watch_cookie_invalid watch=apps" in caplog.text and "full_refresh" in caplog.text
    assert Watch(_providers(), "o=x", cookie=C0).cookie == C0
    assert w.get(0) is None and w.stats.entries == 0
    w.stop()  # never started: nothing to do

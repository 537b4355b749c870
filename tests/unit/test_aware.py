"""The cluster-aware API's logic (claims 17-24, 29-35, 45-50): wire format, registration
checks and plans, compare-and-swap retries, error mapping, the session's dispatch."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from ndsclust import aware
from ndsclust.aware import cas_update
from ndsclust.control_protocol import (
    MAX_LINE,
    AwareError,
    MarkerConflict,
    NotGranted,
    NotSupervised,
    ProtocolError,
    Registration,
    RegistrationRefused,
    StopRequested,
    check_marker,
    decode,
    encode,
    error_from_reply,
    hello_of,
    marker_swap_of,
    registration,
)
from ndsclust.framing import LineFramer
from ndsclust.model import App, AppState, AppType, Request, RequestKind, ServerName, StateValue, Tag
from ndsclust.sentinel.control_registration import Create, Update, plan_registration

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
SERVERS = {A, B, C}
CMD = ("/usr/bin/python3", "-m", "counter", "--name", "two words")


def reg(**kw: object) -> Registration:
    args: dict[str, object] = {
        "tag": "count",
        "command": CMD,
        "primary": A,
        "backups": [B],
        "resources": [],
    }
    args.update(kw)
    return registration(**args)  # type: ignore[arg-type]


# -- wire format


def test_encode_decode_round_trip_is_one_line_of_compact_json() -> None:
    line = encode({"id": 1, "op": "set_marker", "value": "é\nx"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line[:-1]) == {"id": 1, "op": "set_marker", "value": "é\nx"}


@pytest.mark.parametrize(
    "line, words",
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"garbage", "not JSON"),
        (b"[1, 2]", "JSON object, not list"),
        (b'"hello"', "JSON object, not str"),
        (b"[" * 100000, "nests too deeply"),
    ],
)
def test_decode_names_what_is_wrong(line: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        decode(line)


def test_encode_refuses_a_line_over_the_limit() -> None:
    with pytest.raises(ProtocolError, match="line limit"):
        encode({"value": "x" * MAX_LINE})


@pytest.mark.parametrize(
    "value, words",
    [
        ("", "cannot be empty"),
        ("x" * 65537, "at most 65536"),
        (7, "string, not int"),
        ("a\0b", "NUL"),
        ("\ud800", "lone surrogates"),
    ],
)
def test_check_marker_refuses_what_the_directory_cannot_store(value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_marker(value)


# -- registration (FIG. 6 step 604)


@pytest.mark.parametrize(
    "msg, words",
    [
        ({"protocol": 2}, "protocol 2 is not spoken here"),
        ({"protocol": 1, "tag": 3}, "'tag' must be a string or null"),
        ({"protocol": 1, "token": 3}, "'token' must be a string or null"),
        ({"protocol": 1, "tag": "a b"}, "tag: "),
    ],
)
def test_a_hello_names_what_is_wrong(msg: dict[str, object], words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        hello_of(msg)


def test_a_hello_gives_its_tag_and_token() -> None:
    assert hello_of({"protocol": 1, "tag": "web", "token": "k"}) == ("web", "k")
    assert hello_of({"protocol": 1}) == (None, None)


def test_a_marker_swap_is_checked_as_the_directory_would() -> None:
    assert marker_swap_of({"expected": None, "value": "7"}) == (None, "7")
    with pytest.raises(ProtocolError, match="'expected' must be a string or null"):
        marker_swap_of({"expected": 7, "value": "8"})
    with pytest.raises(ProtocolError, match="value: a marker cannot be empty"):
        marker_swap_of({"expected": "7", "value": ""})


def test_registration_carries_the_fig2_attributes_and_round_trips_the_wire() -> None:
    r = reg(resources=["san1"])
    assert r.tag == "count" and r.command == CMD and r.primary == A and r.backups == (B,)
    assert Registration.from_wire(json.loads(json.dumps(r.to_wire()))) == r
    app = r.app()
    assert app.type is AppType.AWARE and app.host == A and app.state.state is AppState.LOADING


@pytest.mark.parametrize(
    "kw, attribute, words",
    [
        ({"tag": "bad tag"}, "ndsclustTag", "is not a tag"),
        ({"command": []}, "ndsclustCommand", "non-empty list"),
        ({"command": ["python3", "x"]}, "ndsclustCommand", "not an absolute path"),
        ({"command": ["/bin/x", "a\x01b"]}, "ndsclustCommand", "control characters"),
        ({"command": ["/bin/x", ""]}, "ndsclustCommand", "non-empty arguments"),
        ({"primary": "Alpha"}, "ndsclustPrimaryServer", "lower case"),
        ({"backups": [A]}, "ndsclustBackupServer", "names the primary"),
        ({"backups": [B, B]}, "ndsclustBackupServer", "twice"),
        ({"backups": ["be ta"]}, "ndsclustBackupServer", "not a server name"),
        ({"resources": ["san 1"]}, "ndsclustResource", "not a resource name"),
    ],
)
def test_malformed_attribute_is_refused_naming_it(
    kw: dict[str, object], attribute: str, words: str
) -> None:
    with pytest.raises(RegistrationRefused, match=words) as info:
        reg(**kw)
    assert info.value.attribute == attribute
    assert "nothing was written" in str(info.value)


@pytest.mark.parametrize(
    "raw, attribute",
    [
        ("not an object", "app"),
        ({"command": ["/bin/x"], "primary": "alpha"}, "ndsclustTag"),
        ({"tag": "t", "command": "/bin/x", "primary": "alpha"}, "ndsclustCommand"),
        ({"tag": "t", "command": ["/bin/x"], "primary": 3}, "ndsclustPrimaryServer"),
        (
            {"tag": "t", "command": ["/bin/x"], "primary": "alpha", "backups": [1]},
            "ndsclustBackupServer",
        ),
    ],
)
def test_from_wire_refuses_wrong_types(raw: object, attribute: str) -> None:
    with pytest.raises(RegistrationRefused) as info:
        Registration.from_wire(raw)
    assert info.value.attribute == attribute


def existing(**kw: object) -> App:
    base: dict[str, object] = {
        "tag": Tag("count"),
        "type": AppType.AWARE,
        "command": CMD,
        "primary": A,
        "backups": (B,),
        "host": B,
        "marker": "41",
        "state": StateValue(AppState.RUNNING),
        "request": Request(RequestKind.FAILBACK),
    }
    base.update(kw)
    return App(**base)  # type: ignore[arg-type]


def test_fig6_first_registration_creates_the_entry_hosted_by_its_primary() -> None:
    plan = plan_registration(reg(), None, SERVERS)
    assert isinstance(plan, Create) and plan.app.host == A and plan.app.type is AppType.AWARE


def test_registering_again_unchanged_writes_nothing() -> None:
    assert plan_registration(reg(), existing(), SERVERS) == Update({})


def test_update_writes_only_what_differs_and_never_host_state_marker_or_request() -> None:
    plan = plan_registration(reg(backups=[C, B], resources=["san1"]), existing(), SERVERS)
    assert plan == Update(
        {"ndsclustBackupServer": ["{0}gamma", "{1}beta"], "ndsclustResource": ["san1"]}
    )
    removed = plan_registration(reg(backups=[]), existing(resources=frozenset({"san1"})), SERVERS)
    assert removed == Update({"ndsclustBackupServer": None, "ndsclustResource": None})


def test_tag_owned_by_a_capable_application_is_refused() -> None:
    with pytest.raises(RegistrationRefused, match="cluster-capable application") as info:
        plan_registration(reg(), existing(type=AppType.CAPABLE), SERVERS)
    assert info.value.attribute == "ndsclustType"


def test_unknown_server_is_refused() -> None:
    with pytest.raises(RegistrationRefused, match="unknown server 'zeta'") as info:
        plan_registration(reg(backups=["zeta"]), None, SERVERS)
    assert info.value.attribute == "ndsclustBackupServer"


# -- compare-and-swap (claims 34-35)


def test_cas_update_without_conflict_swaps_once() -> None:
    swaps: list[tuple[str | None, str]] = []
    assert (
        cas_update("4", lambda old, new: swaps.append((old, new)), lambda m: str(int(m or 0) + 1))
        == "5"
    )
    assert swaps == [("4", "5")]


def test_cas_update_recomputes_from_the_value_found_never_retries_the_same_write() -> None:
    seen: list[tuple[str | None, str]] = []
    directory = ["7"]

    def swap(old: str | None, new: str) -> None:
        seen.append((old, new))
        if old != directory[0]:
            raise MarkerConflict(old, directory[0])
        directory[0] = new

    assert cas_update(None, swap, lambda m: str(int(m or 0) + 1)) == "8"
    assert seen == [(None, "1"), ("7", "8")]


def test_cas_update_gives_up_after_attempts_with_the_last_conflict() -> None:
    calls = []

    def swap(old: str | None, new: str) -> None:
        calls.append(old)
        raise MarkerConflict(old, str(len(calls)))

    with pytest.raises(MarkerConflict) as info:
        cas_update("0", swap, lambda m: "x", attempts=3)
    assert calls == ["0", "1", "2"] and info.value.current == "3"
    with pytest.raises(ValueError):
        cas_update("0", swap, lambda m: "x", attempts=0)


# -- errors


@pytest.mark.parametrize(
    "reply, cls",
    [
        ({"error": "not-supervised", "message": "m"}, NotSupervised),
        ({"error": "not-granted", "message": "m"}, NotGranted),
        ({"error": "stopping", "message": "failback to alpha"}, StopRequested),
        ({"error": "bad-request", "message": "m"}, AwareError),
        ({"error": "something new", "message": "m"}, AwareError),
        ({"nonsense": True}, AwareError),
    ],
)
def test_error_replies_become_exceptions(reply: dict[str, object], cls: type[Exception]) -> None:
    assert type(error_from_reply(reply)) is cls


def test_conflict_and_refusal_replies_keep_their_details() -> None:
    conflict = error_from_reply(
        {"error": "conflict", "message": "m", "expected": "1", "current": "2"}
    )
    assert isinstance(conflict, MarkerConflict) and (conflict.expected, conflict.current) == (
        "1",
        "2",
    )
    refused = error_from_reply(
        {"error": "refused", "message": "is odd", "tag": "t", "attribute": "ndsclustType"}
    )
    assert isinstance(refused, RegistrationRefused) and refused.attribute == "ndsclustType"


# -- the session's dispatch, against a socket pair the test speaks for the sentinel


@pytest.fixture
def pair() -> Iterator[tuple[aware.Session, socket.socket]]:
    mine, theirs = socket.socketpair()
    session = aware.Session(mine, tag=Tag("count"), token="k", handle_sigterm=False)
    try:
        yield session, theirs
    finally:
        session.close()
        theirs.close()


def answer(
    peer: socket.socket, replies: list[dict[str, object]], seen: list[dict[str, object]]
) -> threading.Thread:
    """Play the sentinel: answer each request in turn with the next reply, after an answer
    to an id nobody asked for (which the session must ignore)."""

    def run() -> None:
        buf = LineFramer(MAX_LINE)
        for reply in replies:
            lines: list[bytes] = []
            while not lines:
                lines = buf.feed(peer.recv(65536))
            request = decode(lines[0])
            seen.append(request)
            peer.sendall(encode({"id": 999, "ok": True}) + encode({"id": request["id"], **reply}))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_stop_event_ends_a_pending_wait_and_calls_back_once(
    pair: tuple[aware.Session, socket.socket],
) -> None:
    session, peer = pair
    reasons: list[str] = []
    session.on_stop(reasons.append)
    peer.sendall(encode({"event": "stop", "reason": "failback to alpha"}))
    with pytest.raises(StopRequested, match="failback to alpha"):
        session.wait_until_host()
    assert session.should_stop() and reasons == ["failback to alpha"]
    late: list[str] = []
    session.on_stop(late.append)  # registered after the fact: called at once
    assert late == ["failback to alpha"]


def test_answers_are_matched_by_id_and_markers_swap_from_the_last_value(
    pair: tuple[aware.Session, socket.socket],
) -> None:
    session, peer = pair
    with pytest.raises(AwareError, match="read the marker"):
        session.marker = "1"  # no expected value known yet: nothing sent
    seen: list[dict[str, object]] = []
    sentinel = answer(
        peer,
        [
            {"ok": True, "marker": "5"},
            {"ok": True},
            {"ok": False, "error": "conflict", "message": "m", "expected": "6", "current": "9"},
        ],
        seen,
    )
    assert session.marker == "5"
    session.marker = "6"
    with pytest.raises(MarkerConflict) as info:
        session.marker = "7"
    sentinel.join(timeout=10)
    assert info.value.current == "9"
    assert seen == [
        {"id": 1, "op": "get_marker"},
        {"id": 2, "op": "set_marker", "expected": "5", "value": "6"},
        {"id": 3, "op": "set_marker", "expected": "6", "value": "7"},
    ]


def test_a_copy_started_by_hand_cannot_wait() -> None:
    mine, theirs = socket.socketpair()
    with aware.Session(mine, tag=Tag("count"), token=None, handle_sigterm=False) as session:
        with pytest.raises(NotSupervised):
            session.wait_until_host()
        assert not session.supervised
    theirs.close()


def test_closed_socket_is_a_stop_request_and_fails_calls(
    pair: tuple[aware.Session, socket.socket],
) -> None:
    session, peer = pair
    peer.close()
    assert session.should_stop(timeout=10)
    assert session.stop_reason == aware.LOST
    with pytest.raises(aware.ControlUnavailable):
        _ = session.marker


def test_a_line_over_the_limit_from_the_sentinel_ends_the_session(
    pair: tuple[aware.Session, socket.socket],
) -> None:
    session, peer = pair
    sender = threading.Thread(target=peer.sendall, args=(b"x" * (MAX_LINE + 1),), daemon=True)
    sender.start()
    assert session.should_stop(timeout=10)
    assert session.stop_reason == f"the sentinel sent a line longer than {MAX_LINE} bytes"
    sender.join(timeout=10)

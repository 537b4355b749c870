"""Bad input containment (docs/design.md invariant 4) for the control socket: lines of random
bytes, JSON that is no object, objects with random ops, ids and fields, registrations with
random attributes, hellos with random tokens. Every line gets exactly one answer, a typed
error or a success, never the answer of an unexpected exception, and the server goes on
serving. The directory is out of reach (a Store whose only provider is a missing ldapi
socket), so requests that get past validation meet a typed "unavailable".

``fuzz_targets()`` hands the same check to ``tools/fuzz.py``.
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ndsclust.control_protocol import ERROR_CODES
from ndsclust.ldapstore.connection import Credentials, Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import ServerName
from ndsclust.sentinel.control import ControlServer

Target = tuple[st.SearchStrategy[Any], Callable[[Any], None]]
CI = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ANSWER_TIMEOUT = 5.0
OPS = ("hello", "ping", "register", "wait", "get_marker", "set_marker")

json_value: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
names = st.sampled_from(["alpha", "beta", "Alpha", "", "-x", "a" * 64]) | st.text(max_size=12)
strings = st.lists(names | st.sampled_from(["/bin/true", "relative", "/x\x00y"]), max_size=3)
good_app = st.fixed_dictionaries(
    {"tag": st.just("count"), "command": st.just(["/bin/true"]), "primary": st.just("alpha")},
    optional={"backups": st.just(["beta"]), "resources": st.just(["san1"])},
)
app = good_app | st.fixed_dictionaries(
    {},
    optional={
        "tag": st.sampled_from(["count", "web", "bad tag", ""]) | json_value,
        "command": strings | json_value,
        "primary": names | json_value,
        "backups": strings | json_value,
        "resources": strings | json_value,
    },
)
message = st.fixed_dictionaries(
    {
        "id": st.integers(-(2**70), 2**70) | json_value,
        "op": st.sampled_from([*OPS, "HELLO", "nope", ""]) | json_value,
    },
    optional={
        "protocol": st.just(1) | json_value,
        "tag": st.sampled_from(["count", "bad tag"]) | json_value,
        "token": st.text(max_size=40) | json_value,
        "app": app | json_value,
        "expected": st.text(max_size=10) | json_value,
        "value": st.text(max_size=10) | st.just("x" * 70_000) | json_value,
    },
)
# Well-formed requests with random contents: they get past the framing to the handlers.
request = st.fixed_dictionaries(
    {"id": st.integers(0, 1000), "op": st.sampled_from(OPS)},
    optional={
        "protocol": st.just(1),
        "tag": st.sampled_from(["count", "web"]),
        "app": app,
        "expected": st.none() | st.text(max_size=10),
        "value": st.text(max_size=10),
    },
)
line = st.one_of(
    request.map(lambda m: json.dumps(m).encode()),
    message.map(lambda m: json.dumps(m).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300).filter(lambda b: b"\n" not in b),
    st.sampled_from([b"", b"{", b"\xff\xfe", b"[" * 5000, b'{"id": 1, "op": "ping"']),
)
hello = st.fixed_dictionaries(
    {"id": st.integers(0, 10), "op": st.just("hello"), "protocol": st.just(1)},
    optional={"tag": st.sampled_from(["count", None]), "token": st.text(max_size=8)},
).map(lambda m: json.dumps(m).encode())
session = st.tuples(st.none() | hello | hello, st.lists(line, min_size=1, max_size=5)).map(
    lambda t: ([t[0]] if t[0] is not None else []) + t[1]
)


def unreachable_store() -> Store:
    providers = Providers(["ldapi://%2Fnonexistent%2Fndsclust-fuzz"], Credentials(), timeout=0.5)
    return Store(providers, "dc=x", op_deadline=0.0)


@contextmanager
def control_server() -> Iterator[ControlServer]:
    quiet = logging.getLogger("ndsclust.fuzz.control")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    with tempfile.TemporaryDirectory(prefix="ndfz") as d:
        srv = ControlServer(
            str(Path(d) / "c.sock"), ServerName("alpha"), unreachable_store(), logger=quiet
        )
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def answers(sock: socket.socket, n: int) -> list[dict[str, Any]]:
    sock.settimeout(ANSWER_TIMEOUT)
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection with {n} answers due, got: {buf!r}"
        buf += chunk
    got = [json.loads(x) for x in buf.split(b"\n")[:-1]]
    assert len(got) == n, (n, got)
    return got


def check_session(srv: ControlServer, lines: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(srv.path)
        sock.sendall(b"".join(x + b"\n" for x in lines))
        for a in answers(sock, len(lines)):
            assert isinstance(a, dict) and "event" not in a, a
            event(f"answer: {a.get('error', 'ok')}")
            assert a.get("ok") in (True, False), a
            if a["ok"] is False:
                assert a["error"] in ERROR_CODES, a
                assert isinstance(a["message"], str) and a["message"], a
                assert not a["message"].startswith("the sentinel failed"), a
    # Still serving: a fresh client is greeted.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(srv.path)
        sock.sendall(b'{"id":1,"op":"hello","protocol":1}\n{"id":2,"op":"ping"}\n')
        assert [a["ok"] for a in answers(sock, 2)] == [True, True]


@contextmanager
def fuzz_targets() -> Iterator[Mapping[str, Target]]:
    with control_server() as srv:
        yield {"control socket messages": (session, lambda s: check_session(srv, s))}


# -- the CI run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv() -> Iterator[ControlServer]:
    with control_server() as server:
        yield server


@CI
@given(lines=session)
def test_every_line_gets_one_typed_answer_and_the_server_carries_on(
    srv: ControlServer, lines: list[bytes]
) -> None:
    check_session(srv, lines)

"""The control socket against a real 3-provider directory: registration, the paused copy's
wait and grant, marker compare-and-swap, unload requests, bad input (claims 17-24, 29-35)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ndsclust import aware
from ndsclust.aware import (
    MarkerConflict,
    NotGranted,
    NotSupervised,
    RegistrationRefused,
    StopRequested,
    WaitTimeout,
)
from ndsclust.control_protocol import MAX_LINE, decode, encode
from ndsclust.errors import ConfigError, NoSuchEntry
from ndsclust.framing import LineFramer
from ndsclust.lab.directory import DirectoryCluster, wait_until
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import App, AppState, AppType, Server, ServerName, StateValue, Tag
from ndsclust.sentinel.control import ControlServer
from ndsclust.sentinel.control_socket import MAX_HELD
from ndsclust.sentinel.procs import ProcState
from ndsclust.sentinel.supervisor import Supervisor

A, B = ServerName("alpha"), ServerName("beta")
T = Tag("count")
CMD = ["/usr/bin/python3", "-m", "counter"]

Connect = Callable[..., aware.Session]


def make_store(directory: DirectoryCluster, base: str) -> Store:
    creds = directory.admin_credentials()
    return Store(
        Providers(directory.uris, creds, timeout=1.0),
        directory.suffix,
        base=base,
        pulse_base=directory.pulse_suffix,
    )


@pytest.fixture
def base(directory: DirectoryCluster) -> str:
    return f"ou=c{uuid.uuid4().hex[:8]},{directory.suffix}"


@pytest.fixture
def store(directory: DirectoryCluster, base: str) -> Iterator[Store]:
    s = make_store(directory, base)
    s.ensure_base()
    for name in (A, B):
        s.add_server(Server(name=name))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def server(
    directory: DirectoryCluster, base: str, store: Store, tmp_path: Path
) -> Iterator[ControlServer]:
    srv = ControlServer(str(tmp_path / "control.sock"), A, make_store(directory, base))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def connect(server: ControlServer) -> Iterator[Connect]:
    sessions: list[aware.Session] = []

    def make(**kw: object) -> aware.Session:
        kw.setdefault("handle_sigterm", False)
        s = aware.connect(server.path, **kw)  # type: ignore[arg-type]
        sessions.append(s)
        return s

    try:
        yield make
    finally:
        for s in sessions:
            s.close()


def raw(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def replies(s: socket.socket, n: int) -> list[dict[str, object]]:
    buf = LineFramer(MAX_LINE)
    out: list[dict[str, object]] = []
    while len(out) < n:
        data = s.recv(65536)
        if not data:
            break
        out += [decode(line) for line in buf.feed(data)]
    return out


# -- the socket


def test_socket_is_private_to_the_sentinels_user(server: ControlServer) -> None:
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


def test_live_socket_is_refused_and_stale_one_replaced(
    server: ControlServer, directory: DirectoryCluster, base: str, tmp_path: Path
) -> None:
    second = ControlServer(server.path, A, make_store(directory, base))
    with pytest.raises(ConfigError, match="another process listens"):
        second.start()
    second.store.close()
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on
    third = ControlServer(str(stale), A, make_store(directory, base))
    third.start()
    try:
        with aware.connect(str(stale), handle_sigterm=False) as session:
            assert session.server == A
    finally:
        third.stop()
    assert not stale.exists()


def test_unreachable_socket_is_control_unavailable(tmp_path: Path) -> None:
    with pytest.raises(aware.ControlUnavailable, match="is the sentinel running"):
        aware.connect(str(tmp_path / "none.sock"), handle_sigterm=False)


# -- registration (FIG. 6)


def test_fig6_first_registration_creates_an_aware_entry_hosted_by_the_primary(
    connect: Connect, store: Store
) -> None:
    session = connect(tag=T)
    assert not session.supervised
    done = session.register(command=CMD, primary=A, backups=[B], resources=["san1"])
    assert (done.result, done.host) == ("created", A)
    app = store.app(T)
    assert app.type is AppType.AWARE and app.host == A and app.command == tuple(CMD)
    assert app.backups == (B,) and app.resources == {"san1"}
    assert any(e.kind == "registration" and "created" in e.text for e in store.events(tag=T))
    assert (
        session.register(command=CMD, primary=A, backups=[B], resources=["san1"]).result
        == "unchanged"
    )
    assert store.app(T).csn == app.csn  # nothing written


def test_registering_again_updates_only_what_the_program_carries(
    connect: Connect, store: Store
) -> None:
    session = connect(tag=T)
    session.register(command=CMD, primary=A, backups=[B])
    store.replace_app_attrs(
        T,
        {
            "ndsclustHostServer": [B],
            "ndsclustMarker": ["17"],
            "ndsclustState": ["running"],
            "ndsclustType": ["Aware"],
        },
    )
    done = session.register(command=[*CMD, "--fast"], primary=A, backups=[], resources=["x"])
    assert (done.result, done.host) == ("updated", B)
    app = store.app(T)
    assert app.command == (*CMD, "--fast") and app.backups == () and app.resources == {"x"}
    assert (app.host, app.marker, app.state.state) == (B, "17", AppState.RUNNING)


def test_tag_of_a_capable_application_is_refused_and_nothing_written(
    connect: Connect, store: Store
) -> None:
    store.add_app(
        App(
            tag=T,
            type=AppType.CAPABLE,
            command=("/bin/sleep", "9"),
            primary=A,
            backups=(B,),
            host=A,
            state=StateValue(AppState.RUNNING),
        )
    )
    before = store.app(T)
    with pytest.raises(RegistrationRefused, match="cluster-capable") as info:
        connect(tag=T).register(command=CMD, primary=A, backups=[B])
    assert info.value.attribute == "ndsclustType"
    assert store.app(T) == before


def test_malformed_registration_is_refused_by_the_sentinel_too(
    server: ControlServer, store: Store
) -> None:
    # Past the client's own checks, straight onto the socket: the sentinel checks again.
    s = raw(server.path)
    try:
        bad = {"tag": "count", "command": ["python3"], "primary": "alpha"}
        unknown = {"tag": "count", "command": CMD, "primary": "alpha", "backups": ["zeta"]}
        s.sendall(
            encode({"id": 1, "op": "hello", "protocol": 1, "tag": None, "token": None})
            + encode({"id": 2, "op": "register", "app": bad})
            + encode({"id": 3, "op": "register", "app": unknown})
        )
        got = {r["id"]: r for r in replies(s, 3)}
    finally:
        s.close()
    assert got[2]["error"] == "refused" and got[2]["attribute"] == "ndsclustCommand"
    assert got[3]["error"] == "refused" and got[3]["attribute"] == "ndsclustBackupServer"
    assert "unknown server 'zeta'" in str(got[3]["message"])
    with pytest.raises(NoSuchEntry):
        store.app(T)


def test_a_started_program_registers_only_its_own_tag(
    connect: Connect, server: ControlServer, store: Store
) -> None:
    token = server.admit(T, granted=True)
    with pytest.raises(RegistrationRefused, match="registers only count"):
        connect(token=token).register(tag="other", command=CMD, primary=A)
    with pytest.raises(NoSuchEntry):
        store.app("other")


# -- the paused copy (FIG. 7B) and the start grant


def test_fig7b_paused_copy_waits_until_granted_and_may_not_mark(
    connect: Connect, server: ControlServer, store: Store
) -> None:
    connect(tag=T).register(command=CMD, primary=A, backups=[B])
    token = server.admit(T, granted=False)
    session = connect(token=token)
    assert session.supervised and session.tag == T
    with pytest.raises(WaitTimeout):
        session.wait_until_host(timeout=0.1)
    with pytest.raises(NotGranted):
        session.set_marker("1", expected=None)
    outcome: list[str] = []

    def wait() -> None:
        session.wait_until_host(timeout=10)
        outcome.append("granted")

    waiter = threading.Thread(target=wait)
    waiter.start()
    server.grant(T)
    waiter.join(timeout=15)
    assert outcome == ["granted"]
    session.set_marker("1", expected=None)
    assert store.app(T).marker == "1"


def test_fig7b_gated_paused_program_is_loaded_at_once_and_resumed_in_place(tmp_path: Path) -> None:
    # The supervisor's half of the paused copy: the program runs (blocked at its own gate,
    # the control socket), its row stays paused until resume, which restarts nothing.
    with Supervisor(A, lease_timeout=30.0) as sup:
        sup.start(T, ["/bin/sleep", "60"], paused=True, gated=True, cwd=str(tmp_path))
        wait_until(
            lambda: (sup.poll(), sup.table()[T].pid)[1] is not None,
            timeout=10,
            what="the paused program's pid",
        )
        row = sup.table()[T]
        assert row.state is ProcState.STARTING and row.paused
        assert os.path.exists(f"/proc/{row.pid}")
        sup.resume(T)
        resumed = sup.table()[T]
        assert resumed.state is ProcState.RUNNING and not resumed.paused
        assert resumed.pid == row.pid and resumed.restarts == ()
        sup.stop(T, 0.0)
        wait_until(
            lambda: (sup.poll(), sup.table()[T].state)[1] is ProcState.EXITED,
            timeout=10,
            what="the program stopped",
        )


def test_unload_request_wakes_a_paused_copy_and_tells_a_running_one(
    connect: Connect, server: ControlServer, store: Store
) -> None:
    connect(tag=T).register(command=CMD, primary=A)
    paused = connect(token=server.admit(T, granted=False))
    reasons: list[str] = []
    paused.on_stop(reasons.append)
    server.request_stop(T, "paused copy no longer needed")
    with pytest.raises(StopRequested, match="no longer needed"):
        paused.wait_until_host(timeout=10)
    assert paused.should_stop() and reasons == ["paused copy no longer needed"]

    token = server.admit(T, granted=True)  # a new start ends the old token
    running = connect(token=token)
    running.wait_until_host(timeout=10)
    assert running.marker is None
    server.request_stop(T, "failback to beta")
    assert running.should_stop(timeout=10) and running.stop_reason == "failback to beta"
    running.marker = "9"  # the marker is saved on the way out
    assert store.app(T).marker == "9"
    server.ended(T)
    with pytest.raises(NotGranted):
        running.marker = "10"
    with pytest.raises(NotSupervised, match="has ended"):
        connect(token=token)


def test_sigterm_is_an_unload_request(connect: Connect, server: ControlServer) -> None:
    before = signal.getsignal(signal.SIGTERM)
    try:
        calm = connect(tag=T, handle_sigterm=True)
        assert signal.getsignal(signal.SIGTERM) != before
        calm.close()
        assert signal.getsignal(signal.SIGTERM) == before  # no stop asked: restored
        session = connect(token=server.admit(T, granted=False), handle_sigterm=True)
        threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM)).start()
        with pytest.raises(StopRequested):
            session.wait_until_host(timeout=10)
        assert session.should_stop(timeout=10) and session.stop_reason == "SIGTERM"
        session.close()
        # Asked to stop: a second SIGTERM must not cut the exit short.
        assert signal.getsignal(signal.SIGTERM) != before
    finally:
        signal.signal(signal.SIGTERM, before)


# -- markers (claims 34-35)


def test_marker_compare_and_swap(connect: Connect, server: ControlServer, store: Store) -> None:
    by_hand = connect(tag=T)
    by_hand.register(command=CMD, primary=A)
    session = connect(token=server.admit(T, granted=True))
    session.wait_until_host()
    assert session.marker is None
    session.marker = "1"
    session.marker = "2"
    with pytest.raises(MarkerConflict) as info:
        session.set_marker("3", expected="1")
    assert info.value.current == "2"
    assert by_hand.marker == "2"  # anyone may read it ...
    with pytest.raises(NotSupervised):
        by_hand.marker = "3"  # ... only the running copy writes it
    assert store.app(T).marker == "2"


def test_two_writers_never_interleave(
    connect: Connect, server: ControlServer, store: Store
) -> None:
    connect(tag=T).register(command=CMD, primary=A)
    token = server.admit(T, granted=True)
    writers = [connect(token=token) for _ in range(2)]
    errors: list[BaseException] = []

    def bump(s: aware.Session) -> None:
        try:
            for _ in range(15):
                s.update_marker(lambda m: str(int(m or 0) + 1), attempts=100)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=bump, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert store.app(T).marker == "30"  # no increment lost


# -- bad input (docs/design.md invariant 4)


def test_garbage_is_answered_with_errors_and_the_server_carries_on(
    connect: Connect, server: ControlServer
) -> None:
    s = raw(server.path)
    try:
        s.sendall(
            b"garbage\n"
            b"[1,2]\n"
            b"\xff\xfe\n"
            b'{"op":"hello"}\n'
            b'{"id":1,"op":"nope"}\n'
            b'{"id":2,"op":"get_marker"}\n'
            b'{"id":3,"op":"hello","protocol":99}\n'
        )
        got = replies(s, 7)
        assert [r["error"] for r in got] == ["bad-request"] * 7
        assert "not JSON" in str(got[0]["message"]) and "say hello first" in str(got[5]["message"])
        s.sendall(
            encode({"id": 4, "op": "hello", "protocol": 1, "tag": "count", "token": None})
            + encode({"id": 5, "op": "ping"})
        )
        assert [(r["id"], r["ok"]) for r in replies(s, 2)] == [(4, True), (5, True)]
        s.sendall(b"x" * (MAX_LINE + 2))  # over the limit: answered, then closed
        last = replies(s, 2)
        assert len(last) == 1 and last[0]["error"] == "bad-request"
    finally:
        s.close()
    assert connect(tag=T).server == A  # a new client is served as before


def test_lost_sentinel_is_a_stop_request(connect: Connect, server: ControlServer) -> None:
    session = connect(token=server.admit(T, granted=True))
    server.stop()
    assert session.should_stop(timeout=10) and session.stop_reason == aware.LOST
    with pytest.raises(aware.ControlUnavailable):
        _ = session.marker


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_many_clients_holding_long_lines_do_not_grow_the_sentinel(
    connect: Connect, server: ControlServer
) -> None:
    # 200 connections each send 1 MiB without a newline and stay open. Without a bound over
    # all connections the sentinel held every one of them (200 MiB).
    line = b"x" * MAX_LINE
    socks: list[socket.socket] = []
    before = _rss()
    peak = 0
    try:
        for _ in range(200):
            s = raw(server.path)
            socks.append(s)
            try:
                s.sendall(line)
            except OSError:
                pass  # closed by the sentinel while sending: what the bound does
            peak = max(peak, _rss() - before)
        held = sum(c.lines.held + len(c.out) for c in list(server._conns.values()))
        assert held <= MAX_HELD
        assert peak < MAX_HELD + (48 << 20), f"grew by {peak} bytes"
        assert connect(tag=T).server == A  # a small client is still served
    finally:
        for s in socks:
            s.close()

"""Pure parts of the supervisor and its lease guard (claim 57, docs/design.md section 4)."""

from __future__ import annotations

import errno
import logging
import os
import pwd
import socket
import threading

import pytest

from ndsclust.errors import SupervisorError
from ndsclust.logfmt import line as logline
from ndsclust.model import ServerName, Tag
from ndsclust.sentinel import guard_link
from ndsclust.sentinel.guard import SCHED_POLICY, SCHED_PRIORITY, Lease
from ndsclust.sentinel.guard_child import describe_status
from ndsclust.sentinel.guard_protocol import (
    Command,
    Dropped,
    Exited,
    Failed,
    Health,
    HealthResult,
    Output,
    ProtocolError,
    Renew,
    Report,
    Spec,
    Start,
    Started,
    Stop,
    UnloadResult,
    clean_line,
    encode_command,
    encode_report,
    parse_command,
    parse_report,
    start_tag,
)
from ndsclust.sentinel.procs import NEXT, ProcInfo, ProcState, check_transition
from ndsclust.sentinel.supervisor import (
    Credentials,
    Supervisor,
    program_env,
    resolve_user,
)

WEB = Tag("web")


# -- process state machine


def test_claim57_every_state_has_a_way_on() -> None:
    assert set(NEXT) == set(ProcState)
    assert check_transition(WEB, ProcState.STARTING, ProcState.RUNNING) is ProcState.RUNNING
    assert check_transition(WEB, ProcState.EXITED, ProcState.STARTING) is ProcState.STARTING


def test_claim57_illegal_transition_names_tag_and_both_states() -> None:
    with pytest.raises(SupervisorError, match=r"program web: illegal transition exited -> running"):
        check_transition(WEB, ProcState.EXITED, ProcState.RUNNING)
    with pytest.raises(SupervisorError, match=r"stopping -> running"):
        check_transition(WEB, ProcState.STOPPING, ProcState.RUNNING)


def test_claim57_exit_on_its_own_is_a_failure_an_unload_is_not() -> None:
    crashed = ProcInfo(WEB, ProcState.EXITED, 10, 1.0, exit_code=3, reason="exited")
    unloaded = ProcInfo(WEB, ProcState.EXITED, 10, 1.0, exit_code=-15, stop_requested=True)
    running = ProcInfo(WEB, ProcState.RUNNING, 10, 1.0)
    assert crashed.failed and not unloaded.failed and not running.failed


# -- guard protocol: one socket, the tag in every per-program line


@pytest.mark.parametrize(
    "cmd",
    [
        Renew(),
        Stop(WEB, 2.5),
        Stop(Tag("db.1"), 0.0),
        Health(WEB, 3.0, ("/usr/bin/check", "--port", "80 81")),
        Start(
            WEB,
            Spec(
                argv=("/bin/app", "a b"),
                env={"K": "v\nw"},
                cwd="/srv",
                unload_argv=("/bin/app", "stop"),
                uid=65534,
                gid=65534,
                groups=(65534, 4),
            ),
        ),
        Start(Tag("x"), Spec(argv=("/bin/app",), env={})),
    ],
)
def test_commands_round_trip_on_one_line(cmd: Command) -> None:
    data = encode_command(cmd)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert parse_command(data[:-1].decode()) == cmd


@pytest.mark.parametrize(
    "line, problem",
    [
        ("renew now", "unknown command"),
        ("hello web", "unknown command"),
        ("stop web soon", "not a number"),
        ("stop web -1", ">= 0"),
        ("stop web nan", ">= 0"),
        ("stop -x 1", "bad tag"),
        ("resume web", "unknown command"),
        ("health web 1 /bin/true", "not a JSON list"),
        ("health web 1 []", "non-empty list"),
        ('start web {"argv": [], "env": {}, "cwd": "/"}', "argv"),
        ('start web {"argv": ["/a"], "env": {"K": 1}, "cwd": "/"}', "'env'"),
        ('start web {"argv": ["/a"], "env": {}, "cwd": "rel"}', "'cwd'"),
        ('start web {"argv": ["/a"], "env": {}, "cwd": "/", "uid": -1}', "'uid'"),
        (
            'start web {"argv": ["/a"], "env": {}, "cwd": "/", "groups": [true]}',
            "'groups'",
        ),
        ("start web [1]", "not a JSON object"),
        ("start web {", "not JSON"),
    ],
)
def test_bad_commands_say_what_is_wrong(line: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_command(line)


def test_a_refused_spec_is_answered_under_its_tag() -> None:
    assert start_tag("start web {") == "web"
    assert start_tag("start bad/tag {}") is None
    assert start_tag("stop web 1") is None


@pytest.mark.parametrize(
    "report",
    [
        Started(WEB, 4242),
        Failed(WEB, "/bin/app: No such file or directory"),
        Output(WEB, "stdout", "a  line\twith spaces "),
        Output(WEB, "stderr", ""),
        Output(WEB, "health", "checking"),
        Dropped(WEB, 1200),
        HealthResult(WEB, True),
        HealthResult(WEB, False, "exit 1"),
        UnloadResult(WEB, True),
        UnloadResult(WEB, False, "killed by SIGKILL"),
        ProtocolError(None, "unknown command 'x'"),
        ProtocolError(WEB, "a health command is already running"),
        Exited(WEB, 0, "exited"),
        Exited(WEB, -9, "lease-expired"),
        Exited(WEB, None, "stopped"),
        Exited(WEB, -9, "sentinel-gone"),
        Exited(WEB, -9, "guard-terminated"),
    ],
)
def test_reports_round_trip(report: Report) -> None:
    assert parse_report(encode_report(report)[:-1].decode()) == report


def test_report_text_is_kept_on_one_line() -> None:
    assert encode_report(Failed(WEB, "a\nb")) == b"failed web a b\n"


@pytest.mark.parametrize(
    "line",
    [
        "started web x",
        "started web",
        "exited web 1 vanished",
        "exited web x exited",
        "health web maybe",
        "output web stdin hi",
        "output web stdout",
        "dropped web -1",
        "started bad/tag 1",
        "hello web",
    ],
)
def test_bad_reports_are_rejected(line: str) -> None:
    with pytest.raises(ValueError, match="unknown report"):
        parse_report(line)


# -- lease (docs/design.md section 4: a frozen sentinel cannot keep a program past its lease)


def test_lease_expires_timeout_after_the_last_renewal() -> None:
    lease = Lease(5.0, now=100.0)
    assert not lease.expire(104.9)
    lease.renew(104.0)
    assert not lease.expire(108.9)
    assert lease.expire(109.0)


def test_a_lapsed_lease_fires_once_until_renewed() -> None:
    lease = Lease(1.0, now=0.0)
    assert lease.expire(1.0)
    assert lease.deadline is None and not lease.expire(50.0)
    lease.renew(60.0)
    assert lease.deadline == 61.0 and lease.expire(61.5)


def test_lease_needs_a_positive_timeout() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        Lease(0.0, now=0.0)


def test_describe_status() -> None:
    assert describe_status(0) == "exit 0"
    assert describe_status(3) == "exit 3"
    assert describe_status(-9) == "killed by SIGKILL"
    assert describe_status(-200) == "killed by signal 200"


# -- output lines


def test_output_line_is_printable() -> None:
    assert clean_line(b"ok\tdone\r") == "ok\tdone"
    assert clean_line(b"bell\x07 esc\x1b[0m del\x7f") == "bell\\x07 esc\\x1b[0m del\\x7f"
    assert clean_line("caf\u00e9".encode()) == "caf\u00e9"
    assert clean_line(b"bad \xff") == "bad \\xff"
    assert clean_line(b"cr\rin the middle") == "cr\\x0din the middle"


def test_a_cleaned_line_fits_one_report() -> None:
    worst = clean_line(b"\x01" * 4096)
    assert parse_report(encode_report(Output(WEB, "stdout", worst))[:-1].decode()) == Output(
        WEB, "stdout", worst
    )


# -- supervisor arguments (no guard is started)


def test_lease_timeout_is_checked_at_construction() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(SupervisorError, match="lease_timeout"):
            Supervisor(ServerName("alpha"), lease_timeout=bad, start_guard=False)


def test_a_tag_that_cannot_travel_is_refused_before_any_guard_starts() -> None:
    sup = Supervisor(ServerName("alpha"), lease_timeout=1.0, start_guard=False)
    with pytest.raises(SupervisorError, match=r"program 'a b': .* is not a tag"):
        sup.start(Tag("a b"), ["/bin/true"])
    with pytest.raises(SupervisorError, match="non-empty list"):
        sup.start(WEB, [])
    assert sup.table() == {}
    sup.close()
    with pytest.raises(SupervisorError, match="closed"):
        sup.start(WEB, ["/bin/true"])


def test_only_a_gated_program_can_be_started_paused() -> None:
    sup = Supervisor(ServerName("alpha"), lease_timeout=1.0, start_guard=False)
    with pytest.raises(SupervisorError, match=r"only a gated .* can be started paused"):
        sup.start(WEB, ["/bin/true"], paused=True)
    assert sup.table() == {}
    sup.close()


# -- environment and user


def test_environment_is_clean_and_sentinel_values_win() -> None:
    env = program_env(
        {"PGDATA": "/srv/db", "NDSCLUST_TAG": "forged"},
        WEB,
        ServerName("alpha"),
        "/run/ndsclust/control.sock",
    )
    assert env == {
        "PGDATA": "/srv/db",
        "NDSCLUST_TAG": "web",
        "NDSCLUST_SERVER": "alpha",
        "NDSCLUST_SOCKET": "/run/ndsclust/control.sock",
    }
    assert "NDSCLUST_SOCKET" not in program_env(None, WEB, ServerName("alpha"), None)


@pytest.mark.parametrize("bad", [{"A=B": "x"}, {"": "x"}, {"A": "x\0y"}])
def test_environment_rejects_bad_entries(bad: dict[str, str]) -> None:
    with pytest.raises(SupervisorError, match="program web: environment entry"):
        program_env(bad, WEB, ServerName("alpha"), None)


def test_user_default_and_own_user_mean_no_change() -> None:
    me = pwd.getpwuid(os.geteuid())
    assert resolve_user(WEB, None, me.pw_uid, me.pw_gid) is None
    assert resolve_user(WEB, me.pw_name, me.pw_uid, me.pw_gid) is None
    assert resolve_user(WEB, me.pw_uid, me.pw_uid, me.pw_gid) is None


def test_user_other_than_own_needs_root() -> None:
    nobody = pwd.getpwnam("nobody")
    creds = resolve_user(WEB, "nobody", 0, 0)
    assert creds == Credentials(
        nobody.pw_uid, nobody.pw_gid, tuple(os.getgrouplist("nobody", nobody.pw_gid))
    )
    with pytest.raises(SupervisorError, match=r"cannot run as user 'nobody'.*not root"):
        resolve_user(WEB, "nobody", 1000, 1000)


def test_unknown_user_is_named() -> None:
    with pytest.raises(SupervisorError, match="user 'no-such-user-x' does not exist"):
        resolve_user(WEB, "no-such-user-x", 0, 0)


# -- the guard's scheduling


def test_guard_gets_the_policy_it_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the shipped unit is checked against (test_deploy_units) is what is asked for."""
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        guard_link.os,
        "sched_setscheduler",
        lambda pid, policy, param: calls.append((pid, policy, param.sched_priority)),
    )
    assert guard_link.prioritize(1234) == (logging.INFO, {"scheduling": "realtime"})
    assert calls == [(1234, SCHED_POLICY | os.SCHED_RESET_ON_FORK, SCHED_PRIORITY)]


def test_refused_realtime_is_one_warning_line_not_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(pid: int, policy: int, param: os.sched_param) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(guard_link.os, "sched_setscheduler", refuse)
    level, fields = guard_link.prioritize(1234)
    assert level == logging.WARNING
    line = logline("guard_start", server="alpha", guard_pid=1234, lease="30", **fields)
    assert line.startswith(
        "event=guard_start server=alpha guard_pid=1234 lease=30 "
        'scheduling=ordinary error=EPERM detail="real-time priority refused'
    )
    assert "\n" not in line and "RestrictRealtime=no" in line


# -- the sentinel's end of the guard's socket


def test_guard_link_reads_reports_and_names_the_lines_that_are_none() -> None:
    mine, theirs = socket.socketpair()
    mine.setblocking(False)
    link = guard_link.GuardLink(proc=None, sock=mine)  # type: ignore[arg-type]
    try:
        assert link.read() == guard_link.Received()
        data = encode_report(Started(WEB, 42)) + b"nonsense\n" + b"x" * ((1 << 20) + 1) + b"\n"
        sender = threading.Thread(
            target=theirs.sendall, args=(data + encode_report(Exited(WEB, 0, "exited")),)
        )
        sender.start()
        reports: list[Report] = []
        errors: list[str] = []
        while len(reports) < 2:
            got = link.read()
            assert not got.ended
            reports += got.reports
            errors += got.errors
        sender.join()
        assert reports == [Started(WEB, 42), Exited(WEB, 0, "exited")]
        assert errors == ["unknown report 'nonsense'", "a line longer than 1048576 bytes"]
        link.send(Renew())
        assert theirs.recv(100) == b"renew\n"
        theirs.close()
        assert link.read().ended
    finally:
        mine.close()

"""The supervisor and its lease guard with real processes (claim 57, docs/design.md section 4).

No directory is needed. Every test kills what it started, even when it fails: the
``reaper`` fixture SIGKILLs the process groups and processes it was given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from ndsclust.errors import SupervisorError
from ndsclust.model import ServerName, Tag
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.supervisor import Supervisor

WEB = Tag("web")
DB = Tag("db")
ALPHA = ServerName("alpha")
PY = sys.executable
T = TypeVar("T")

# The supervised program: records "pid ppid uid" and says hello on both streams.
PROGRAM = """\
import os, signal, sys
mode, pidfile = sys.argv[1], sys.argv[2]
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("hello from", os.environ["NDSCLUST_TAG"], flush=True)
print("complaint on stderr", file=sys.stderr, flush=True)
with open(pidfile + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {os.getppid()} {os.getuid()}")
os.rename(pidfile + ".tmp", pidfile)
if mode == "exit":
    sys.exit(int(sys.argv[3]))
while True:
    signal.pause()
"""

# Unload command: interrupt the program named in the pid file (SIGINT, not SIGTERM).
UNLOAD = """\
import os, signal, sys
os.kill(int(open(sys.argv[1]).read().split()[0]), signal.SIGINT)
"""

# A sentinel stand-in that owns a Supervisor, starts COUNT sleeping programs, writes their
# pids once all run, renews the lease every 0.1 s and writes every exit it sees; the test
# SIGKILLs or SIGSTOPs it.
OWNER = """\
import os, sys, time
from ndsclust.model import ServerName, Tag
from ndsclust.sentinel.procs import ProcState
from ndsclust.sentinel.supervisor import Supervisor
lease, count, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sup = Supervisor(ServerName("alpha"), lease_timeout=lease)
for i in range(count):
    sup.start(Tag(f"p{i}"), ["/bin/sleep", "1000"])
while not all(i.state is ProcState.RUNNING for i in sup.table().values()):
    sup.renew_leases()
    sup.poll()
    time.sleep(0.01)
with open(out + ".tmp", "w") as f:
    f.write(" ".join(str(i.pid) for i in sup.table().values()))
os.rename(out + ".tmp", out)
with open(out + ".exits", "w") as exits:
    while True:
        sup.renew_leases()
        for info in sup.poll():
            exits.write(f"{info.tag} {info.exit_code} {info.reason}\\n")
            exits.flush()
        time.sleep(0.1)
"""


class Reaper:
    """What a test started, killed at teardown whatever happened."""

    def __init__(self) -> None:
        self.groups: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                os.kill(proc.pid, signal.SIGCONT)
            proc.wait()
        # ProcessLookupError: it is gone already, which is what teardown wants.
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    try:
        yield r
    finally:
        r.kill_all()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, Lines]]:
    logger = logging.getLogger(f"test.supervisor.{id(object())}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = Lines()
    logger.addHandler(handler)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def sup(log: tuple[logging.Logger, Lines], reaper: Reaper) -> Iterator[Supervisor]:
    supervisor = Supervisor(
        ALPHA, lease_timeout=30.0, logger=log[0], control_socket="/run/ndsclust/control.sock"
    )
    try:
        yield supervisor
    finally:
        supervisor.close()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    program, unload, owner = tmp_path / "program.py", tmp_path / "unload.py", tmp_path / "owner.py"
    program.write_text(PROGRAM)
    unload.write_text(UNLOAD)
    owner.write_text(OWNER)
    return program, unload, owner


def wait_until(
    cond: Callable[[], T | None], timeout: float = 5.0, sup: Supervisor | None = None
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        if sup is not None:
            sup.renew_leases()
            sup.poll()
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def read_pidfile(path: Path, reaper: Reaper, sup: Supervisor | None = None) -> tuple[int, int, int]:
    text = wait_until(lambda: path.read_text() if path.exists() else None, sup=sup)
    pid, ppid, uid = (int(x) for x in text.split())
    reaper.groups.append(pid)  # the program leads its own session and group
    reaper.pids.append(ppid)  # its parent is the guard
    return pid, ppid, uid


def seconds_until_dead(pids: list[int], timeout: float) -> float:
    """Wait for every one of ``pids`` (not our children) to end; return how long that took."""
    t0 = time.monotonic()
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue
    try:
        waiting = set(fds)
        while waiting:
            left = timeout - (time.monotonic() - t0)
            ready, _, _ = select.select(list(waiting), [], [], max(0.0, left))
            if not ready:
                raise AssertionError(
                    f"{len(waiting)} of {len(pids)} processes still alive after {timeout} s"
                )
            waiting -= set(ready)
    finally:
        for fd in fds:
            os.close(fd)
    return time.monotonic() - t0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"


def row(sup: Supervisor, state: ProcState, tag: Tag = WEB) -> Callable[[], ProcInfo | None]:
    def check() -> ProcInfo | None:
        info = sup.table().get(tag)
        return info if info is not None and info.state is state else None

    return check


def start(
    sup: Supervisor,
    program: Path,
    pidfile: Path,
    mode: str = "run",
    *extra: str,
    unload_argv: list[str] | None = None,
    tag: Tag = WEB,
) -> ProcInfo:
    return sup.start(tag, [PY, str(program), mode, str(pidfile), *extra], unload_argv=unload_argv)


def sleeper(sup: Supervisor, tag: Tag, reaper: Reaper) -> ProcInfo:
    sup.start(tag, ["/bin/sleep", "1000"])
    info = wait_until(row(sup, ProcState.RUNNING, tag), sup=sup)
    assert info.pid is not None
    reaper.groups.append(info.pid)
    reaper.pids.append(parent_of(info.pid))
    return info


# -- start, stop, exit


def test_claim57_start_then_unload_with_sigterm(
    sup: Supervisor,
    files: tuple[Path, Path, Path],
    tmp_path: Path,
    reaper: Reaper,
    log: tuple[logging.Logger, Lines],
) -> None:
    program, _, _ = files
    first = start(sup, program, tmp_path / "pid")
    assert first.state is ProcState.STARTING and first.pid is None
    pid, guard, uid = read_pidfile(tmp_path / "pid", reaper, sup)
    running = wait_until(row(sup, ProcState.RUNNING), sup=sup)
    assert running.pid == pid and uid == os.geteuid() and guard != os.getpid()
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid

    t0 = time.monotonic()
    sup.stop(WEB, grace=10.0)
    assert sup.table()[WEB].state is ProcState.STOPPING
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    assert time.monotonic() - t0 < 5.0
    assert gone.exit_code == -signal.SIGTERM and gone.stop_requested and not gone.failed
    assert gone.reason == "stopped"
    assert any(
        line.startswith("event=program_exited tag=web server=alpha") for line in log[1].lines
    )
    # The guard serves the next program: it outlives the one that stopped.
    assert alive(guard)


def test_one_guard_is_the_parent_of_every_program(
    sup: Supervisor, reaper: Reaper, log: tuple[logging.Logger, Lines]
) -> None:
    web, db = sleeper(sup, WEB, reaper), sleeper(sup, DB, reaper)
    assert web.pid is not None and db.pid is not None
    guard = parent_of(web.pid)
    assert parent_of(db.pid) == guard != os.getpid()
    # Started with the supervisor, before any program: no start waits for it.
    assert log[1].lines[0] == (
        f"event=guard_start server=alpha guard_pid={guard} lease=30 scheduling=realtime"
    )
    assert os.getsid(guard) == guard != os.getsid(0)  # the guard has its own session
    # The guard runs real-time (its lease kills must not wait for a CPU); its programs do not.
    assert os.sched_getscheduler(guard) == os.SCHED_RR | os.SCHED_RESET_ON_FORK
    assert os.sched_getscheduler(web.pid) == os.SCHED_OTHER
    # A program holds only its standard streams (the guard's socket would keep the
    # sentinel from seeing the guard die) and gets the sentinel's file limit back.
    assert sorted(os.listdir(f"/proc/{web.pid}/fd")) == ["0", "1", "2"]
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limits = Path(f"/proc/{web.pid}/limits").read_text().splitlines()
    assert next(ln for ln in limits if ln.startswith("Max open files")).split()[3] == str(soft)


def test_claim57_program_ignoring_sigterm_gets_sigkill_after_grace(
    sup: Supervisor, files: tuple[Path, Path, Path], tmp_path: Path, reaper: Reaper
) -> None:
    program, _, _ = files
    start(sup, program, tmp_path / "pid", "ignore-term")
    read_pidfile(tmp_path / "pid", reaper, sup)
    wait_until(row(sup, ProcState.RUNNING), sup=sup)
    t0 = time.monotonic()
    sup.stop(WEB, grace=0.7)
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    elapsed = time.monotonic() - t0
    assert gone.exit_code == -signal.SIGKILL
    assert 0.6 <= elapsed < 4.0


def test_claim57_unload_command_is_used_when_given(
    sup: Supervisor,
    files: tuple[Path, Path, Path],
    tmp_path: Path,
    reaper: Reaper,
    log: tuple[logging.Logger, Lines],
) -> None:
    program, unload, _ = files
    pidfile = tmp_path / "pid"
    start(sup, program, pidfile, unload_argv=[PY, str(unload), str(pidfile)])
    read_pidfile(pidfile, reaper, sup)
    wait_until(row(sup, ProcState.RUNNING), sup=sup)
    sup.stop(WEB, grace=10.0)
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    assert gone.exit_code == -signal.SIGINT  # the unload command's signal, not SIGTERM
    assert gone.stop_requested


def test_claim57_unload_command_that_cannot_run_falls_back_to_sigterm(
    sup: Supervisor, reaper: Reaper, tmp_path: Path, log: tuple[logging.Logger, Lines]
) -> None:
    sup.start(WEB, ["/bin/sleep", "1000"], unload_argv=[str(tmp_path / "missing")])
    info = wait_until(row(sup, ProcState.RUNNING), sup=sup)
    assert info.pid is not None
    reaper.groups.append(info.pid)
    sup.stop(WEB, grace=10.0)
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    assert gone.exit_code == -signal.SIGTERM and gone.stop_requested
    assert (
        f'event=unload_command tag=web server=alpha result="{tmp_path / "missing"}: '
        'No such file or directory; sent SIGTERM"'
    ) in log[1].lines


def test_claim57_stop_right_after_start_unloads_once_the_program_runs(
    sup: Supervisor, reaper: Reaper
) -> None:
    # The stop usually reaches the guard before the exec is confirmed; the SIGTERM waits
    # until the program leads its own process group.
    sup.start(WEB, ["/bin/sleep", "1000"])
    sup.stop(WEB, grace=10.0)
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    if gone.pid is not None:
        reaper.groups.append(gone.pid)
    assert gone.exit_code == -signal.SIGTERM and gone.reason == "stopped"


def test_claim57_exit_on_its_own_is_reported_with_its_code(
    sup: Supervisor, files: tuple[Path, Path, Path], tmp_path: Path, reaper: Reaper
) -> None:
    program, _, _ = files
    start(sup, program, tmp_path / "pid", "exit", "3")
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    assert gone.exit_code == 3 and gone.failed and gone.reason == "exited"


def test_claim57_restart_records_its_time_and_refuses_a_double_start(
    sup: Supervisor, files: tuple[Path, Path, Path], tmp_path: Path, reaper: Reaper
) -> None:
    program, _, _ = files
    start(sup, program, tmp_path / "pid1", "exit", "1")
    assert wait_until(sup.poll)[0].exit_code == 1
    again = start(sup, program, tmp_path / "pid2")
    assert len(again.restarts) == 1 and again.restarts[0] == again.started_at
    read_pidfile(tmp_path / "pid2", reaper, sup)
    wait_until(row(sup, ProcState.RUNNING), sup=sup)
    with pytest.raises(SupervisorError, match=r"program web is running .*stop it before"):
        start(sup, program, tmp_path / "pid3")
    sup.stop(WEB, grace=5.0)
    wait_until(row(sup, ProcState.EXITED), sup=sup)
    sup.forget(WEB)
    assert WEB not in sup.table()


def test_claim57_program_that_cannot_start_is_reported(sup: Supervisor, tmp_path: Path) -> None:
    sup.start(WEB, [str(tmp_path / "missing")])
    sup.start(DB, ["/bin/true"], cwd=str(tmp_path / "nowhere"))
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    assert gone.reason == f"could not start: {tmp_path / 'missing'}: No such file or directory"
    assert gone.failed and gone.pid is None
    nowhere = wait_until(row(sup, ProcState.EXITED, DB), sup=sup)
    assert nowhere.reason.startswith(f"could not start: working directory {tmp_path / 'nowhere'}:")


def test_many_programs_failing_at_once_leave_the_guard_standing(
    sup: Supervisor, tmp_path: Path
) -> None:
    # Each failed exec reports on its status pipe and exits at once: the pipe's event and
    # the SIGCHLD that reaps the child often come back from one select(). Once the reap has
    # settled the pipe, its event is stale and must not be handled a second time.
    tags = [Tag(f"f{i}") for i in range(40)]
    for tag in tags:
        sup.start(tag, [str(tmp_path / "missing")])
    for tag in tags:
        gone = wait_until(row(sup, ProcState.EXITED, tag), sup=sup)
        assert gone.reason.startswith("could not start:"), (tag, gone.reason)
    sup.start(WEB, ["/bin/sleep", "30"])
    assert wait_until(row(sup, ProcState.RUNNING), sup=sup).pid is not None


def test_output_is_logged_line_by_line_and_environment_is_clean(
    sup: Supervisor, log: tuple[logging.Logger, Lines]
) -> None:
    sup.start(WEB, ["/usr/bin/env"], env={"GREETING": "hello world"})
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    assert gone.exit_code == 0
    # The guard forwards a program's last output before its exit.
    prefix = "event=output tag=web server=alpha stream=stdout line="
    env = sorted(json.loads(ln[len(prefix) :]) for ln in log[1].lines if ln.startswith(prefix))
    assert env == [
        "GREETING=hello world",
        "NDSCLUST_SERVER=alpha",
        "NDSCLUST_SOCKET=/run/ndsclust/control.sock",
        "NDSCLUST_TAG=web",
    ]


def test_both_streams_are_logged(
    sup: Supervisor,
    files: tuple[Path, Path, Path],
    tmp_path: Path,
    reaper: Reaper,
    log: tuple[logging.Logger, Lines],
) -> None:
    program, _, _ = files
    start(sup, program, tmp_path / "pid", "exit", "0")
    wait_until(row(sup, ProcState.EXITED), sup=sup)
    want = {
        'event=output tag=web server=alpha stream=stdout line="hello from web"',
        'event=output tag=web server=alpha stream=stderr line="complaint on stderr"',
    }
    assert want <= set(log[1].lines)


def test_output_beyond_the_pipe_buffer_never_blocks_the_program(
    sup: Supervisor, log: tuple[logging.Logger, Lines], tmp_path: Path
) -> None:
    # 20000 lines (100 kB) overflow a 64 kB pipe; no poll() runs until the program is done.
    done = tmp_path / "done"
    sup.start(WEB, ["/bin/sh", "-c", f"/usr/bin/yes line | /usr/bin/head -n 20000; : > {done}"])
    wait_until(done.exists)
    assert wait_until(row(sup, ProcState.EXITED), sup=sup).exit_code == 0
    line = "event=output tag=web server=alpha stream=stdout line=line"
    assert sum(1 for ln in log[1].lines if ln == line) == 20000


def test_output_is_dropped_not_blocking_while_the_sentinel_does_not_read(
    sup: Supervisor, log: tuple[logging.Logger, Lines], tmp_path: Path
) -> None:
    # 100000 lines of 41 bytes (4 MB) are more than the guard keeps for a sentinel that
    # does not read; the program still finishes, and every line is logged or counted.
    done = tmp_path / "done"
    text = "0123456789" * 4
    sup.start(WEB, ["/bin/sh", "-c", f"/usr/bin/yes {text} | /usr/bin/head -n 100000; : > {done}"])
    wait_until(done.exists, timeout=20.0)
    wait_until(row(sup, ProcState.EXITED), sup=sup)
    logged = sum(
        1
        for ln in log[1].lines
        if ln == f"event=output tag=web server=alpha stream=stdout line={text}"
    )
    dropped = sum(
        int(ln.rpartition("lines=")[2])
        for ln in log[1].lines
        if ln.startswith("event=output_dropped tag=web server=alpha ")
    )
    assert dropped > 0 and logged + dropped == 100000


def test_program_runs_as_the_configured_user_in_its_directory(
    sup: Supervisor, reaper: Reaper
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root to switch users")
    sup.start(WEB, ["/bin/sleep", "60"], user="nobody", cwd="/tmp")
    info = wait_until(row(sup, ProcState.RUNNING), sup=sup)
    assert info.pid is not None
    reaper.groups.append(info.pid)
    status = Path(f"/proc/{info.pid}/status").read_text()
    uid_line = next(ln for ln in status.splitlines() if ln.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(65534)] * 4
    groups_line = next(ln for ln in status.splitlines() if ln.startswith("Groups:"))
    assert groups_line.split()[1:] == [str(g) for g in os.getgrouplist("nobody", 65534)]
    assert os.readlink(f"/proc/{info.pid}/cwd") == "/tmp"
    sup.stop(WEB, grace=5.0)
    assert wait_until(row(sup, ProcState.EXITED), sup=sup).exit_code == -signal.SIGTERM


# -- paused start (FIG. 7B): the program holds itself at its own gate


def test_fig7b_paused_copy_runs_at_once_and_a_stop_before_resume_is_an_unload(
    sup: Supervisor, files: tuple[Path, Path, Path], tmp_path: Path, reaper: Reaper
) -> None:
    program, _, _ = files
    pidfile = tmp_path / "pid"
    sup.start(WEB, [PY, str(program), "run", str(pidfile)], paused=True, gated=True)
    pid, _, _ = read_pidfile(pidfile, reaper, sup)
    held = wait_until(lambda: sup.table()[WEB] if sup.table()[WEB].pid == pid else None, sup=sup)
    assert held.state is ProcState.STARTING and held.paused
    sup.stop(WEB, grace=5.0)
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    assert gone.pid == pid and gone.stop_requested and not gone.failed


# -- health command


def test_claim57_failed_health_check_stops_the_program_as_a_failure(
    sup: Supervisor,
    files: tuple[Path, Path, Path],
    tmp_path: Path,
    reaper: Reaper,
    log: tuple[logging.Logger, Lines],
) -> None:
    program, _, _ = files
    start(sup, program, tmp_path / "pid")
    read_pidfile(tmp_path / "pid", reaper, sup)
    wait_until(row(sup, ProcState.RUNNING), sup=sup)
    assert sup.check_health(WEB, ["/bin/true"], timeout=5.0)
    assert not sup.check_health(WEB, ["/bin/true"], timeout=5.0)  # one at a time
    # Once the passing check has reported, the next one can start.
    wait_until(
        lambda: sup.check_health(WEB, ["/bin/sh", "-c", "echo port closed; exit 1"], timeout=5.0),
        sup=sup,
    )
    assert sup.table()[WEB].state is ProcState.RUNNING
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    assert gone.failed and gone.reason == "health check failed: exit 1"
    assert gone.exit_code == -signal.SIGTERM
    assert 'event=output tag=web server=alpha stream=health line="port closed"' in log[1].lines


def test_claim57_health_check_without_answer_times_out(
    sup: Supervisor, files: tuple[Path, Path, Path], tmp_path: Path, reaper: Reaper
) -> None:
    program, _, _ = files
    start(sup, program, tmp_path / "pid")
    read_pidfile(tmp_path / "pid", reaper, sup)
    wait_until(row(sup, ProcState.RUNNING), sup=sup)
    assert sup.check_health(WEB, ["/bin/sleep", "60"], timeout=0.5)
    gone = wait_until(row(sup, ProcState.EXITED), sup=sup)
    assert gone.reason == "health check failed: no answer within 0.5s"


# -- the lease guard (docs/design.md section 4)


def test_guard_killed_takes_every_program_with_it(sup: Supervisor, reaper: Reaper) -> None:
    web, db = sleeper(sup, WEB, reaper), sleeper(sup, DB, reaper)
    assert web.pid is not None and db.pid is not None
    guard = parent_of(web.pid)
    os.kill(guard, signal.SIGKILL)
    assert seconds_until_dead([web.pid, db.pid], 3.0) < 3.0
    for tag in (WEB, DB):
        gone = wait_until(row(sup, ProcState.EXITED, tag), sup=sup)
        assert gone.failed and gone.reason == "its lease guard died"
    # The next start brings a new guard.
    again = sleeper(sup, WEB, reaper)
    assert again.pid is not None and parent_of(again.pid) not in (guard, os.getpid())


def test_guard_terminated_kills_every_program_and_says_so(sup: Supervisor, reaper: Reaper) -> None:
    web, db = sleeper(sup, WEB, reaper), sleeper(sup, DB, reaper)
    assert web.pid is not None and db.pid is not None
    guard = parent_of(web.pid)
    os.kill(guard, signal.SIGTERM)
    for tag in (WEB, DB):
        gone = wait_until(row(sup, ProcState.EXITED, tag), sup=sup)
        assert gone.reason == "guard-terminated" and gone.exit_code == -signal.SIGKILL
    seconds_until_dead([guard], 3.0)


def test_closing_the_supervisor_kills_its_programs(
    log: tuple[logging.Logger, Lines],
    files: tuple[Path, Path, Path],
    tmp_path: Path,
    reaper: Reaper,
) -> None:
    program, _, _ = files
    with Supervisor(ALPHA, lease_timeout=30.0, logger=log[0]) as sup:
        start(sup, program, tmp_path / "pid")
        pid, guard, _ = read_pidfile(tmp_path / "pid", reaper, sup)
        db = sleeper(sup, DB, reaper)
    assert db.pid is not None
    assert seconds_until_dead([pid, db.pid, guard], 3.0) < 3.0


def owner(
    files: tuple[Path, Path, Path], tmp_path: Path, reaper: Reaper, lease: float, count: int
) -> tuple[subprocess.Popen[bytes], list[int], int]:
    """Start the sentinel stand-in; return it, its programs' pids and its guard's pid."""
    _, _, script = files
    out = tmp_path / "pids"
    proc = subprocess.Popen(
        [PY, str(script), str(lease), str(count), str(out)], start_new_session=True
    )
    reaper.procs.append(proc)
    text = wait_until(lambda: out.read_text() if out.exists() else None, timeout=30.0)
    pids = [int(p) for p in text.split()]
    reaper.groups.extend(pids)
    guards = {parent_of(pid) for pid in pids}
    reaper.pids.extend(guards)
    assert len(pids) == count and len(guards) == 1
    return proc, pids, guards.pop()


def test_sentinel_sigkilled_fifty_programs_die_at_once(
    files: tuple[Path, Path, Path], tmp_path: Path, reaper: Reaper
) -> None:
    # A 30 s lease: a prompt death proves the end of the socket, not the lease, killed them.
    proc, pids, guard = owner(files, tmp_path, reaper, lease=30.0, count=50)
    assert len({os.getpgid(pid) for pid in pids}) == 50  # one process group each
    proc.kill()
    proc.wait()
    assert seconds_until_dead([*pids, guard], 5.0) < 5.0


def test_sentinel_sigstopped_every_program_dies_at_lease_expiry(
    files: tuple[Path, Path, Path], tmp_path: Path, reaper: Reaper
) -> None:
    lease = 1.5
    proc, pids, guard = owner(files, tmp_path, reaper, lease=lease, count=3)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        elapsed = seconds_until_dead(pids, lease + 3.0)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    # The owner renews every 0.1 s, so the last renewal was at most that long before the stop.
    assert lease - 0.5 <= elapsed <= lease + 3.0
    # Woken up, the sentinel learns why; the guard is still there to serve it.
    exits = tmp_path / "pids.exits"
    lines = wait_until(
        lambda: (
            exits.read_text().splitlines()
            if exits.exists() and len(exits.read_text().splitlines()) == 3
            else None
        )
    )
    assert sorted(lines) == [f"p{i} -9 lease-expired" for i in range(3)]
    assert alive(guard)

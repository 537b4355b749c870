"""Process supervisor: starts, watches and stops this server's programs (claim 57).

One ``Supervisor`` per sentinel, and one lease guard per supervisor
(``ndsclust.sentinel.guard``, whose docstring has the protocol). The guard is started with
the supervisor (``start_guard=False`` defers it to the first ``start``), so a failover
pays one message and one fork per program, not a Python start-up. It is the parent of
every program, holds one lease for all of them, and SIGKILLs every program's process
group when the sentinel stops renewing the lease, when the sentinel dies, or when the
guard is told to end; if the guard itself is killed, the kernel kills the programs and
the supervisor kills what is left of their groups. So a frozen or killed sentinel cannot
leave a program running (docs/design.md section 4, fencing). The sentinel must call
``renew_leases()`` more often than ``lease_timeout``.

Nothing here blocks on a program or on the guard: commands are queued and sent as the
guard reads them, ``stop`` only begins a stop, ``check_health`` only starts a health
command, and ``poll()`` collects what the guard reported since the last call. ``table()``
is the frozen process table the decision core reads (``procs.ProcInfo``); counting
restarts inside a window and deciding to restart or fail over is the core's business
(claim 57), the supervisor only records exits and start times.

Programs run from an argument list (no shell), in their own session, as the configured
user, in ``cwd`` (default ``/``), with a clean environment: the ``env`` given plus
``NDSCLUST_TAG``, ``NDSCLUST_SERVER`` and, when the sentinel has a control socket,
``NDSCLUST_SOCKET``. The guard reads their stdout and stderr, so a chatty program never
blocks; ``poll()`` logs each line as ``event=output tag=T server=S stream=stdout line=...``
(quoted as any value, so a program's text cannot pass for fields of the sentinel's; lines
longer than ``guard_protocol.MAX_LINE`` bytes in pieces; lines the guard had to drop while
the sentinel was not reading are counted in an ``event=output_dropped`` line).

A program started ``paused`` (a cluster-aware one loaded ahead of failback, FIG. 7B) runs at
once and holds itself at its own gate, the control socket (``ndsclust.sentinel.control``):
only a ``gated`` program has one, so only it can be started paused. Its row stays STARTING
with ``paused`` set, with its pid once it runs, until ``resume(tag)`` marks it RUNNING;
letting it through its gate is the caller's business, the guard is not involved.

If the guard dies, every program still running is reported EXITED with the reason ``its
lease guard died``, and the next ``start`` starts a new guard.

File descriptors: the sentinel holds one for all of this (the guard's socket), so its own
RLIMIT_NOFILE does not bound the number of programs; the guard holds the programs' pipes,
raises its own limit, and its docstring counts them.
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import ndsclust
from ndsclust.errors import SupervisorError
from ndsclust.logfmt import line as logline
from ndsclust.model import ServerName, Tag, check_tag
from ndsclust.sentinel.guard_link import GuardLink, prioritize
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
)
from ndsclust.sentinel.procs import REFUSED, ProcInfo, ProcState, check_transition

MAX_RESTARTS_KEPT = 64  # restart times kept per tag; the core's window needs far fewer
GUARD_REAP_TIMEOUT = 5.0  # seconds close() waits for the guard to kill everything and exit

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- pure helpers


def program_env(
    env: Mapping[str, str] | None, tag: Tag, server: ServerName, control_socket: str | None
) -> dict[str, str]:
    """The program's whole environment; the ``NDSCLUST_*`` values always come from the sentinel."""
    out: dict[str, str] = {}
    for key, value in (env or {}).items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise SupervisorError(
                f"program {tag}: environment entry {key!r} is invalid; names must be "
                "non-empty without '=' or NUL, values without NUL"
            )
        out[key] = value
    out["NDSCLUST_TAG"] = tag
    out["NDSCLUST_SERVER"] = server
    if control_socket is not None:
        out["NDSCLUST_SOCKET"] = control_socket
    return out


@dataclass(frozen=True, slots=True)
class Credentials:
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_user(tag: Tag, user: str | int | None, euid: int, egid: int) -> Credentials | None:
    """Who the program runs as; None means the sentinel's own user (no change at start)."""
    if user is None:
        return None
    try:
        entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError:
        raise SupervisorError(
            f"program {tag}: user {user!r} does not exist on this server; create it or fix the user setting"
        ) from None
    if (entry.pw_uid, entry.pw_gid) == (euid, egid):
        return None
    if euid != 0:
        raise SupervisorError(
            f"program {tag}: cannot run as user {entry.pw_name!r}: the sentinel runs as uid "
            f"{euid}, not root; run the sentinel as root or drop the user setting"
        )
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Credentials(entry.pw_uid, entry.pw_gid, groups)


# ---------------------------------------------------------------------------- supervisor


@dataclass(eq=False)
class _Run:
    """One start of one program, as the sentinel sees it."""

    tag: Tag
    started_at: float
    restarts: tuple[float, ...]
    paused: bool
    state: ProcState = ProcState.STARTING
    pid: int | None = None
    exit_code: int | None = None
    stop_requested: bool = False
    reason: str = ""
    health_pending: bool = False
    health_grace: float = 0.0

    def __setattr__(self, name: str, value: object) -> None:
        # A change makes the next info() a new row; an unchanged run gives the same row, so
        # the loop finds what changed by identity (ndsclust/sentinel/gather.py).
        object.__setattr__(self, name, value)
        self.__dict__.pop("_info", None)

    def info(self) -> ProcInfo:
        row: ProcInfo | None = self.__dict__.get("_info")
        if row is None:
            row = self.__dict__["_info"] = self._row()
        return row

    def _row(self) -> ProcInfo:
        return ProcInfo(
            tag=self.tag,
            state=self.state,
            pid=self.pid,
            started_at=self.started_at,
            exit_code=self.exit_code,
            restarts=self.restarts,
            paused=self.paused,
            stop_requested=self.stop_requested,
            reason=self.reason,
        )


class Supervisor:
    """This server's programs, all under one lease guard (claim 57, docs/design.md section 4).

    ``lease_timeout``: seconds the guard lets the programs run after the last renewal.
    ``clock`` is CLOCK_MONOTONIC in production; it stamps ``started_at`` and restarts.
    Not thread-safe: callers on several threads hold one lock around every call.
    """

    def __init__(
        self,
        server: ServerName,
        *,
        lease_timeout: float,
        logger: logging.Logger | None = None,
        control_socket: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        python: str = sys.executable,
        start_guard: bool = True,
    ) -> None:
        if not (lease_timeout > 0 and lease_timeout != float("inf")):
            raise SupervisorError(
                f"lease_timeout {lease_timeout!r} must be a finite number of seconds > 0"
            )
        self._server = server
        self._lease_timeout = lease_timeout
        self._logger = logger or _log
        self._control_socket = control_socket
        self._clock = clock
        self._python = python
        self._runs: dict[Tag, _Run] = {}
        self._guard: GuardLink | None = None
        self._reaping: list[subprocess.Popen[bytes]] = []
        self._exits: list[ProcInfo] = []
        self._closed = False
        # The guard imports this package; find it the same way whether installed or not.
        self._guard_env = {
            "PATH": os.defpath,
            "PYTHONPATH": str(Path(ndsclust.__file__).resolve().parent.parent),
            "PYTHONUTF8": "1",
        }
        if start_guard:
            self._start_guard()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- logging

    def _event(self, level: int, event: str, tag: Tag, **fields: object) -> None:
        self._logger.log(level, logline(event, tag=tag, server=self._server, **fields))

    def _guard_event(self, level: int, event: str, **fields: object) -> None:
        self._logger.log(level, logline(event, server=self._server, **fields))

    # -- table

    def table(self) -> Mapping[Tag, ProcInfo]:
        """A frozen snapshot of the process table, by tag."""
        return MappingProxyType({tag: run.info() for tag, run in self._runs.items()})

    def _run_of(self, tag: Tag) -> _Run:
        run = self._runs.get(tag)
        if run is None:
            raise SupervisorError(f"program {tag} is not supervised on server {self._server}")
        return run

    def _move(self, run: _Run, new: ProcState) -> None:
        run.state = check_transition(run.tag, run.state, new)

    # -- the guard

    def _start_guard(self) -> GuardLink:
        self._guard = guard = GuardLink.start(self._python, self._lease_timeout, self._guard_env)
        level, scheduling = prioritize(guard.proc.pid)
        self._guard_event(
            level,
            "guard_start",
            guard_pid=guard.proc.pid,
            lease=f"{self._lease_timeout:g}",
            **scheduling,
        )
        return guard

    def _send(self, cmd: Command) -> None:
        if self._guard is not None:  # else the guard is gone: every run it had is EXITED
            self._guard.send(cmd)

    def _lost_guard(self, guard: GuardLink) -> None:
        """The guard's socket ended: it exited, after its last reports or without them."""
        self._guard = None
        guard.sock.close()
        self._reaping.append(guard.proc)
        lost = [run for run in self._runs.values() if run.state is not ProcState.EXITED]
        self._guard_event(
            logging.ERROR if lost else logging.WARNING,
            "guard_lost",
            guard_pid=guard.proc.pid,
            programs=len(lost),
        )
        for run in lost:
            # Killed without a report: the kernel SIGKILLed the program (parent-death
            # signal); what else is in its group is killed here.
            if run.pid is not None:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(run.pid, signal.SIGKILL)
            self._exited(run, None, "its lease guard died")

    # -- starting

    def start(
        self,
        tag: Tag,
        argv: Sequence[str],
        *,
        paused: bool = False,
        gated: bool = False,
        user: str | int | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        unload_argv: Sequence[str] | None = None,
    ) -> ProcInfo:
        """Ask the guard to start ``argv``; the pid shows in ``table()`` once it runs.

        ``paused``: the program holds itself at its own gate until ``resume``, so it must be
        ``gated`` (a cluster-aware program; see the module docstring). Starting a tag whose program has exited is a
        restart: its time joins ``restarts``.
        """
        self._check_open()
        try:
            check_tag(tag)
        except ValueError as e:
            raise SupervisorError(f"program {tag!r}: {e}") from None
        old = self._runs.get(tag)
        if old is not None and old.state is not ProcState.EXITED:
            raise SupervisorError(
                f"program {tag} is {old.state.value} (pid {old.pid}); stop it before starting it again"
            )
        if not argv or not all(isinstance(a, str) and a for a in argv):
            raise SupervisorError(
                f"program {tag}: the command must be a non-empty list of arguments"
            )
        if unload_argv is not None and not unload_argv:
            raise SupervisorError(
                f"program {tag}: the unload command is empty; omit it to use SIGTERM"
            )
        if paused and not gated:
            raise SupervisorError(
                f"program {tag}: only a gated (cluster-aware) program can be started paused: "
                "it holds itself at its control-socket gate; the guard holds nothing"
            )
        if cwd is not None and not cwd.startswith("/"):
            raise SupervisorError(
                f"program {tag}: working directory {cwd!r} must be an absolute path"
            )
        creds = resolve_user(tag, user, os.geteuid(), os.getegid())
        spec = Spec(
            argv=tuple(argv),
            env=program_env(env, tag, self._server, self._control_socket),
            cwd=cwd or "/",
            unload_argv=None if unload_argv is None else tuple(unload_argv),
            uid=None if creds is None else creds.uid,
            gid=None if creds is None else creds.gid,
            groups=None if creds is None else creds.groups,
        )
        if self._guard is None:
            self._start_guard()
        now = self._clock()
        restarts: tuple[float, ...] = ()
        if old is not None:
            check_transition(tag, old.state, ProcState.STARTING)
            restarts = (*old.restarts, now)[-MAX_RESTARTS_KEPT:]
        run = _Run(tag=tag, started_at=now, restarts=restarts, paused=paused)
        self._runs[tag] = run
        self._send(Start(tag, spec))
        self._event(
            logging.INFO,
            "program_start",
            tag,
            command=shlex.join(argv),
            paused="gated" if paused else "false",
            restarts=len(restarts),
        )
        return run.info()

    def refuse(self, tag: Tag, why: str) -> ProcInfo:
        """Record a start this server will not make (``why``): a row that has exited at
        once with reason ``refused: <why>``, so the decision core sees a program that
        cannot start here (and hands it on) instead of one still loading."""
        self._check_open()
        old = self._runs.get(tag)
        if old is not None and old.state is not ProcState.EXITED:
            raise SupervisorError(f"program {tag} is {old.state.value}; it cannot be refused")
        now = self._clock()
        restarts = () if old is None else (*old.restarts, now)[-MAX_RESTARTS_KEPT:]
        run = _Run(tag=tag, started_at=now, restarts=restarts, paused=False)
        self._runs[tag] = run
        self._exited(run, None, f"{REFUSED}{why}")
        return run.info()

    def resume(self, tag: Tag) -> None:
        """Start a program that was started ``paused`` (FIG. 7B: the host now names this server)."""
        run = self._run_of(tag)
        if not (run.paused and run.state is ProcState.STARTING):
            raise SupervisorError(
                f"program {tag} is {run.state.value} and not paused; nothing to resume"
            )
        run.paused = False
        if run.pid is not None:
            self._move(run, ProcState.RUNNING)  # already running, held at its own gate
        self._event(logging.INFO, "program_resume", tag)

    # -- stopping

    def stop(self, tag: Tag, grace: float) -> None:
        """Begin an unload: the unload command or SIGTERM, SIGKILL after ``grace`` seconds.

        Returns at once; the exit shows in ``poll()`` and ``table()``. Stopping again with a
        shorter grace brings the SIGKILL forward; stopping an exited program does nothing.
        """
        run = self._run_of(tag)
        self._begin_stop(run, grace, requested=True, reason="")

    def stop_all(self, grace: float) -> None:
        for run in list(self._runs.values()):
            self._begin_stop(run, grace, requested=True, reason="")

    def _begin_stop(self, run: _Run, grace: float, *, requested: bool, reason: str) -> None:
        if not grace >= 0:
            raise SupervisorError(f"program {run.tag}: grace {grace!r} must be >= 0 seconds")
        if run.state is ProcState.EXITED:
            return
        if run.state is not ProcState.STOPPING:
            self._move(run, ProcState.STOPPING)
            run.reason = reason
            self._event(
                logging.INFO if requested else logging.WARNING,
                "program_stop",
                run.tag,
                pid=run.pid or "-",
                grace=f"{grace:g}",
                **({"reason": reason} if reason else {}),
            )
        # An unload asked for while a failed health check is already stopping the program
        # still makes the exit one the sentinel wanted: no restart follows.
        run.stop_requested = run.stop_requested or requested
        self._send(Stop(run.tag, grace))

    # -- health

    def check_health(
        self, tag: Tag, argv: Sequence[str], timeout: float, *, grace: float = 5.0
    ) -> bool:
        """Start a health command for a running program; False if it cannot run now.

        The result arrives through ``poll()``. A failure (non-zero exit, a signal, or no
        answer within ``timeout``) counts as the program failing (claim 57): it is stopped
        with ``grace`` and its row says ``health check failed: ...``.
        """
        run = self._run_of(tag)
        if run.state is not ProcState.RUNNING or run.health_pending:
            return False
        if not argv or not timeout > 0:
            raise SupervisorError(
                f"program {tag}: a health command needs arguments and a timeout > 0"
            )
        run.health_pending = True
        run.health_grace = grace
        self._send(Health(tag, timeout, tuple(argv)))
        return True

    # -- lease and reports

    def renew_leases(self) -> None:
        """Renew the guard's lease for every program; call this every loop iteration."""
        guard = self._guard
        if guard is None:
            return
        if guard.out:
            # Every line renews the lease when the guard reads it; one is already waiting.
            guard.flush()
        else:
            self._send(Renew())

    def poll(self) -> tuple[ProcInfo, ...]:
        """Collect what the guard reported; return the rows of programs that exited since the last call."""
        guard = self._guard
        if guard is not None:
            guard.flush()
            self._read_reports(guard)
        self._reaping = [proc for proc in self._reaping if proc.poll() is None]
        exits, self._exits = tuple(self._exits), []
        return exits

    def _read_reports(self, guard: GuardLink) -> None:
        got = guard.read()
        for text in got.errors:
            self._guard_event(logging.WARNING, "guard_protocol_error", text=text)
        for report in got.reports:
            self._apply(report)
        if got.ended:
            self._lost_guard(guard)

    def _live(self, tag: Tag) -> _Run | None:
        run = self._runs.get(tag)
        return None if run is None or run.state is ProcState.EXITED else run

    def _apply(self, report: Report) -> None:
        match report:
            case Output(tag, stream, line):
                self._event(logging.INFO, "output", tag, stream=stream, line=line)
            case Dropped(tag, count):
                self._event(logging.WARNING, "output_dropped", tag, lines=count)
            case ProtocolError(tag, text):
                self._event(logging.WARNING, "guard_protocol_error", tag or Tag("-"), text=text)
            case Started(tag, pid):
                if (run := self._live(tag)) is not None:
                    run.pid = pid
                    if run.state is ProcState.STARTING and not run.paused:
                        self._move(run, ProcState.RUNNING)
                    self._event(
                        logging.INFO,
                        "program_running",
                        tag,
                        pid=pid,
                        **({"paused": "gated"} if run.paused else {}),
                    )
            case Failed(tag, text):
                if (run := self._live(tag)) is not None:
                    self._exited(run, None, f"could not start: {text}")
            case Exited(tag, code, reason):
                if (run := self._live(tag)) is not None:
                    self._exited(run, code, reason)
            case HealthResult(tag, ok, text):
                if (run := self._live(tag)) is not None:
                    run.health_pending = False
                    if not ok and run.state is ProcState.RUNNING:
                        self._event(logging.WARNING, "health_failed", tag, pid=run.pid, text=text)
                        self._begin_stop(
                            run,
                            run.health_grace,
                            requested=False,
                            reason=f"health check failed: {text}",
                        )
            case UnloadResult(tag, ok, text):
                self._event(
                    logging.INFO if ok else logging.WARNING,
                    "unload_command",
                    tag,
                    result="ok" if ok else text,
                )

    def _exited(self, run: _Run, code: int | None, reason: str) -> None:
        if run.state is ProcState.EXITED:
            return
        self._move(run, ProcState.EXITED)
        run.exit_code = code
        run.health_pending = False
        if not run.reason:
            run.reason = reason
        self._event(
            logging.INFO if run.stop_requested else logging.WARNING,
            "program_exited",
            run.tag,
            pid=run.pid or "-",
            code="-" if code is None else code,
            reason=run.reason or ("unloaded" if run.stop_requested else "exited"),
        )
        self._exits.append(run.info())

    # -- housekeeping

    def forget(self, tag: Tag) -> None:
        """Drop an exited program's row, restart history included (e.g. after an unload)."""
        run = self._run_of(tag)
        if run.state is not ProcState.EXITED:
            raise SupervisorError(
                f"program {tag} is {run.state.value}; only an exited program can be forgotten"
            )
        del self._runs[tag]

    def _check_open(self) -> None:
        if self._closed:
            raise SupervisorError("the supervisor is closed; create a new one")

    def close(self) -> None:
        """Close the guard's socket, which SIGKILLs every program still running.

        For a graceful shutdown call ``stop_all`` and ``poll`` until every row has exited first.
        """
        if self._closed:
            return
        self._closed = True
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.sock.close()
            self._reaping.append(guard.proc)
        deadline = time.monotonic() + GUARD_REAP_TIMEOUT
        for proc in self._reaping:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._guard_event(logging.ERROR, "guard_stuck", guard_pid=proc.pid)
        self._reaping = []

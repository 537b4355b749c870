"""The lease guard's processes: what it holds for each program, and how it forks one.

Starting a program: the guard (single-threaded, so fork is safe) forks; the child restores
default signal handling, calls setsid (the program leads its own session and process
group, whose id is its pid), points stdin at /dev/null and stdout/stderr at pipes the
guard reads, restores the sentinel's RLIMIT_NOFILE soft limit, changes directory, groups,
gid and uid, sets the parent-death signal and execs the argument list (PATH from the
program's environment, no shell). Every other descriptor of the guard is close-on-exec.
The exec status comes back on a close-on-exec pipe, as one more event of the loop: the
guard reports ``started`` once the exec succeeded and never waits for it.

If the guard itself is SIGKILLed, every program gets SIGKILL from the kernel: each is
started with PR_SET_PDEATHSIG=SIGKILL, set in the child after fork and after the uid/gid
change (a credential change clears it), followed by a getppid() check in case the guard
died before the setting took effect.

File descriptors: the guard raises its RLIMIT_NOFILE soft limit to the hard limit (its
programs get the original soft limit back). It holds 2 per running program (the stdout
and stderr pipes), 1 more per running health or unload command (their merged output), 1
more per program while its exec is pending, and 8 of its own (standard streams, socket,
signal pipe, epoll, /dev/null): a thousand programs need 2,008. The sentinel holds 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from ndsclust.framing import LineFramer
from ndsclust.model import Tag
from ndsclust.sentinel.guard_protocol import MAX_LINE, Spec

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
# Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec.
_RESET_SIGNALS = (*STOP_SIGNALS, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ)


@dataclass(eq=False)
class Program:
    """Everything the guard holds for one tag, from its ``start`` to its last report."""

    tag: Tag
    spec: Spec
    child: Child = field(init=False)  # set by the fork, before the program is held
    helpers: list[Child] = field(default_factory=list)
    stopping: bool = False
    kill_at: float | None = None  # after a stop: SIGKILL the group at this time
    ending: str | None = None  # the guard is killing it: lease-expired, ...
    done: bool = False  # the program's process has been reaped
    dropped: int = 0  # output lines dropped and not yet reported


@dataclass(eq=False)
class Child:
    """A process the guard forked: a program, or its unload or health command."""

    prog: Program
    kind: str  # "program", "unload", "health"
    pid: int
    streams: list[Stream] = field(default_factory=list)
    exec_fd: int | None = None  # open until the exec succeeded or failed
    exec_error: str | None = None
    timeout: float = 0.0  # health: seconds it may take
    deadline: float | None = None  # health: SIGKILL it at this time
    killed: bool = False
    code: int | None = None  # once reaped

    @property
    def execed(self) -> bool:
        return self.exec_fd is None and self.exec_error is None


@dataclass(eq=False)
class Stream:
    """A pipe the guard reads a child's output from."""

    child: Child
    name: str
    fd: int
    framer: LineFramer = field(default_factory=lambda: LineFramer(MAX_LINE, split=True))
    open: bool = True


class Forker:
    """Forks the guard's programs and their commands (the guard is single-threaded, so
    fork is safe). ``nofile``: the RLIMIT_NOFILE soft limit they get back."""

    def __init__(self, nofile: int) -> None:
        self._nofile = nofile
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._pid = os.getpid()
        self._devnull = os.open(os.devnull, os.O_RDONLY)

    def fork(self, prog: Program, kind: str, argv: Sequence[str]) -> Child:
        """Fork ``argv`` for ``prog``; the exec status arrives later on ``exec_fd``; the
        child's output pipes are non-blocking ``streams``."""
        names = ("stdout", "stderr") if kind == "program" else (kind,)
        fds: list[int] = []
        try:
            for _ in range(len(names) + 1):
                fds.extend(os.pipe())
            pid = os.fork()
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        reads, writes = fds[0::2], fds[1::2]
        if pid == 0:
            _exec_child(
                argv,
                prog.spec,
                self._devnull,
                writes[0],
                writes[len(names) - 1],
                writes[-1],
                self._pid,
                self._nofile,
                self._libc,
            )
        for fd in writes:
            os.close(fd)
        child = Child(prog, kind, pid, exec_fd=reads[-1])
        for name, fd in zip(names, reads, strict=False):
            os.set_blocking(fd, False)
            child.streams.append(Stream(child, name, fd))
        return child


def _exec_child(
    argv: Sequence[str],
    spec: Spec,
    stdin: int,
    stdout: int,
    stderr: int,
    status: int,
    guard_pid: int,
    nofile: int,
    libc: ctypes.CDLL,
) -> NoReturn:
    """Runs in the forked child: set it up and exec ``argv``; never returns.

    A failure is written to ``status`` (close-on-exec: an exec that works closes it empty).
    """
    step = "set up"
    try:
        signal.set_wakeup_fd(-1)
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )
        step = f"working directory {spec.cwd}"
        os.chdir(spec.cwd)
        step = "user"
        if spec.groups is not None:
            os.setgroups(list(spec.groups))
        if spec.gid is not None:
            os.setresgid(spec.gid, spec.gid, spec.gid)
        if spec.uid is not None:
            os.setresuid(spec.uid, spec.uid, spec.uid)
        # Last: a credential change clears the parent-death signal.
        step = "parent-death signal"
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        if os.getppid() != guard_pid:
            # The guard died before prctl: no signal will ever come, and nobody supervises.
            os._exit(126)
        step = argv[0]
        os.execvpe(argv[0], list(argv), dict(spec.env))
    except BaseException as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        with contextlib.suppress(OSError):
            os.write(status, f"{step}: {why}".encode(errors="replace")[:512])
    os._exit(127)


def killpg(pgid: int, sig: signal.Signals) -> None:
    # ProcessLookupError: the group is already gone (or the child has not called setsid yet).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def describe_status(returncode: int) -> str:
    """``exit 3`` or ``killed by SIGKILL`` for a subprocess-style return code."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"

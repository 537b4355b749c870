"""Lease guard: one process per sentinel, the parent of all its programs, which kills them
all when the sentinel's lease lapses.

docs/design.md section 4: "a frozen or killed sentinel cannot leave a program running past its
lease"; claim 57: the sentinel supervises each program it started. One guard serves every
program of one ``Supervisor``: it is started once, with the supervisor, so starting a
program costs one message and one fork, not a Python start-up (the guard's start would
otherwise sit on the failover path, and a thousand guards would cost seconds and
gigabytes when a thousand applications fail over at once).

Safety. The guard SIGKILLs the process group of every program it runs when:

- the lease lapses: every line from the sentinel renews it (``renew`` is for when there is
  nothing else to say), and it lapses ``lease_timeout`` seconds after the last line the
  guard read (CLOCK_MONOTONIC). A SIGSTOPped or hung sentinel still holds its end of the
  socket open, so end-of-file alone cannot see it. Each program is reported ``exited ...
  lease-expired``; the guard keeps running with the lease lapsed (nothing to enforce) and
  serves the sentinel again when it speaks;
- its socket reaches end-of-file (the sentinel died, or closed its supervisor): at once,
  then the guard exits;
- the guard receives SIGTERM, SIGINT or SIGHUP: at once, reported ``guard-terminated``,
  then the guard exits.

If the guard itself is SIGKILLed, every program gets SIGKILL from the kernel: each is
started with PR_SET_PDEATHSIG=SIGKILL, set in the child after fork and after the uid/gid
change (a credential change clears it), followed by a getppid() check in case the guard
died before the setting took effect. The supervisor then kills what is left of the
groups it knows. Processes that leave their program's process group are out of reach.

A renewal counts from when the guard reads it. The guard never blocks: it reads the socket
and checks the lease at least every ``BATCH_SECONDS`` of work (plus one fork), even while
it starts a thousand programs, so a program outlives a frozen sentinel by at most that
much. Commands read before the lease lapsed and not yet carried out are dropped with it;
a dropped ``start`` is reported ``exited <tag> - lease-expired``.

Running: ``python -m ndsclust.sentinel.guard --fd N --lease-timeout SECONDS``. Fd N is the
guard's end of a Unix stream socketpair; the sentinel holds the other end. The guard's
stdin and stdout are /dev/null; its stderr is the sentinel's (a crash's traceback lands
there). The lease runs from the guard's start.

Starting a program: the guard (single-threaded, so fork is safe) forks; the child restores
default signal handling, calls setsid (the program leads its own session and process
group, whose id is its pid), points stdin at /dev/null and stdout/stderr at pipes the
guard reads, restores the sentinel's RLIMIT_NOFILE soft limit, changes directory, groups,
gid and uid, sets the parent-death signal and execs the argument list (PATH from the
program's environment, no shell). Every other descriptor of the guard is close-on-exec.
The exec status comes back on a close-on-exec pipe, as one more event of the loop: the
guard reports ``started`` once the exec succeeded and never waits for it.

Output: the guard reads every program's stdout and stderr whenever there is data, so a
chatty program never blocks, and forwards it one line per ``output`` report (lines longer
than ``MAX_LINE`` bytes in pieces, control characters escaped). When more than
``OUTPUT_BACKLOG`` bytes wait unsent (the sentinel is not reading), further output lines
are dropped and counted (``dropped``); status reports are never dropped.

File descriptors: the guard raises its RLIMIT_NOFILE soft limit to the hard limit (its
programs get the original soft limit back). It holds 2 per running program (the stdout
and stderr pipes), 1 more per running health or unload command (their merged output), 1
more per program while its exec is pending, and 8 of its own (standard streams, socket,
signal pipe, epoll, /dev/null): a thousand programs need 2,008. The sentinel holds 1.

Protocol: UTF-8 lines ending in ``\\n``, at most ``MAX_MESSAGE`` bytes each. A tag
(``ndsclust.model.check_tag``: no spaces) names the program in every per-program line.

Sentinel to guard::

    renew                            the lease now ends lease_timeout seconds from now
    start <tag> <json>               run a program (``Spec``); ``"paused": true`` holds it
                                     until ``resume``
    resume <tag>                     start a program held paused (FIG. 7B)
    stop <tag> <grace>               unload: run the unload command if the spec has one,
                                     else SIGTERM the group; SIGKILL it after grace seconds
    health <tag> <timeout> <json>    run a health command (a JSON argument list); SIGKILL
                                     it after timeout seconds

Guard to sentinel::

    started <tag> <pid>              the program runs; its process group id is its pid
    failed <tag> <text>              the program could not be started; last line for it
    output <tag> <stream> <line>     one line of output; stream: stdout, stderr, health,
                                     unload (the last two: the commands' merged output)
    dropped <tag> <count>            output lines dropped while the sentinel did not read
    health <tag> ok | health <tag> fail <text>
    unload <tag> ok | unload <tag> fail <text>
    error <tag>|- <text>             a line from the sentinel was refused; nothing done
    exited <tag> <code>|- <reason>   last line for the program. <code> as in subprocess
                                     (negative: killed by that signal); ``-``: never
                                     started. <reason>: exited (on its own), stopped
                                     (after a stop), lease-expired, sentinel-gone,
                                     guard-terminated

A tag's ``exited`` or ``failed`` comes after everything else about that start (its output
and command results), and a later ``start`` of the same tag begins a new program. Lines
about a tag the guard no longer holds (a ``stop`` crossing an exit) are ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import NoReturn

from ndsclust.model import Tag, check_tag

MAX_MESSAGE = 1 << 20  # bytes per protocol line
MAX_LINE = 4096  # bytes of program output per output line
OUTPUT_BACKLOG = 1 << 20  # unsent bytes beyond which output lines are dropped
BATCH_SECONDS = 0.005  # work between two reads of the socket and lease checks
FINAL_WAIT = 2.0  # seconds an ending guard waits for its SIGKILLed children
FINAL_FLUSH = 0.5  # seconds an ending guard tries to hand over its last reports
DRAIN_LIMIT = 1 << 20  # bytes read from an ended child's pipe before closing it
# The scheduling the sentinel gives the guard (supervisor._prioritize): real-time
# round-robin at the lowest level, not inherited by its programs (SCHED_RESET_ON_FORK).
SCHED_POLICY = os.SCHED_RR
SCHED_PRIORITY = 1
PR_SET_PDEATHSIG = 1

STREAMS = frozenset({"stdout", "stderr", "health", "unload"})
EXIT_REASONS = frozenset(
    {"exited", "stopped", "lease-expired", "sentinel-gone", "guard-terminated"}
)
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
# Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec.
_RESET_SIGNALS = (*_STOP_SIGNALS, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ)


# ---------------------------------------------------------------------------- protocol


@dataclass(frozen=True, slots=True)
class Spec:
    """What the guard runs, and as whom. ``uid``/``gid``/``groups`` None: the guard's own."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str = "/"
    unload_argv: tuple[str, ...] | None = None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    paused: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "argv": list(self.argv),
                "env": dict(self.env),
                "cwd": self.cwd,
                "unload_argv": None if self.unload_argv is None else list(self.unload_argv),
                "uid": self.uid,
                "gid": self.gid,
                "groups": None if self.groups is None else list(self.groups),
                "paused": self.paused,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Spec:
        """Parse and check a spec; ValueError names the field that is wrong."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"spec is not JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError("spec is not a JSON object")
        env = raw.get("env")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError("spec field 'env' must map strings to strings")
        cwd = raw.get("cwd")
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            raise ValueError("spec field 'cwd' must be an absolute path")
        paused = raw.get("paused")
        if not isinstance(paused, bool):
            raise ValueError("spec field 'paused' must be true or false")
        groups = raw.get("groups")
        if groups is not None and not (isinstance(groups, list) and all(_is_id(g) for g in groups)):
            raise ValueError("spec field 'groups' must be null or a list of group ids")
        return cls(
            argv=_argv(raw.get("argv"), "argv"),
            env=dict(env),
            cwd=cwd,
            unload_argv=None
            if raw.get("unload_argv") is None
            else _argv(raw["unload_argv"], "unload_argv"),
            uid=_opt_id(raw.get("uid"), "uid"),
            gid=_opt_id(raw.get("gid"), "gid"),
            groups=None if groups is None else tuple(groups),
            paused=paused,
        )


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _opt_id(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not _is_id(value):
        raise ValueError(f"spec field {name!r} must be null or a non-negative integer")
    assert isinstance(value, int)
    return value


def _argv(value: object, name: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and value and all(isinstance(a, str) for a in value)):
        raise ValueError(f"{name} must be a non-empty list of strings")
    return tuple(value)


def _tag(text: str) -> Tag:
    try:
        return check_tag(text)
    except ValueError as e:
        raise ValueError(f"bad tag: {e}") from None


@dataclass(frozen=True, slots=True)
class Renew:
    """Nothing but a renewal: any line renews the lease, this one says nothing else."""


@dataclass(frozen=True, slots=True)
class Start:
    tag: Tag
    spec: Spec


@dataclass(frozen=True, slots=True)
class Resume:
    tag: Tag


@dataclass(frozen=True, slots=True)
class Stop:
    tag: Tag
    grace: float


@dataclass(frozen=True, slots=True)
class Health:
    tag: Tag
    timeout: float
    argv: tuple[str, ...]


Command = Renew | Start | Resume | Stop | Health


def encode_command(cmd: Command) -> bytes:
    match cmd:
        case Renew():
            text = "renew"
        case Start(tag, spec):
            text = f"start {tag} {spec.to_json()}"
        case Resume(tag):
            text = f"resume {tag}"
        case Stop(tag, grace):
            text = f"stop {tag} {grace!r}"
        case Health(tag, timeout, argv):
            text = f"health {tag} {timeout!r} {json.dumps(list(argv))}"
    return text.encode() + b"\n"


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{what} {text!r} must be a finite number of seconds >= 0")
    return value


def parse_command(line: str) -> Command:
    """Parse one line from the sentinel; ValueError says what is wrong with it."""
    word, _, rest = line.partition(" ")
    if word == "renew" and not rest:
        return Renew()
    if word not in ("start", "resume", "stop", "health"):
        raise ValueError(f"unknown command {line[:80]!r}")
    tag_text, _, arg = rest.partition(" ")
    tag = _tag(tag_text)
    if word == "start":
        return Start(tag, Spec.from_json(arg))
    if word == "resume":
        if arg:
            raise ValueError(f"resume takes only a tag, not {arg[:80]!r}")
        return Resume(tag)
    if word == "stop":
        return Stop(tag, _seconds(arg, "stop grace"))
    timeout, _, argv = arg.partition(" ")
    try:
        raw = json.loads(argv)
    except json.JSONDecodeError:
        raise ValueError(f"health command {argv[:80]!r} is not a JSON list") from None
    return Health(tag, _seconds(timeout, "health timeout"), _argv(raw, "health command"))


def start_tag(line: str) -> Tag | None:
    """The tag of a ``start`` line whose spec was refused, so the refusal can name it."""
    word, _, rest = line.partition(" ")
    try:
        return check_tag(rest.partition(" ")[0]) if word == "start" else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Started:
    tag: Tag
    pid: int


@dataclass(frozen=True, slots=True)
class Failed:
    tag: Tag
    text: str


@dataclass(frozen=True, slots=True)
class Output:
    tag: Tag
    stream: str
    line: str


@dataclass(frozen=True, slots=True)
class Dropped:
    tag: Tag
    count: int


@dataclass(frozen=True, slots=True)
class HealthResult:
    tag: Tag
    ok: bool
    text: str = ""


@dataclass(frozen=True, slots=True)
class UnloadResult:
    tag: Tag
    ok: bool
    text: str = ""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    tag: Tag | None
    text: str


@dataclass(frozen=True, slots=True)
class Exited:
    tag: Tag
    code: int | None
    reason: str


Report = Started | Failed | Output | Dropped | HealthResult | UnloadResult | ProtocolError | Exited


def _one_line(text: str) -> str:
    return " ".join(text.split())


def encode_report(report: Report) -> bytes:
    match report:
        case Started(tag, pid):
            text = f"started {tag} {pid}"
        case Failed(tag, t):
            text = f"failed {tag} {_one_line(t)}"
        case Output(tag, stream, line):
            # clean_line made the line printable: it holds no newline.
            text = f"output {tag} {stream} {line}"
        case Dropped(tag, count):
            text = f"dropped {tag} {count}"
        case HealthResult(tag, ok, t):
            text = f"health {tag} ok" if ok else f"health {tag} fail {_one_line(t)}"
        case UnloadResult(tag, ok, t):
            text = f"unload {tag} ok" if ok else f"unload {tag} fail {_one_line(t)}"
        case ProtocolError(tag, t):
            text = f"error {tag or '-'} {_one_line(t)}"
        case Exited(tag, code, reason):
            text = f"exited {tag} {'-' if code is None else code} {reason}"
    return text.encode() + b"\n"


def parse_report(line: str) -> Report:
    """Parse one line from the guard; ValueError says what is wrong with it."""
    try:
        return _parse_report(line)
    except ValueError:
        raise ValueError(f"unknown report {line[:80]!r}") from None


def _parse_report(line: str) -> Report:
    word, _, rest = line.partition(" ")
    tag_text, _, arg = rest.partition(" ")
    if word == "error":
        return ProtocolError(None if tag_text == "-" else _tag(tag_text), arg)
    tag = _tag(tag_text)
    if word == "started" and arg.isdigit():
        return Started(tag, int(arg))
    if word == "failed":
        return Failed(tag, arg)
    if word == "output":
        stream, sep, text = arg.partition(" ")
        if stream in STREAMS and sep:
            return Output(tag, stream, text)
    if word == "dropped" and arg.isdigit():
        return Dropped(tag, int(arg))
    if word in ("health", "unload"):
        verdict, _, text = arg.partition(" ")
        if verdict in ("ok", "fail"):
            cls = HealthResult if word == "health" else UnloadResult
            return cls(tag, verdict == "ok", text)
    if word == "exited":
        code, _, reason = arg.partition(" ")
        if reason in EXIT_REASONS and (code == "-" or code.lstrip("-").isdigit()):
            return Exited(tag, None if code == "-" else int(code), reason)
    raise ValueError(line)


class LineReader:
    """Splits a byte stream into protocol lines; a line over ``MAX_MESSAGE`` is an error."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        lines: list[str] = []
        start = 0
        while (i := self._buf.find(b"\n", start)) >= 0:
            lines.append(self._buf[start:i].decode("utf-8", "replace"))
            start = i + 1
        del self._buf[:start]
        if len(self._buf) > self._limit:
            self._buf.clear()
            raise ValueError(f"a line longer than {self._limit} bytes")
        return lines


class LineSplitter:
    """Cuts program output into lines of at most ``max_line`` bytes, holding at most that much."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            i = self._buf.find(b"\n", start, start + self._max + 1)
            if i >= 0:
                lines.append(bytes(self._buf[start:i]))
                start = i + 1
            elif len(self._buf) - start >= self._max:
                lines.append(bytes(self._buf[start : start + self._max]))
                start += self._max
            else:
                del self._buf[:start]
                return lines

    def flush(self) -> list[bytes]:
        """What is left when the stream ends without a final newline."""
        rest = bytes(self._buf)
        self._buf.clear()
        return [rest] if rest else []


def clean_line(raw: bytes) -> str:
    """Program output as one printable line: UTF-8, control characters escaped."""
    text = raw.decode("utf-8", "backslashreplace").removesuffix("\r")
    return "".join(
        c if c == "\t" or (c >= " " and c != "\x7f") else f"\\x{ord(c):02x}" for c in text
    )


# ---------------------------------------------------------------------------- lease


class Lease:
    """A deadline that ``renew`` pushes ``timeout`` seconds past ``now`` (CLOCK_MONOTONIC).

    ``deadline`` is None once the lease has lapsed: there is nothing to enforce until the
    sentinel renews it again.
    """

    def __init__(self, timeout: float, now: float) -> None:
        if not timeout > 0:
            raise ValueError(f"lease timeout {timeout!r} must be > 0 seconds")
        self.timeout = timeout
        self.deadline: float | None = now + timeout

    def renew(self, now: float) -> None:
        self.deadline = now + self.timeout

    def expire(self, now: float) -> bool:
        """True once, when ``now`` reaches the deadline; the lease is lapsed from then on."""
        if self.deadline is None or now < self.deadline:
            return False
        self.deadline = None
        return True


def describe_status(returncode: int) -> str:
    """``exit 3`` or ``killed by SIGKILL`` for a subprocess-style return code."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"


# ---------------------------------------------------------------------------- the child


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


def _killpg(pgid: int, sig: signal.Signals) -> None:
    # ProcessLookupError: the group is already gone (or the child has not called setsid yet).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wake(_sig: int, _frame: FrameType | None) -> None:
    """Signals arrive through the wakeup fd; the loop handles them, not this handler."""


# ---------------------------------------------------------------------------- the guard


@dataclass(eq=False)
class _Program:
    """Everything the guard holds for one tag, from its ``start`` to its last report."""

    tag: Tag
    spec: Spec
    child: _Child | None = None  # None: held paused
    helpers: list[_Child] = field(default_factory=list)
    stopping: bool = False
    kill_at: float | None = None  # after a stop: SIGKILL the group at this time
    ending: str | None = None  # the guard is killing it: lease-expired, ...
    done: bool = False  # the program's process has been reaped
    dropped: int = 0  # output lines dropped and not yet reported


@dataclass(eq=False)
class _Child:
    """A process the guard forked: a program, or its unload or health command."""

    prog: _Program
    kind: str  # "program", "unload", "health"
    pid: int
    streams: list[_Stream] = field(default_factory=list)
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
class _Stream:
    """A pipe the guard reads a child's output from."""

    child: _Child
    name: str
    fd: int
    splitter: LineSplitter = field(default_factory=LineSplitter)
    open: bool = True


class Guard:
    """The guard's state and loop. ``clock`` is CLOCK_MONOTONIC in production.

    ``nofile`` is the RLIMIT_NOFILE soft limit the programs get (the guard raises its own).
    """

    def __init__(
        self,
        sock: socket.socket,
        lease_timeout: float,
        nofile: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sock = sock
        self._clock = clock
        self._lease = Lease(lease_timeout, clock())
        self._nofile = nofile
        self._reader = LineReader()
        self._sel = selectors.DefaultSelector()
        self._progs: dict[Tag, _Program] = {}
        self._children: dict[int, _Child] = {}  # by pid, until reaped
        self._pending: deque[str] = deque()  # lines read, not yet carried out
        self._out = bytearray()
        self._writing = False
        self._dropping: set[_Program] = set()
        # Programs with a kill_at or a health deadline: the loop looks at these only, so
        # a thousand quiet programs cost nothing per turn.
        self._timed: set[_Program] = set()
        self._ending: str | None = None
        self._final_deadline = 0.0
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._pid = os.getpid()
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        self._sig_r, self._sig_w = os.pipe()

    # -- loop

    def run(self) -> int:
        self._sock.setblocking(False)
        self._sel.register(self._sock, selectors.EVENT_READ, "sock")
        os.set_blocking(self._sig_r, False)
        os.set_blocking(self._sig_w, False)
        self._sel.register(self._sig_r, selectors.EVENT_READ, "signal")
        signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
            signal.signal(sig, _wake)
        try:
            self._loop()
            self._last_words()
        finally:
            # Whatever happened, nothing the guard started outlives it.
            for child in list(self._children.values()):
                self._kill(child)
        return 0

    def _loop(self) -> None:
        while True:
            now = self._clock()
            busy = bool(self._pending) and self._ending is None
            for key, mask in self._sel.select(0.0 if busy else self._timeout(now)):
                self._ready(key.data, mask)
            # The socket was read just now, so a renewal already sent counts.
            if self._ending is None:
                if self._lease.expire(self._clock()):
                    self._kill_all("lease-expired")
                self._carry_out()
            self._enforce(self._clock())
            self._flush()
            if self._ending is not None and (
                not self._children or self._clock() >= self._final_deadline
            ):
                return

    def _timeout(self, now: float) -> float | None:
        times: list[float] = []
        if self._ending is not None:
            times.append(self._final_deadline)
        elif self._lease.deadline is not None:
            times.append(self._lease.deadline)
        for prog in self._timed:
            if prog.kill_at is not None and self._killable(prog):
                times.append(prog.kill_at)
            times.extend(
                h.deadline for h in prog.helpers if h.deadline is not None and not h.killed
            )
        return None if not times else max(0.0, min(times) - now)

    def _ready(self, what: object, mask: int) -> None:
        # One select() can report a child's exec-status pipe or output pipe together with
        # the SIGCHLD that reaps it; reaping settles and closes those pipes first, so an
        # event that was already listed for them is stale and skipped.
        if what == "sock":
            if mask & selectors.EVENT_READ:
                self._read_commands()
        elif what == "signal":
            self._signals()
        elif isinstance(what, _Stream):
            if what.open:
                self._read_stream(what)
        elif isinstance(what, _Child) and what.exec_fd is not None:
            self._exec_settled(what)

    def _signals(self) -> None:
        try:
            received = set(os.read(self._sig_r, 4096))
        except BlockingIOError:
            return
        if received & _STOP_SIGNALS:
            self._end("guard-terminated")
        if signal.SIGCHLD in received:
            self._reap()

    def _end(self, reason: str) -> None:
        if self._ending is not None:
            return
        self._ending = reason
        self._final_deadline = self._clock() + FINAL_WAIT
        self._kill_all(reason)

    # -- commands

    def _read_commands(self) -> None:
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._sel.unregister(self._sock)
            self._writing = False
            self._end("sentinel-gone")
            return
        if self._ending is not None:
            return
        try:
            lines = self._reader.feed(data)
        except ValueError as e:
            self._report(ProtocolError(None, str(e)))
            return
        if lines:
            self._lease.renew(self._clock())
            self._pending.extend(lines)

    def _carry_out(self) -> None:
        """Carry out pending commands for at most ``BATCH_SECONDS``, at least one."""
        until = self._clock() + BATCH_SECONDS
        while self._pending:
            self._apply(self._pending.popleft())
            if self._clock() >= until:
                return

    def _apply(self, line: str) -> None:
        try:
            cmd = parse_command(line)
        except ValueError as e:
            tag = start_tag(line)
            if tag is not None and tag not in self._progs:
                self._report(Failed(tag, f"bad spec: {e}"))
            else:
                self._report(ProtocolError(tag, str(e)))
            return
        now = self._clock()
        match cmd:
            case Renew():
                return  # reading the line renewed the lease
            case Start(tag, spec):
                self._start(tag, spec)
            case Resume(tag):
                prog = self._progs.get(tag)
                if prog is not None and prog.child is None and not prog.stopping:
                    self._launch(prog)
            case Stop(tag, grace):
                self._stop(tag, grace, now)
            case Health(tag, timeout, argv):
                self._health(tag, timeout, argv, now)

    def _start(self, tag: Tag, spec: Spec) -> None:
        if tag in self._progs:
            self._report(ProtocolError(tag, f"start refused: program {tag} is still supervised"))
            return
        prog = _Program(tag, spec)
        self._progs[tag] = prog
        if not spec.paused:
            self._launch(prog)

    def _launch(self, prog: _Program) -> None:
        try:
            prog.child = self._spawn(prog, "program", prog.spec.argv)
        except OSError as e:
            del self._progs[prog.tag]
            self._report(Failed(prog.tag, f"{prog.spec.argv[0]}: {e}"))

    def _stop(self, tag: Tag, grace: float, now: float) -> None:
        prog = self._progs.get(tag)
        if prog is None or prog.ending is not None:
            return
        if prog.child is None:
            # Held paused: nothing runs, nothing to unload.
            del self._progs[tag]
            self._report(Exited(tag, None, "stopped"))
            return
        deadline = now + grace
        prog.kill_at = deadline if prog.kill_at is None else min(prog.kill_at, deadline)
        self._timed.add(prog)
        if prog.stopping or prog.done:
            return
        prog.stopping = True
        if prog.child.execed:
            self._unload(prog)
        # Otherwise the exec is pending: the unload begins once it is confirmed, when
        # the program leads its own process group.

    def _unload(self, prog: _Program) -> None:
        argv = prog.spec.unload_argv
        if argv is not None:
            try:
                prog.helpers.append(self._spawn(prog, "unload", argv))
                return
            except OSError as e:
                # Fall back to the default unload so the program still stops.
                self._report(UnloadResult(prog.tag, False, f"{argv[0]}: {e}; sent SIGTERM"))
        assert prog.child is not None
        _killpg(prog.child.pid, signal.SIGTERM)

    def _health(self, tag: Tag, timeout: float, argv: tuple[str, ...], now: float) -> None:
        prog = self._progs.get(tag)
        if prog is None:
            return  # it has ended; its exited report tells the sentinel
        if prog.child is None or not prog.child.execed or prog.stopping or prog.done or prog.ending:
            self._report(HealthResult(tag, False, "the program is not running"))
            return
        if any(h.kind == "health" for h in prog.helpers):
            self._report(ProtocolError(tag, "a health command is already running"))
            return
        try:
            child = self._spawn(prog, "health", argv)
        except OSError as e:
            self._report(HealthResult(tag, False, f"{argv[0]}: {e}"))
            return
        child.timeout = timeout
        child.deadline = now + timeout
        prog.helpers.append(child)
        self._timed.add(prog)

    # -- processes

    def _spawn(self, prog: _Program, kind: str, argv: Sequence[str]) -> _Child:
        """Fork ``argv`` for ``prog``; the exec status arrives later on ``exec_fd``."""
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
        child = _Child(prog, kind, pid, exec_fd=reads[-1])
        for name, fd in zip(names, reads, strict=False):
            os.set_blocking(fd, False)
            stream = _Stream(child, name, fd)
            child.streams.append(stream)
            self._sel.register(fd, selectors.EVENT_READ, stream)
        self._sel.register(reads[-1], selectors.EVENT_READ, child)
        self._children[pid] = child
        return child

    def _exec_settled(self, child: _Child) -> None:
        """The exec-status pipe is readable: the exec worked (end of file) or failed."""
        fd = child.exec_fd
        assert fd is not None
        self._sel.unregister(fd)
        child.exec_fd = None
        data = os.read(fd, 4096)
        os.close(fd)
        prog = child.prog
        if data:
            child.exec_error = data.decode("utf-8", "replace")
        elif child.kind == "program":
            if child.killed:
                return  # killed before or while it exec'ed: whether it ran is unknowable
            self._report(Started(prog.tag, child.pid))
            # A stop that came during the exec begins now, unless the program has already
            # ended (settled while it is reaped: its pid is free again).
            if prog.stopping and prog.ending is None and child.pid in self._children:
                self._unload(prog)
            return
        # A failed program is reported as failed once it is reaped.
        if child.kind == "health" and child.exec_error is not None:
            self._report(HealthResult(prog.tag, False, child.exec_error))
        elif child.kind == "unload" and child.exec_error is not None:
            self._report(UnloadResult(prog.tag, False, f"{child.exec_error}; sent SIGTERM"))
            if prog.child is not None and not prog.done:
                _killpg(prog.child.pid, signal.SIGTERM)

    def _reap(self) -> None:
        while True:
            try:
                # WNOWAIT: the zombie keeps its pid, so its process group id cannot have
                # been reused when the group is killed just below.
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            # Whatever the process left behind in its group goes with it.
            _killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            child = self._children.pop(pid, None)
            if child is not None:
                self._ended(child, os.waitstatus_to_exitcode(status))

    def _ended(self, child: _Child, code: int) -> None:
        prog = child.prog
        if child.exec_fd is not None:
            self._exec_settled(child)
        child.code = code
        for stream in child.streams:
            self._drain(stream)
        if child.kind == "program":
            prog.done = True
            for helper in prog.helpers:
                self._kill(helper)
        else:
            prog.helpers.remove(child)
            if child.exec_error is None and not prog.done and prog.ending is None:
                self._helper_result(child, code)
        if prog.done and not prog.helpers:
            self._finish(prog)

    def _helper_result(self, child: _Child, code: int) -> None:
        tag = child.prog.tag
        if child.kind == "health":
            if child.killed:
                self._report(HealthResult(tag, False, f"no answer within {child.timeout:g}s"))
            else:
                self._report(
                    HealthResult(tag, code == 0, "" if code == 0 else describe_status(code))
                )
        else:
            self._report(UnloadResult(tag, code == 0, "" if code == 0 else describe_status(code)))

    def _finish(self, prog: _Program) -> None:
        """The program and its commands are gone: the tag's last report."""
        del self._progs[prog.tag]
        self._dropping.discard(prog)
        self._timed.discard(prog)
        child = prog.child
        assert child is not None
        if child.exec_error is not None:
            self._report(Failed(prog.tag, child.exec_error))
            return
        if prog.dropped:
            self._report(Dropped(prog.tag, prog.dropped))
        reason = prog.ending or ("stopped" if prog.stopping else "exited")
        self._report(Exited(prog.tag, child.code, reason))

    def _kill(self, child: _Child) -> None:
        """SIGKILL an unreaped child and its group (the pid alone if setsid is still to come)."""
        if child.pid in self._children:
            os.kill(child.pid, signal.SIGKILL)
            _killpg(child.pid, signal.SIGKILL)
            child.killed = True

    def _killable(self, prog: _Program) -> bool:
        return (prog.child is not None and not prog.done and not prog.child.killed) or any(
            h.kind == "unload" and not h.killed for h in prog.helpers
        )

    def _kill_all(self, reason: str) -> None:
        # Commands read before the lease lapsed are not carried out after it: a start
        # still waiting here ends before it began.
        for line in self._pending:
            tag = start_tag(line)
            if tag is not None and tag not in self._progs:
                self._report(Exited(tag, None, reason))
        self._pending.clear()
        for prog in list(self._progs.values()):
            if prog.ending is None:
                prog.ending = reason
            if prog.child is None:
                del self._progs[prog.tag]
                self._report(Exited(prog.tag, None, reason))
                continue
            if not prog.done:
                self._kill(prog.child)
            for helper in prog.helpers:
                self._kill(helper)

    def _enforce(self, now: float) -> None:
        for prog in self._timed:
            if prog.kill_at is not None and now >= prog.kill_at and self._killable(prog):
                # The unload grace is over: SIGKILL the program and any unload command.
                if prog.child is not None and not prog.done:
                    self._kill(prog.child)
                for helper in prog.helpers:
                    if helper.kind == "unload":
                        self._kill(helper)
            for helper in prog.helpers:
                if helper.deadline is not None and now >= helper.deadline and not helper.killed:
                    self._kill(helper)

    # -- output

    def _read_stream(self, stream: _Stream) -> None:
        try:
            data = os.read(stream.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_stream(stream)
            return
        for line in stream.splitter.feed(data):
            self._output(stream, line)

    def _drain(self, stream: _Stream) -> None:
        """The child has ended: forward what is left in its pipe, then close it."""
        budget = DRAIN_LIMIT
        while stream.open and budget > 0:
            try:
                data = os.read(stream.fd, 65536)
            except OSError:
                break
            if not data:
                break
            budget -= len(data)
            for line in stream.splitter.feed(data):
                self._output(stream, line)
        self._close_stream(stream)

    def _close_stream(self, stream: _Stream) -> None:
        if not stream.open:
            return
        stream.open = False
        for line in stream.splitter.flush():
            self._output(stream, line)
        self._sel.unregister(stream.fd)
        os.close(stream.fd)

    def _output(self, stream: _Stream, raw: bytes) -> None:
        prog = stream.child.prog
        if len(self._out) >= OUTPUT_BACKLOG:
            # The sentinel is not reading: drop output rather than block anyone.
            prog.dropped += 1
            self._dropping.add(prog)
            return
        self._report(Output(prog.tag, stream.name, clean_line(raw)))

    # -- reports

    def _report(self, report: Report) -> None:
        self._out += encode_report(report)

    def _flush(self) -> None:
        """Send what is queued without blocking; a stopped sentinel must not stop the guard."""
        while self._out:
            try:
                sent = self._sock.send(self._out, socket.MSG_NOSIGNAL)
            except BlockingIOError:
                break
            except OSError:
                # The sentinel is gone; the end of the socket ends the guard.
                self._out.clear()
                break
            del self._out[:sent]
        if self._dropping and len(self._out) < OUTPUT_BACKLOG // 2:
            for prog in self._dropping:
                self._report(Dropped(prog.tag, prog.dropped))
                prog.dropped = 0
            self._dropping.clear()
        writing = bool(self._out) and self._sock.fileno() in self._sel.get_map()
        if writing != self._writing:
            self._writing = writing
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            self._sel.modify(self._sock, events, "sock")

    def _last_words(self) -> None:
        """The guard ends: hand over the last reports if the sentinel is there to read them."""
        if self._out and self._ending != "sentinel-gone":
            self._sock.settimeout(FINAL_FLUSH)
            with contextlib.suppress(OSError):
                self._sock.sendall(self._out, socket.MSG_NOSIGNAL)


def _open_standard_fds() -> None:
    """Make sure fds 0-2 are open, so no pipe of the guard's can take their numbers."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ndsclust.sentinel.guard",
        description="lease guard for a sentinel's programs",
    )
    parser.add_argument("--fd", type=int, required=True, help="the guard's end of the socketpair")
    parser.add_argument("--lease-timeout", type=float, required=True, help="seconds")
    args = parser.parse_args(argv)
    if not args.lease_timeout > 0:
        parser.error("--lease-timeout must be > 0")
    _open_standard_fds()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Two descriptors per program; a limit the kernel refuses leaves the soft one, and
    # starts beyond it fail with a clear "Too many open files".
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.set_inheritable(args.fd, False)
    sock = socket.socket(fileno=args.fd)
    return Guard(sock, args.lease_timeout, nofile=soft).run()


if __name__ == "__main__":
    sys.exit(main())

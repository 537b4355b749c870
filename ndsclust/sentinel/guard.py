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

If the guard itself is SIGKILLed, the kernel SIGKILLs every program (parent-death signal,
``guard_child``) and the supervisor kills what is left of the groups it knows. Processes
that leave their program's process group are out of reach.

A renewal counts from when the guard reads it. The guard never blocks: it reads the socket
and checks the lease at least every ``BATCH_SECONDS`` of work (plus one fork), even while
it starts a thousand programs, so a program outlives a frozen sentinel by at most that
much. Commands read before the lease lapsed and not yet carried out are dropped with it;
a dropped ``start`` is reported ``exited <tag> - lease-expired``.

Running: ``python -m ndsclust.sentinel.guard --fd N --lease-timeout SECONDS``. Fd N is the
guard's end of a Unix stream socketpair; the sentinel holds the other end. The guard's
stdin and stdout are /dev/null; its stderr is the sentinel's (a crash's traceback lands
there). The lease runs from the guard's start.

Output: the guard reads every program's stdout and stderr whenever there is data, so a
chatty program never blocks, and forwards it one line per ``output`` report (lines longer
than ``guard_protocol.MAX_LINE`` bytes in pieces, control characters escaped). When more than
``OUTPUT_BACKLOG`` bytes wait unsent (the sentinel is not reading), further output lines
are dropped and counted (``dropped``); status reports are never dropped.

Starting a program: one fork (``ndsclust.sentinel.guard_child``, which also counts the
file descriptors the guard holds); the exec status comes back on a close-on-exec pipe, as
one more event of the loop: the guard reports ``started`` once the exec succeeded and
never waits for it.

Protocol: ``ndsclust.sentinel.guard_protocol``, one line per command and per report.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import selectors
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import FrameType

from ndsclust.framing import LineFramer, receive, send_queued
from ndsclust.model import Tag
from ndsclust.sentinel import guard_protocol as gp
from ndsclust.sentinel.guard_child import (
    STOP_SIGNALS,
    Child,
    Forker,
    Program,
    Stream,
    describe_status,
    killpg,
)

OUTPUT_BACKLOG = 1 << 20  # unsent bytes beyond which output lines are dropped
BATCH_SECONDS = 0.005  # work between two reads of the socket and lease checks
FINAL_WAIT = 2.0  # seconds an ending guard waits for its SIGKILLed children
FINAL_FLUSH = 0.5  # seconds an ending guard tries to hand over its last reports
DRAIN_LIMIT = 1 << 20  # bytes read from an ended child's pipe before closing it
# The guard's scheduling, which the sentinel asks for it (guard_link.prioritize): real-time
# round-robin at the lowest level, not inherited by its programs (SCHED_RESET_ON_FORK).
SCHED_POLICY = os.SCHED_RR
SCHED_PRIORITY = 1


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


def _wake(_sig: int, _frame: FrameType | None) -> None:
    """Signals arrive through the wakeup fd; the loop handles them, not this handler."""


# ---------------------------------------------------------------------------- the guard


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
        self._framer = LineFramer(gp.MAX_MESSAGE)
        self._sel = selectors.DefaultSelector()
        self._progs: dict[Tag, Program] = {}
        self._children: dict[int, Child] = {}  # by pid, until reaped
        self._pending: deque[str] = deque()  # lines read, not yet carried out
        self._out = bytearray()
        self._writing = False
        self._dropping: set[Program] = set()
        # Programs with a kill_at or a health deadline: the loop looks at these only, so
        # a thousand quiet programs cost nothing per turn.
        self._timed: set[Program] = set()
        self._ending: str | None = None
        self._final_deadline = 0.0
        self._forker = Forker(nofile)
        self._sig_r, self._sig_w = os.pipe()

    # -- loop

    def run(self) -> int:
        self._sock.setblocking(False)
        self._sel.register(self._sock, selectors.EVENT_READ, "sock")
        os.set_blocking(self._sig_r, False)
        os.set_blocking(self._sig_w, False)
        self._sel.register(self._sig_r, selectors.EVENT_READ, "signal")
        signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        for sig in (*STOP_SIGNALS, signal.SIGCHLD):
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
        elif isinstance(what, Stream):
            if what.open:
                self._read_stream(what)
        elif isinstance(what, Child) and what.exec_fd is not None:
            self._exec_settled(what)

    def _signals(self) -> None:
        try:
            received = set(os.read(self._sig_r, 4096))
        except BlockingIOError:
            return
        if received & STOP_SIGNALS:
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
        data = receive(self._sock)
        if data is None:
            return
        if not data:
            self._sel.unregister(self._sock)
            self._writing = False
            self._end("sentinel-gone")
            return
        if self._ending is not None:
            return
        lines = self._framer.feed(data)
        if self._framer.too_long:
            self._report(gp.ProtocolError(None, f"a line longer than {gp.MAX_MESSAGE} bytes"))
        if lines:
            self._lease.renew(self._clock())
            self._pending.extend(line.decode("utf-8", "replace") for line in lines)

    def _carry_out(self) -> None:
        """Carry out pending commands for at most ``BATCH_SECONDS``, at least one."""
        until = self._clock() + BATCH_SECONDS
        while self._pending:
            self._apply(self._pending.popleft())
            if self._clock() >= until:
                return

    def _apply(self, line: str) -> None:
        try:
            cmd = gp.parse_command(line)
        except ValueError as e:
            tag = gp.start_tag(line)
            if tag is not None and tag not in self._progs:
                self._report(gp.Failed(tag, f"bad spec: {e}"))
            else:
                self._report(gp.ProtocolError(tag, str(e)))
            return
        now = self._clock()
        match cmd:
            case gp.Renew():
                return  # reading the line renewed the lease
            case gp.Start(tag, spec):
                self._start(tag, spec)
            case gp.Stop(tag, grace):
                self._stop(tag, grace, now)
            case gp.Health(tag, timeout, argv):
                self._health(tag, timeout, argv, now)

    def _start(self, tag: Tag, spec: gp.Spec) -> None:
        if tag in self._progs:
            self._report(gp.ProtocolError(tag, f"start refused: program {tag} is still supervised"))
            return
        prog = Program(tag, spec)
        try:
            prog.child = self._spawn(prog, "program", spec.argv)
        except OSError as e:
            self._report(gp.Failed(tag, f"{spec.argv[0]}: {e}"))
            return
        self._progs[tag] = prog

    def _stop(self, tag: Tag, grace: float, now: float) -> None:
        prog = self._progs.get(tag)
        if prog is None or prog.ending is not None:
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

    def _unload(self, prog: Program) -> None:
        argv = prog.spec.unload_argv
        if argv is not None:
            try:
                prog.helpers.append(self._spawn(prog, "unload", argv))
                return
            except OSError as e:
                # Fall back to the default unload so the program still stops.
                self._report(gp.UnloadResult(prog.tag, False, f"{argv[0]}: {e}; sent SIGTERM"))
        killpg(prog.child.pid, signal.SIGTERM)

    def _health(self, tag: Tag, timeout: float, argv: tuple[str, ...], now: float) -> None:
        prog = self._progs.get(tag)
        if prog is None:
            return  # it has ended; its exited report tells the sentinel
        if not prog.child.execed or prog.stopping or prog.done or prog.ending:
            self._report(gp.HealthResult(tag, False, "the program is not running"))
            return
        if any(h.kind == "health" for h in prog.helpers):
            self._report(gp.ProtocolError(tag, "a health command is already running"))
            return
        try:
            child = self._spawn(prog, "health", argv)
        except OSError as e:
            self._report(gp.HealthResult(tag, False, f"{argv[0]}: {e}"))
            return
        child.timeout = timeout
        child.deadline = now + timeout
        prog.helpers.append(child)
        self._timed.add(prog)

    # -- processes

    def _spawn(self, prog: Program, kind: str, argv: Sequence[str]) -> Child:
        """Fork ``argv`` for ``prog`` and watch its pipes."""
        child = self._forker.fork(prog, kind, argv)
        for stream in child.streams:
            self._sel.register(stream.fd, selectors.EVENT_READ, stream)
        assert child.exec_fd is not None
        self._sel.register(child.exec_fd, selectors.EVENT_READ, child)
        self._children[child.pid] = child
        return child

    def _exec_settled(self, child: Child) -> None:
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
            self._report(gp.Started(prog.tag, child.pid))
            # A stop that came during the exec begins now, unless the program has already
            # ended (settled while it is reaped: its pid is free again).
            if prog.stopping and prog.ending is None and child.pid in self._children:
                self._unload(prog)
            return
        # A failed program is reported as failed once it is reaped.
        if child.kind == "health" and child.exec_error is not None:
            self._report(gp.HealthResult(prog.tag, False, child.exec_error))
        elif child.kind == "unload" and child.exec_error is not None:
            self._report(gp.UnloadResult(prog.tag, False, f"{child.exec_error}; sent SIGTERM"))
            if not prog.done:
                killpg(prog.child.pid, signal.SIGTERM)

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
            killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            child = self._children.pop(pid, None)
            if child is not None:
                self._ended(child, os.waitstatus_to_exitcode(status))

    def _ended(self, child: Child, code: int) -> None:
        prog = child.prog
        if child.exec_fd is not None:
            self._exec_settled(child)
        child.code = code
        for stream in child.streams:
            self._read_stream(stream, drain=True)
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

    def _helper_result(self, child: Child, code: int) -> None:
        result = gp.HealthResult if child.kind == "health" else gp.UnloadResult
        timed_out = child.kind == "health" and child.killed
        if timed_out:
            text = f"no answer within {child.timeout:g}s"
        else:
            text = "" if code == 0 else describe_status(code)
        self._report(result(child.prog.tag, code == 0 and not timed_out, text))

    def _finish(self, prog: Program) -> None:
        """The program and its commands are gone: the tag's last report."""
        del self._progs[prog.tag]
        self._dropping.discard(prog)
        self._timed.discard(prog)
        child = prog.child
        if child.exec_error is not None:
            self._report(gp.Failed(prog.tag, child.exec_error))
            return
        if prog.dropped:
            self._report(gp.Dropped(prog.tag, prog.dropped))
        reason = prog.ending or ("stopped" if prog.stopping else "exited")
        self._report(gp.Exited(prog.tag, child.code, reason))

    def _kill(self, child: Child) -> None:
        """SIGKILL an unreaped child and its group (the pid alone if setsid is still to come)."""
        if child.pid in self._children:
            os.kill(child.pid, signal.SIGKILL)
            killpg(child.pid, signal.SIGKILL)
            child.killed = True

    def _killable(self, prog: Program) -> bool:
        return (not prog.done and not prog.child.killed) or any(
            h.kind == "unload" and not h.killed for h in prog.helpers
        )

    def _kill_all(self, reason: str) -> None:
        # Commands read before the lease lapsed are not carried out after it: a start
        # still waiting here ends before it began.
        for line in self._pending:
            tag = gp.start_tag(line)
            if tag is not None and tag not in self._progs:
                self._report(gp.Exited(tag, None, reason))
        self._pending.clear()
        for prog in list(self._progs.values()):
            if prog.ending is None:
                prog.ending = reason
            if not prog.done:
                self._kill(prog.child)
            for helper in prog.helpers:
                self._kill(helper)

    def _enforce(self, now: float) -> None:
        for prog in self._timed:
            if prog.kill_at is not None and now >= prog.kill_at and self._killable(prog):
                # The unload grace is over: SIGKILL the program and any unload command.
                if not prog.done:
                    self._kill(prog.child)
                for helper in prog.helpers:
                    if helper.kind == "unload":
                        self._kill(helper)
            for helper in prog.helpers:
                if helper.deadline is not None and now >= helper.deadline and not helper.killed:
                    self._kill(helper)

    # -- output

    def _read_stream(self, stream: Stream, *, drain: bool = False) -> None:
        """Forward the lines the pipe holds now; close it at its end. ``drain``: the child
        has ended, so read what is left (up to ``DRAIN_LIMIT`` bytes) and close it."""
        budget = DRAIN_LIMIT
        while stream.open:
            try:
                data = os.read(stream.fd, 65536)
            except BlockingIOError:
                if not drain:
                    return
                data = b""
            except OSError:
                data = b""
            if not data:
                break
            for line in stream.framer.feed(data):
                self._output(stream, line)
            budget -= len(data)
            if not drain:
                return
            if budget <= 0:
                break
        self._close_stream(stream)

    def _close_stream(self, stream: Stream) -> None:
        if not stream.open:
            return
        stream.open = False
        if rest := stream.framer.rest():
            self._output(stream, rest)
        self._sel.unregister(stream.fd)
        os.close(stream.fd)

    def _output(self, stream: Stream, raw: bytes) -> None:
        prog = stream.child.prog
        if len(self._out) >= OUTPUT_BACKLOG:
            # The sentinel is not reading: drop output rather than block anyone.
            prog.dropped += 1
            self._dropping.add(prog)
            return
        self._report(gp.Output(prog.tag, stream.name, gp.clean_line(raw)))

    # -- reports

    def _report(self, report: gp.Report) -> None:
        self._out += gp.encode_report(report)

    def _flush(self) -> None:
        """Send what is queued without blocking; a stopped sentinel must not stop the guard."""
        # A sentinel that is gone drops what is queued; the end of its socket ends the guard.
        send_queued(self._sock, self._out)
        if self._dropping and len(self._out) < OUTPUT_BACKLOG // 2:
            for prog in self._dropping:
                self._report(gp.Dropped(prog.tag, prog.dropped))
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

"""The sentinel's end of its lease guard (``ndsclust.sentinel.guard``): the guard's process,
its real-time priority, and the socket the two speak ``guard_protocol`` over.

Nothing here blocks: commands wait in ``out`` until the guard takes them, and ``read``
returns what the guard has reported so far. A guard that stops reading lets its lease
lapse; one that dies ends its socket, which ``read`` says.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from ndsclust.errors import SupervisorError
from ndsclust.framing import LineFramer, receive, send_queued
from ndsclust.sentinel.guard_protocol import (
    MAX_MESSAGE,
    Command,
    Report,
    encode_command,
    parse_report,
)

MAX_READ_BYTES = 1 << 22  # report bytes one read() takes; the rest waits for the next


def prioritize(pid: int) -> tuple[int, dict[str, str]]:
    """Give the lease guard real-time priority (SCHED_RR, the lowest level), as corosync
    does for itself: the guard's kill at lease expiry is what keeps a frozen sentinel's
    programs from outliving their lease, and on a server whose CPUs are saturated an
    ordinary process can wait hundreds of milliseconds for a CPU, far beyond the scheduling
    slack of the fencing inequality. The guard is idle but for its few events, and its
    programs do not inherit the priority (SCHED_RESET_ON_FORK). Refused (EPERM: not root,
    no CAP_SYS_NICE, systemd's RestrictRealtime=yes, a control group without real-time
    runtime), the guard keeps the ordinary policy and runs all the same; the log level
    and fields of ``guard_start`` say which."""
    # The guard's own module (argparse, its child code) stays out of the sentinel but here.
    from ndsclust.sentinel.guard import SCHED_POLICY, SCHED_PRIORITY

    try:
        os.sched_setscheduler(
            pid, SCHED_POLICY | os.SCHED_RESET_ON_FORK, os.sched_param(SCHED_PRIORITY)
        )
    except OSError as e:
        error = errno.errorcode.get(e.errno or 0, type(e).__name__)
        return logging.WARNING, {
            "scheduling": "ordinary",
            "error": error,
            "detail": "real-time priority refused, so the lease kill may wait for a CPU on a "
            "saturated server; it needs root or CAP_SYS_NICE and, under systemd, "
            "RestrictRealtime=no",
        }
    return logging.INFO, {"scheduling": "realtime"}


@dataclass(frozen=True, slots=True)
class Received:
    """What one ``read`` brought: the reports, the lines that were none (``errors``), and
    whether the guard's socket has ended (``ended``: the guard is gone)."""

    reports: tuple[Report, ...] = ()
    errors: tuple[str, ...] = ()
    ended: bool = False


@dataclass(eq=False)
class GuardLink:
    """The guard's process, its socket, and the commands that wait to be sent."""

    proc: subprocess.Popen[bytes]
    sock: socket.socket
    framer: LineFramer = field(default_factory=lambda: LineFramer(MAX_MESSAGE))
    out: bytearray = field(default_factory=bytearray)

    @classmethod
    def start(cls, python: str, lease_timeout: float, env: Mapping[str, str]) -> GuardLink:
        """Start ``python -m ndsclust.sentinel.guard`` on one end of a new socketpair."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.Popen(
                [
                    python,
                    "-m",
                    "ndsclust.sentinel.guard",
                    "--fd",
                    str(theirs.fileno()),
                    "--lease-timeout",
                    repr(lease_timeout),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd="/",
                env=dict(env),
                start_new_session=True,
            )
        except OSError as e:
            mine.close()
            raise SupervisorError(f"cannot start the lease guard ({python}): {e}") from e
        finally:
            theirs.close()
        mine.setblocking(False)
        return cls(proc, mine)

    def send(self, cmd: Command) -> None:
        self.out += encode_command(cmd)
        self.flush()

    def flush(self) -> None:
        """Send what the guard will take now; the rest waits here rather than block."""
        # A guard that is gone drops what is queued; read() finds the end of its socket.
        send_queued(self.sock, self.out)

    def read(self) -> Received:
        """The guard's reports since the last read (at most ``MAX_READ_BYTES`` of them)."""
        reports: list[Report] = []
        errors: list[str] = []
        budget = MAX_READ_BYTES
        while budget > 0:
            data = receive(self.sock)
            if data is None:
                break
            if not data:
                return Received(tuple(reports), tuple(errors), ended=True)
            budget -= len(data)
            lines = self.framer.feed(data)
            if self.framer.too_long:
                errors.append(f"a line longer than {MAX_MESSAGE} bytes")
            for line in lines:
                try:
                    reports.append(parse_report(line.decode("utf-8", "replace")))
                except ValueError as e:
                    errors.append(str(e))
        return Received(tuple(reports), tuple(errors))

"""The local process table: what the supervisor reports to the decision core (claim 57).

``ProcInfo`` is one row, a frozen snapshot; ``Supervisor.table()`` returns a mapping of
them by tag, and the pure decision core reads it as part of its view. ``ProcState`` is the
state machine of one supervised program and ``NEXT`` its transition table:

    STARTING ──► RUNNING ──► STOPPING ──► EXITED
        │           │                       ▲  │
        │           └───────────────────────┘  │ (restart)
        ├──► STOPPING                          │
        └──► EXITED ◄──────────────────────────┘
    EXITED ──► STARTING

STARTING covers the time between asking the guard to start the program and the guard
confirming the pid; a paused program (a cluster-aware one loaded ahead of failback,
FIG. 7B, holding itself at its control-socket gate) stays in STARTING with ``paused`` set,
with its pid once it runs, until it is resumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from ndsclust.errors import SupervisorError
from ndsclust.model import Tag


class ProcState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"


NEXT: Mapping[ProcState, frozenset[ProcState]] = {
    ProcState.STARTING: frozenset({ProcState.RUNNING, ProcState.STOPPING, ProcState.EXITED}),
    ProcState.RUNNING: frozenset({ProcState.STOPPING, ProcState.EXITED}),
    ProcState.STOPPING: frozenset({ProcState.EXITED}),
    ProcState.EXITED: frozenset({ProcState.STARTING}),
}


def check_transition(tag: Tag, old: ProcState, new: ProcState) -> ProcState:
    """Return ``new`` if ``old -> new`` is in ``NEXT``, else raise naming the tag and both states."""
    if new not in NEXT[old]:
        allowed = ", ".join(sorted(s.value for s in NEXT[old]))
        raise SupervisorError(
            f"program {tag}: illegal transition {old.value} -> {new.value} "
            f"(from {old.value} only {allowed})"
        )
    return new


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One supervised program, as the decision core sees it.

    ``exit_code`` follows ``subprocess``: negative means killed by that signal; None while
    the program has not exited. ``restarts`` holds the monotonic times at which the program
    was started again after an exit (the core counts those inside its window, claim 57).
    ``stop_requested`` tells an exit the sentinel asked for (unload) from one on the
    program's own, which is a failure. ``reason`` says why a program ended: ``stopped``
    (an unload), ``exited`` (on its own), ``health check failed: ...``,
    ``could not start: ...``, ``refused: ...`` (the sentinel would not start it: not in
    ``programs.allowed_commands``, no control socket), or the lease guard's doing: ``lease-expired``,
    ``sentinel-gone``, ``guard-terminated``, ``its lease guard died``.
    """

    tag: Tag
    state: ProcState
    pid: int | None
    started_at: float
    exit_code: int | None = None
    restarts: tuple[float, ...] = ()
    paused: bool = False
    stop_requested: bool = False
    reason: str = ""

    @property
    def failed(self) -> bool:
        """True when the program has ended without the sentinel asking for it."""
        return self.state is ProcState.EXITED and not self.stop_requested

    @property
    def refused(self) -> bool:
        """True when the sentinel refused to start it: starting it again here cannot help."""
        return self.failed and self.reason.startswith(REFUSED)


REFUSED = "refused: "

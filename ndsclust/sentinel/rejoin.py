"""Coming back: what a sentinel must know before it decides again (docs/operating.md, "Rejoin").

A sentinel that was not running for a while (SIGSTOP, a hung host, a long scheduling stall)
or that leaves fencing holds a picture of the cluster from before: its peers look silent
and the directory may have moved its applications elsewhere meanwhile. Its own provider,
cut off together with it, proves nothing: it holds none of the peers' writes until
replication catches up. So before it decides anything again it *rejoins*, in two steps:

1. **A current view** (``CheckView``): the provider its watch reads holds every write that
   the providers it reaches hold (contextCSN per serverID at least theirs), and those
   providers include every provider whose server the channels hear (or, without the
   provider-to-server map, a majority of all providers). The shell probes this off the
   loop and reports with ``view_checked``; a probe started before the latest trigger
   proves nothing about it.
2. **A barrier** (``WriteBarrier``): a ``rejoin`` event written through the write provider,
   and its echo on the watch (``echoed``). Everything the watch's provider held before the
   barrier reached it has then been delivered, so the cache holds what step 1 proved.
   A barrier whose echo is overdue is written again (its write may be lost with a provider).

A rejoin also gives every peer a grace of one failover timeout: silence this server
suffered while it was not listening says nothing about them. (``begin(check_view=False)``
asks for the barrier alone.)

``Rejoin`` is pure: time comes in as ``now``, and the shell carries out the step that
``next_step`` returns. A new trigger while a rejoin is under way restarts it (a new
generation): results of the old one are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Phase(Enum):
    IDLE = "idle"
    VIEW = "view"  # waiting for a current view (step 1)
    BARRIER = "barrier"  # waiting for the barrier's echo (step 2)


@dataclass(frozen=True, slots=True)
class CheckView:
    """Probe whether the watch's provider holds what every reachable provider holds."""

    generation: int


@dataclass(frozen=True, slots=True)
class WriteBarrier:
    """Write a ``rejoin`` event through the write provider."""

    generation: int


Step = CheckView | WriteBarrier


class Rejoin:
    """The rejoin state machine; see the module docstring."""

    def __init__(self, *, barrier_retry: float, recheck: float) -> None:
        self.barrier_retry = barrier_retry  # seconds before an unechoed barrier is rewritten
        self.recheck = recheck  # seconds between two view probes
        self.phase = Phase.IDLE
        self.generation = 0
        self.reason = ""
        self.waiting = ""  # why the last view probe said no
        self.grace_until = 0.0
        self._busy = False  # a probe or a barrier write is under way
        self._next_probe = 0.0
        self._barrier: str | None = None  # DN of this generation's barrier, once written
        self._retry_at = 0.0
        self._echoes: set[str] = set()

    @property
    def pending(self) -> bool:
        """Nothing may be decided while this is true."""
        return self.phase is not Phase.IDLE

    def in_grace(self, now: float) -> bool:
        return now < self.grace_until

    def begin(
        self, now: float, reason: str, *, grace: float = 0.0, check_view: bool = True
    ) -> bool:
        """(Re)start a rejoin; True when none was under way (the shell logs it)."""
        started = not self.pending
        self.generation += 1
        self.reason = reason
        self.grace_until = max(self.grace_until, now + grace)
        # A restart keeps a view check that an earlier trigger of this rejoin asked for.
        wants_view = check_view or (self.phase is Phase.VIEW and not started)
        self.phase = Phase.VIEW if wants_view else Phase.BARRIER
        self.waiting = ""
        self._busy = False
        self._next_probe = now
        self._barrier = None
        self._echoes.clear()
        return started

    def next_step(self, now: float) -> Step | None:
        """What the shell should start now, if anything."""
        if self._busy:
            return None
        if self.phase is Phase.VIEW and now >= self._next_probe:
            self._busy = True
            return CheckView(self.generation)
        if self.phase is Phase.BARRIER and (self._barrier is None or now >= self._retry_at):
            self._busy = True
            return WriteBarrier(self.generation)
        return None

    def view_checked(self, generation: int, now: float, current: bool, why: str = "") -> bool:
        """A view probe's answer; True when this answer changed what the rejoin waits for
        (the shell logs ``waiting`` then)."""
        if generation != self.generation or self.phase is not Phase.VIEW:
            return False
        self._busy = False
        if current:
            self.phase = Phase.BARRIER
            self.waiting = ""
            return False
        self._next_probe = now + self.recheck
        changed = why != self.waiting
        self.waiting = why
        return changed

    def barrier_written(self, generation: int, now: float, dn: str | None) -> bool:
        """The barrier's write ended: its DN, or None when it failed (it is written again).
        True when that completes the rejoin (its echo came before the write's answer)."""
        if generation != self.generation or self.phase is not Phase.BARRIER:
            return False
        self._busy = False
        self._barrier = dn.lower() if dn is not None else None
        self._retry_at = now + self.barrier_retry
        return self._complete()

    def overdue(self, now: float) -> bool:
        """The barrier was written and its echo is late (the next step rewrites it)."""
        return self._barrier is not None and not self._busy and now >= self._retry_at

    def echoed(self, dn: str) -> bool:
        """The watch delivered a rejoin event of this server; True when that completes the
        rejoin (the shell logs ``rejoined``)."""
        if self.phase is not Phase.BARRIER:
            return False
        self._echoes.add(dn.lower())
        return self._complete()

    def _complete(self) -> bool:
        if self._barrier is None or self._barrier not in self._echoes:
            return False
        self.phase = Phase.IDLE
        self._echoes.clear()
        return True

"""The anti-entropy sweeper: when and by whom the providers are compared and repaired.

One sentinel at a time sweeps: the one beside the first provider of ``directory.uris``, the
write provider whenever the cluster is whole (``sweeps``: the server
``directory.provider_servers`` names for it, else the one whose ``local_uri`` it is). Every
server carries the same list and map, so exactly one sentinel matches, and it needs to ask
no one. A sweep repairs only while every provider answers and
their contextCSNs agree (``ndsclust.ldapstore.antientropy``), and then that provider is where
every sentinel's writes go or return to (docs/design.md section 2). A rule on the provider
each sentinel happens to be writing to would not do: for a moment two sentinels may be on
different ones (one back on the first, the other not yet), and each would take its own copy
as the authoritative one. While the sweeping sentinel is down, nobody sweeps (``ndsclust
doctor`` still reports, ``ndsclust doctor --repair`` still repairs).

It sweeps soon after a provider (re)started and after a heal (``poke``), and every
``interval`` seconds otherwise. A sweep that was held (a provider unreachable, replication
under way or cut off) is tried again every ``retry`` seconds while a poke is pending.

The sentinel builds it with ``build_sweeper`` (a ``ChildSweep``: every sweep runs in a
short-lived process, ``ndsclust/sentinel/sweep_child.py``), calls ``start()``/``stop()`` with
itself, and ``poke(reason)`` where it sees its watch reconnect, its write provider change
or a rejoin end. The sweeper's own ``Probe`` pokes it when any provider restarted or came
back (docs/design.md invariant 3, "Anti-entropy").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ndsclust.config import Config

if TYPE_CHECKING:
    # Imported where used: only the sweeping sentinel needs them (docs/platform.md fact 36).
    from ndsclust.ldapstore.antientropy import Outcome

log = logging.getLogger("ndsclust.antientropy")

SLOW_INTERVAL = 900.0  # 1.8-3.2 s a sweep at 10 000 entries (docs/platform.md fact 34)
SETTLE = 2.0  # after a poke: let a restarted provider's replication reach the persist phase
RETRY = 2.0  # a held sweep with a poke pending is tried again this often
# How often the sweeping sentinel asks every provider whether it restarted or came back
# (``ndsclust.ldapstore.antientropy_probe.Probe``): one contextCSN read each.
PROBE_INTERVAL = 5.0


class Sweep(Protocol):
    def sweep(self) -> Outcome: ...

    def interrupt(self) -> None: ...  # cut a sweep under way short (from another thread)

    def close(self) -> None: ...


class Prober(Protocol):
    def check(self) -> str: ...

    def whole(self) -> str: ...

    def close(self) -> None: ...


@dataclass
class Schedule:
    """Pure: when the next sweep is due and why. Times are monotonic seconds."""

    interval: float = SLOW_INTERVAL
    settle: float = SETTLE
    retry: float = RETRY
    next_at: float = 0.0
    reason: str = "start"
    pending: bool = True

    def poke(self, reason: str, now: float) -> None:
        at = now + self.settle
        if not self.pending or at < self.next_at:
            self.next_at = at
        self.reason, self.pending = reason, True

    def due(self, now: float) -> str | None:
        return self.reason if now >= self.next_at else None

    def wait(self, now: float) -> float:
        return max(0.0, self.next_at - now)

    def swept(self, held: str, now: float) -> None:
        """A sweep ran: retry soon if it was held on a pending poke, else the slow sweep."""
        if held and self.pending:
            self.next_at = now + self.retry
            return
        self.pending, self.reason, self.next_at = False, "slow", now + self.interval


class Sweeper:
    """Runs ``Sweep.sweep`` in a thread of its own when the schedule says so and ``mine()``."""

    def __init__(
        self,
        sweep: Sweep,
        *,
        mine: Callable[[], bool] = lambda: True,
        interval: float = SLOW_INTERVAL,
        settle: float = SETTLE,
        retry: float = RETRY,
        clock: Callable[[], float] = time.monotonic,
        on_outcome: Callable[[str, Outcome], None] | None = None,
        probe: Prober | None = None,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self._sweep = sweep
        self._mine = mine
        self._probe, self._probe_interval = probe, probe_interval
        self._probe_at = clock()
        self._clock = clock
        self._on_outcome = on_outcome
        self.schedule = Schedule(interval, settle, retry, next_at=clock() + settle)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.repaired = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="antientropy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._sweep.interrupt()
        if self._thread is not None:
            self._thread.join()
        self._sweep.close()
        if self._probe is not None:
            self._probe.close()

    def poke(self, reason: str) -> None:
        """A provider (re)started or a heal happened: sweep after ``settle`` seconds."""
        with self._lock:
            self.schedule.poke(reason, self._clock())
        self._wake.set()

    def step(self) -> Outcome | None:
        """Run one sweep if one is due and this sentinel is the one to run it."""
        with self._lock:
            reason = self.schedule.due(self._clock())
        if reason is None:
            return None
        if not self._mine():
            with self._lock:
                self.schedule.swept("", self._clock())
            return None
        from ndsclust.ldapstore.antientropy import Outcome

        # A sweep that would be held is not started (it is a process of its own).
        held, failed = self._probe.whole() if self._probe is not None else "", False
        try:
            out = Outcome(held=held) if held else self._sweep.sweep()
        except Exception as e:  # a sweep never stops the sentinel (invariant 4)
            log.error("event=antientropy_error reason=%s error=%r", reason, e)
            out, failed = Outcome(held=f"error: {type(e).__name__}"), True
        self.repaired += out.repaired
        log.log(
            logging.WARNING if out.done or out.still else logging.DEBUG,
            "event=antientropy reason=%s entries=%d read_ms=%d differing=%d repaired=%d "
            "still=%d held=%r",
            reason,
            out.entries,
            round(out.read_s * 1000),
            len(out.differing),
            out.repaired,
            len(out.still),
            out.held,
        )
        with self._lock:  # a sweep that failed is not tried again at once, only when due
            self.schedule.swept("" if failed else out.held, self._clock())
        if self._on_outcome is not None:
            self._on_outcome(reason, out)
        return out

    def _probed(self) -> None:
        """Every ``probe_interval``, while this sentinel sweeps: a provider that restarted or
        came back is a poke."""
        now = self._clock()
        if self._probe is None or now < self._probe_at or not self._mine():
            return
        self._probe_at = now + self._probe_interval
        why = self._probe.check()
        if why:
            self.poke(why)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._probed()
            self.step()
            self._wake.clear()  # before reading the schedule: a poke after it wakes the wait
            if self._stopping.is_set():
                break
            with self._lock:
                wait = self.schedule.wait(self._clock())
            if self._probe is not None:
                wait = min(wait, max(0.0, self._probe_at - self._clock()))
            self._wake.wait(wait)


def sweeps(cfg: Config) -> bool:
    """Whether this server's sentinel is the one that sweeps: the server that runs the first
    provider of ``directory.uris`` by ``directory.provider_servers`` where that names it (so
    several sentinels that share one provider, as in a scale lab, still make one sweeper),
    else the server whose ``local_uri`` is that provider."""
    d = cfg.directory
    owner = d.provider_servers.get(d.uris[0])
    return owner == cfg.server if owner else bool(d.local_uri) and d.local_uri == d.uris[0]


def build_sweeper(cfg: Config) -> Sweeper | None:
    """The sweeper of this server's sentinel, or None when it is not the one that sweeps."""
    d = cfg.directory
    if not sweeps(cfg):
        return None
    from ndsclust.ldapstore.antientropy_probe import Probe
    from ndsclust.sentinel.sweep_child import ChildSweep, Job

    job = Job(tuple(d.uris), d.credentials, d.base, d.suffix, cfg.server, cfg.log_level)
    first = d.uris[0]
    return Sweeper(
        ChildSweep(job, write=lambda: first), probe=Probe(d.uris, d.credentials, d.suffix)
    )

"""Carries out the rejoin (``rejoin.py``, docs/operating.md "Rejoin") for the loop.

``Rejoin`` is the pure state machine; this runner does its steps off the loop: the view
check (``CheckView``: is the watch's provider as current as the providers it reaches?) and
the barrier write (``WriteBarrier``: a ``rejoin`` event through the write provider), each
on a pool thread whose answer comes back through a queue the loop drains in ``advance``.
The echo of the barrier arrives through the watch (``echo``).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from ndsclust.errors import NdsclustError
from ndsclust.model import ServerName
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.logline import log, log_event
from ndsclust.sentinel.rejoin import CheckView, Rejoin, WriteBarrier
from ndsclust.sentinel.view import View


class ViewProbe(Protocol):
    """Is the provider ``uri`` as current as ``peers`` (``replication.caught_up``)?"""

    def __call__(
        self, uri: str, peers: Sequence[str], *, required: Collection[str], quorum: int
    ) -> tuple[bool, str]: ...


class BarrierWriter(Protocol):
    """Writes the barrier event; returns its DN (``Store.record_event(...).dn``)."""

    def __call__(self, text: str) -> str: ...


class ProviderMap(Protocol):
    """The ordered provider list as the view check needs it (``connection.Providers``)."""

    @property
    def uris(self) -> Sequence[str]: ...

    @property
    def servers(self) -> Mapping[int, str | None]: ...

    def dead(self, index: int) -> bool: ...


Submit = Callable[[Callable[[], None]], object]


class RejoinRunner:
    """The loop's side of the rejoin; every method but the pool jobs runs on the loop."""

    def __init__(
        self,
        me: ServerName,
        rejoin: Rejoin,
        *,
        providers: ProviderMap,
        probe: ViewProbe,
        write_barrier: BarrierWriter,
        watch_provider: Callable[[], str | None],
        submit: Submit,
        clock: Callable[[], float],
        on_rejoined: Callable[[], None],
        grace: float,
    ) -> None:
        self.me = me
        self.rejoin = rejoin
        self._providers = providers
        self._probe = probe
        self._write_barrier = write_barrier
        self._watch_provider = watch_provider
        self._submit = submit
        self._clock = clock
        self._on_rejoined = on_rejoined
        self._grace = grace
        self._answers: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    @property
    def pending(self) -> bool:
        return self.rejoin.pending

    def in_grace(self, now: float) -> bool:
        return self.rejoin.in_grace(now)

    def begin(self, now: float, why: str) -> None:
        """Start (or restart) a rejoin: every peer gets a failover timeout's grace, and
        nothing is decided until the view is proved current and the barrier has come back."""
        if self.rejoin.begin(now, why, grace=self._grace):
            log_event(logging.WARNING, "rejoin", server=self.me, reason=why)

    def echo(self, dn: str) -> None:
        """The watch delivered a rejoin event written by this server."""
        if self.rejoin.pending and self.rejoin.echoed(dn):
            self._on_rejoined()

    def advance(self, now: float, view: View) -> None:
        """Take in the answers of the probes and writes; start the next step."""
        while True:
            try:
                self._answers.get_nowait()()
            except queue.Empty:
                break
        if not self.rejoin.pending:
            return
        if self.rejoin.overdue(now):
            log_event(
                logging.WARNING,
                "rejoin_barrier_overdue",
                server=self.me,
                waited_s=self.rejoin.barrier_retry,
                provider=self._watch_provider() or "-",
            )
        step = self.rejoin.next_step(now)
        if isinstance(step, CheckView):
            peers, required, quorum = self.view_rule(view)
            generation = step.generation
            self._submit(lambda: self._check_view(generation, peers, required, quorum))
        elif isinstance(step, WriteBarrier):
            generation = step.generation
            self._submit(lambda: self._barrier(generation))

    def view_rule(self, view: View) -> tuple[list[str], set[str], int]:
        """The providers to compare with (not those of servers the channels find dead),
        those that must answer (providers of the peers they hear, or in grace), and how
        many must answer at least (without the provider-to-server map, a majority, or
        every live server's share of it)."""
        p = self._providers
        peers = [u for i, u in enumerate(p.uris) if not p.dead(i)]
        required = {
            p.uris[i]
            for i, s in p.servers.items()
            if s is not None and s != self.me and view.liveness.alive(ServerName(s))
        }
        if any(p.servers.values()):
            return peers, required, 1
        alive = 1 + sum(1 for s in view.servers if s != self.me and view.liveness.alive(s))
        return peers, required, min(len(p.uris) // 2 + 1, alive)

    def _check_view(
        self, generation: int, peers: list[str], required: set[str], quorum: int
    ) -> None:
        uri = self._watch_provider()
        if uri is None:
            ok, why = False, "the watch is reconnecting"
        else:
            try:
                ok, why = self._probe(uri, peers, required=required, quorum=quorum)
            except Exception as e:  # a pool thread's exception would vanish with its future
                ok, why = False, f"view check failed: {e}"

        def answer() -> None:
            if self.rejoin.view_checked(generation, self._clock(), ok, why):
                log_event(
                    logging.WARNING, "rejoin_waits", server=self.me, provider=uri or "-", why=why
                )

        self._answers.put(answer)

    def _barrier(self, generation: int) -> None:
        dn: str | None = None
        try:
            dn = self._write_barrier(
                f"{self.me} rejoins: waits for its watch to deliver this event"
            )
        except NdsclustError as e:
            # Written again at the next step: until then nothing is decided.
            log_event(logging.WARNING, "rejoin_barrier_failed", server=self.me, error=str(e))
        except Exception:
            # A pool thread's exception would vanish with its future: say it.
            log.exception("event=rejoin_barrier_failed server=%s", self.me)

        def answer() -> None:
            if self.rejoin.barrier_written(generation, self._clock(), dn):
                self._on_rejoined()

        self._answers.put(answer)


def is_rejoin_of(attrs: Mapping[str, Sequence[str]], me: ServerName) -> bool:
    """Whether an entry from the watch is a rejoin event written by server ``me``."""
    low = {k.lower(): v for k, v in attrs.items()}
    return tuple(low.get("ndsclusteventkind", ())) == (EventKind.REJOIN.value,) and tuple(
        low.get("ndsclusteventserver", ())
    ) == (me,)

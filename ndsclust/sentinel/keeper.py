"""The keeper: lease renewal and self-fencing, on a thread of its own (docs/design.md
section 4, "Fencing" and "Leases").

Every ``interval`` it renews the programs' lease, but only while the main loop has made
progress within ``hang_limit`` (a hung loop lets the lease expire). When this server is cut
off (``Fence.cut_off``: no majority of servers heard on the channels that prove the way
out, or with two servers no peer and no witness) it kills every program at once and marks
the sentinel fenced; once it hears its peers again it asks the loop to rejoin. A round
later than ``stall_limit`` means this process was not running: it asks for a rejoin too.
A SIGSTOPped or killed sentinel stops renewing altogether: the guard kills the programs
when the lease runs out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from ndsclust.model import ServerName
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.detector import Detector, must_fence
from ndsclust.sentinel.logline import log_event
from ndsclust.sentinel.recorder import NO_TAG, Record


class Observed(Protocol):
    """A liveness channel as fencing reads it."""

    def observe(self, now: float) -> Mapping[ServerName, float]: ...


class Acknowledged(Protocol):
    """The LAN channel: which peers acknowledged our heartbeats, and when."""

    def acknowledged(self, now: float) -> Mapping[ServerName, float]: ...


class Reachable(Protocol):
    """The witness channel."""

    def reachable(self, now: float) -> bool: ...


class Leases(Protocol):
    """The local programs as the keeper needs them."""

    def renew_leases(self) -> None: ...

    def stop_all(self, grace: float) -> None: ...


class Records(Protocol):
    def put(self, record: Record) -> None: ...


def fence_channels(configured: Sequence[str]) -> list[str]:
    """Channels that prove this server's own signals reach its peers (fencing asks "do
    they hear me?", not "do I hear them?"): LAN acknowledgements and the shared disk.
    Seeing peers' directory pulses proves only the way in; it counts only when nothing
    else is configured."""
    proof = [n for n in ("lan", "disk") if n in configured]
    return proof or list(configured)


class Fence:
    """Whether this server must fence itself now (``detector.must_fence``). The keeper acts
    on it; the loop's view asks too, so a claim is never decided in the moment between
    becoming a minority and the keeper's next round."""

    def __init__(
        self,
        detector: Detector,
        channels: Mapping[str, Observed],
        lan: Acknowledged | None,
        witness: Reachable | None,
    ) -> None:
        self.detector = detector
        self._channels = {n: channels[n] for n in fence_channels(list(channels))}
        self._lan = lan
        self.witness = witness

    def observations(self, now: float) -> dict[str, Mapping[ServerName, float]]:
        out = {n: ch.observe(now) for n, ch in self._channels.items()}
        if "lan" in out and self._lan is not None:
            out["lan"] = self._lan.acknowledged(now)
        return out

    def cut_off(self, now: float, servers: Sequence[ServerName]) -> bool:
        view = self.detector.liveness(self.observations(now), now, list(servers))
        reachable = self.witness.reachable(now) if self.witness else None
        return must_fence(view, reachable, len(servers))

    def heard_any(self, now: float) -> bool:
        """Whether the fencing channels have heard any peer at all since they started."""
        return any(self.observations(now).values())

    def why(self, now: float) -> str:
        reason = "no majority of peers on any channel"
        if self.witness is not None and not self.witness.reachable(now):
            reason += ", witness unreachable"
        return reason


class Keeper:
    """The keeper thread's body (``run``); ``fenced`` is read by the loop."""

    def __init__(
        self,
        me: ServerName,
        *,
        fence: Fence,
        leases: Leases,
        records: Records,
        clock: Callable[[], float],
        interval: float,
        stall_limit: float,
        hang_limit: float,
        progress: Callable[[], float],
        servers: Callable[[], Sequence[ServerName]],
        ask_rejoin: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        self.me = me
        self.fence = fence
        self.fenced = threading.Event()
        self._leases = leases
        self._records = records
        self._clock = clock
        self._interval = interval
        self._stall_limit = stall_limit
        self._hang_limit = hang_limit
        self._progress = progress
        self._servers = servers
        self._ask_rejoin = ask_rejoin
        self._stop = stop
        self._heard_any = False  # some peer was heard since this sentinel started

    def run(self) -> None:
        last = self._clock()
        while not self._stop.wait(self._interval):
            now = self._clock()
            gap, last = now - last, now
            self.round(now, gap)

    def round(self, now: float, gap: float) -> None:
        """One round, ``gap`` seconds after the one before."""
        if gap > self._stall_limit + self._interval:
            # This process was not running: every peer looks silent because nobody
            # listened, not because they are gone. The lease guard has already dealt with
            # our programs if the stall outlasted the lease; the main loop rejoins before
            # deciding anything.
            self._ask_rejoin(f"this sentinel did not run for {gap - self._interval:.1f}s")
            if now - self._progress() < self._hang_limit:
                self._leases.renew_leases()
            return
        cut_off = self.fence.cut_off(now, self._servers())
        self._heard_any = self._heard_any or self.fence.heard_any(now)
        if cut_off and not self.fenced.is_set():
            self.fenced.set()
            self._leases.stop_all(0.0)
            if self._heard_any:
                log_event(logging.ERROR, "fenced", server=self.me, reason=self.fence.why(now))
                text = f"{self.me} is cut off and stopped its programs"
                self._records.put(Record(EventKind.FENCED, NO_TAG, text, notify=True))
            else:
                # The first server of a new cluster (or one cut off since it started): no
                # peer lost, so no alarm; it claims nothing until a majority answers.
                why = self.fence.why(now) + ", none heard since this sentinel started"
                log_event(logging.WARNING, "fenced", server=self.me, reason=why)
        elif not cut_off and self.fenced.is_set():
            self.fenced.clear()
            self._ask_rejoin("it was cut off and hears its peers again")
            log_event(logging.WARNING, "unfenced", server=self.me)
        self._renew(now)

    def _renew(self, now: float) -> None:
        stalled = now - self._progress()
        if stalled < self._hang_limit:
            self._leases.renew_leases()
        else:
            log_event(logging.ERROR, "loop_hung", server=self.me, seconds=round(stalled, 1))

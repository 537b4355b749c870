"""The pulse writer: advances this server's directory pulse (claim 44) through a
connection of its own, so a slow provider never delays the main loop and vice versa.

The same write carries this sentinel's liveness report (``serverwatch.py``) whenever it
changed since the last one written, so the report costs no write of its own. Without the
directory channel the pulse still goes out, every ``SLOW_INTERVAL``, for the report and
for readers that judge a server by the age of its pulse (``ndsclust status``).

The pulse entry also says what this server can hold service addresses on
(``ndsclustNetwork``, ``address.networks``): its peers' decision cores judge its
eligibility by it (``view.Viewpoint.missing``). It is read at most every
``NETWORKS_EVERY`` seconds and written, in a modify of its own after the pulse, only when
it changed since the last one written (so at start and on a change, not on every pulse);
a failed write is tried again with the next pulse and logged once per distinct error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ndsclust.errors import NdsclustError
from ndsclust.ldapstore.store import Store
from ndsclust.model import LivenessReport, ServerName
from ndsclust.sentinel import address
from ndsclust.sentinel.logline import log_event

if TYPE_CHECKING:
    from ndsclust.sentinel.build import Parts

log = logging.getLogger("ndsclust.sentinel")

# Seconds between pulses when the directory channel is not configured.
SLOW_INTERVAL = 1.0
# Seconds between two reads of this server's interfaces for ndsclustNetwork.
NETWORKS_EVERY = 1.0


class Networks:
    """What this sentinel publishes of its interfaces: read at most every ``every``
    seconds on ``clock``, ``due`` while the last read differs from the last written."""

    def __init__(
        self,
        read: Callable[[], frozenset[str] | None] = address.networks,
        clock: Callable[[], float] = time.monotonic,
        every: float = NETWORKS_EVERY,
    ) -> None:
        self._read, self._clock, self._every = read, clock, every
        self._at: float | None = None
        self.now: frozenset[str] | None = None  # the last read (None: never read, or failed)
        self.written: frozenset[str] | None = None
        self._error = ""

    def due(self) -> frozenset[str] | None:
        """The networks to write now, or None when the directory already has them."""
        t = self._clock()
        if self._at is None or t - self._at >= self._every:
            self._at = t
            found = self._read()
            if found is not None:
                self.now = found
        return self.now if self.now is not None and self.now != self.written else None

    def done(self, networks: frozenset[str]) -> None:
        self.written, self._error = networks, ""

    def failed(self, me: ServerName, error: NdsclustError) -> None:
        if str(error) != self._error:
            self._error = str(error)
            log_event(logging.WARNING, "networks_failed", server=me, error=str(error))


def write_pulses(
    me: ServerName,
    store: Store,
    next_pulse: Callable[[], int],
    interval: float,
    stop: threading.Event,
    report: Callable[[], LivenessReport | None] = lambda: None,
    networks: Networks | None = None,
) -> None:
    """Until ``stop``: one pulse every ``interval``, with the report when it changed, and
    the networks after it when they changed; once more when ``stop`` is set, so the last
    report (a stopped sentinel's) goes out. A failed pulse write is logged at debug level
    (the peers see the pulse stop, which is what the channel is for); its report is sent
    again with the next pulse."""
    written: LivenessReport | None = None
    try:
        while True:
            last = stop.wait(interval)
            now = report()
            try:
                if now is not None and now != written:
                    store.write_pulse_report(me, next_pulse(), now)
                    written = now
                else:
                    store.write_pulse(me, next_pulse())
            except NdsclustError as e:
                log.debug("event=pulse_failed server=%s error=%s", me, e)
            nets = networks.due() if networks is not None else None
            if networks is not None and nets is not None:
                try:
                    store.write_networks(me, nets)
                    networks.done(nets)
                except NdsclustError as e:
                    networks.failed(me, e)
            if last:
                return
    finally:
        store.close()


def pulse_writer(
    parts: Parts, report: Callable[[], LivenessReport | None], stop: threading.Event
) -> Callable[[], None] | None:
    """The pulse thread's body for this sentinel's parts (None: no pulse connection)."""
    channel, dc, store = parts.directory_channel, parts.cfg.directory_channel, parts.pulse_store
    if store is None:
        return None
    counter = iter(range(time.time_ns(), 1 << 63))
    pulse = channel.next_pulse if channel is not None else lambda: next(counter)
    interval = dc.interval if dc is not None else SLOW_INTERVAL
    nets = Networks()
    return lambda: write_pulses(parts.cfg.server, store, pulse, interval, stop, report, nets)

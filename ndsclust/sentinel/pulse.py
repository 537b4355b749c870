"""The pulse writer: advances this server's directory pulse (claim 44) through a
connection of its own, so a slow provider never delays the main loop and vice versa.

The same write carries this sentinel's liveness report (``serverwatch.py``) whenever it
changed since the last one written, so the report costs no write of its own. Without the
directory channel the pulse still goes out, every ``SLOW_INTERVAL``, for the report and
for readers that judge a server by the age of its pulse (``ndsclust status``).
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

if TYPE_CHECKING:
    from ndsclust.sentinel.build import Parts

log = logging.getLogger("ndsclust.sentinel")

# Seconds between pulses when the directory channel is not configured.
SLOW_INTERVAL = 1.0


def write_pulses(
    me: ServerName,
    store: Store,
    next_pulse: Callable[[], int],
    interval: float,
    stop: threading.Event,
    report: Callable[[], LivenessReport | None] = lambda: None,
) -> None:
    """Until ``stop``: one pulse every ``interval``, with the report when it changed; once
    more when ``stop`` is set, so the last report (a stopped sentinel's) goes out. A failed
    write is logged at debug level (the peers see the pulse stop, which is what the channel
    is for); its report is sent again with the next pulse."""
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
    return lambda: write_pulses(parts.cfg.server, store, pulse, interval, stop, report)

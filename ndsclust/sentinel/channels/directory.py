"""The ``directory`` channel: each sentinel advances a pulse counter in the pulse database,
and its peers see it change through their watch (claim 44: a status that keeps changing
means the server is operational, a constant one that it failed).

This class only keeps the books. The store writes the pulse entry (with ``next_pulse()``)
and its watch reports every pulse it sees (``pulse_seen``); both may run on other threads
than the loop that calls ``observe``. A pulse first seen is a baseline, not a sign of life:
the watch's initial refresh also delivers the last pulse of servers that died long ago.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping

from ndsclust.errors import ConfigError
from ndsclust.model import ServerName
from ndsclust.sentinel.channels import HeardChannel

_COUNTERS = ("pulses_written", "pulses_seen", "changes", "after_stop")


class DirectoryChannel(HeardChannel):
    name = "directory"

    def __init__(
        self, *, me: ServerName, timeout: float = 3.0, first_pulse: int | None = None
    ) -> None:
        """``first_pulse`` defaults to the wall clock in nanoseconds, so the counter keeps
        growing across restarts and a restarted sentinel's first pulse is a change."""
        if not timeout > 0:
            raise ConfigError(
                "channels.directory", [f"timeout: {timeout} must be a positive number of seconds"]
            )
        self.timeout = timeout
        self._me = me
        self._lock = threading.Lock()
        self._pulse = time.time_ns() if first_pulse is None else first_pulse
        self._seen: dict[ServerName, int] = {}
        self._heard: dict[ServerName, float] = {}
        self._stats: Counter[str] = Counter({c: 0 for c in _COUNTERS})
        self._stopped = False

    def start(self) -> None:
        """Nothing to open: the store does the directory I/O and feeds this channel."""

    def stop(self) -> None:
        """Pulses the watch still delivers after this are counted and ignored."""
        with self._lock:
            self._stopped = True

    def next_pulse(self) -> int:
        """The counter value the store writes next into this server's pulse entry."""
        with self._lock:
            self._pulse += 1
            self._stats["pulses_written"] += 1
            return self._pulse

    def pulse_seen(self, server: ServerName, counter: int, now: float) -> None:
        """The watch saw ``server``'s pulse entry hold ``counter`` at monotonic time ``now``."""
        with self._lock:
            if self._stopped:
                self._stats["after_stop"] += 1
                return
            if server == self._me:
                return  # our own write coming back through the watch
            self._stats["pulses_seen"] += 1
            previous = self._seen.get(server)
            self._seen[server] = counter
            if previous is not None and previous != counter:
                self._stats["changes"] += 1
                # The store's threads may report out of order: last heard never goes back.
                self._heard[server] = max(now, self._heard.get(server, now))

    def stats(self) -> Mapping[str, int]:
        with self._lock:
            out = dict(self._stats)
        out["degraded"] = 0
        return out

"""FIG. 6 step 614: run nothing until the local provider has caught up with its peers.

A thread at start-up probes the local provider's contextCSNs against the peers' every
``interval`` and sets ``done`` once they agree; the decision core shows
``replication-pending`` meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ndsclust.model import ServerName
from ndsclust.sentinel.logline import log_event

# Probe: (caught up?, why not).
Probe = Callable[[], tuple[bool, str]]


class ReplicationCheck:
    """Sets ``done`` once ``probe`` answers yes (at once without a local provider)."""

    def __init__(
        self, me: ServerName, probe: Probe | None, stop: threading.Event, interval: float
    ) -> None:
        self.me = me
        self.done = threading.Event()
        self._probe = probe
        self._stop = stop
        self._interval = interval

    def run(self) -> None:
        if self._probe is None:
            self.done.set()
            return
        last_reason = ""
        while not self._stop.is_set():
            ok, why = self._probe()
            if ok:
                self.done.set()
                log_event(logging.INFO, "replication_caught_up", server=self.me)
                return
            if why != last_reason:
                log_event(logging.WARNING, "replication_pending", server=self.me, why=why)
                last_reason = why
            self._stop.wait(self._interval)

"""The channels' problem counters in the log: every ``STATS_INTERVAL``, one line per
channel whose drop or error counters grew (forged, replayed or malformed heartbeats; an
unwritable disk slot), or that reports itself degraded."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from ndsclust.model import ServerName
from ndsclust.sentinel.logline import log_event

# How often channel counters (dropped heartbeats, disk errors) are compared and logged.
STATS_INTERVAL = 10.0
PROBLEM_PREFIXES = ("dropped_", "bad_", "wrong_")


class Counted(Protocol):
    def stats(self) -> Mapping[str, int]: ...


class ChannelReport:
    def __init__(self, me: ServerName, channels: Mapping[str, Counted]) -> None:
        self.me = me
        self.channels = channels
        self._due = 0.0
        self._seen: dict[str, dict[str, int]] = {}

    def tick(self, now: float) -> None:
        """Log what grew since the last report, once ``STATS_INTERVAL`` has passed."""
        if now < self._due:
            return
        self._due = now + STATS_INTERVAL
        for name, ch in self.channels.items():
            stats = dict(ch.stats())
            before = self._seen.get(name, {})
            grew = {
                k: v - before.get(k, 0)
                for k, v in stats.items()
                if (k.startswith(PROBLEM_PREFIXES) or k.endswith("_errors"))
                and v > before.get(k, 0)
            }
            self._seen[name] = stats
            if grew or stats.get("degraded"):
                log_event(
                    logging.WARNING,
                    "channel_counters",
                    server=self.me,
                    channel=name,
                    degraded=stats.get("degraded", 0),
                    **{k: f"+{v}" for k, v in sorted(grew.items())},
                )

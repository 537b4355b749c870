"""What the main loop publishes for the sentinel's HTTP face, and how.

``Publisher.publish`` runs on the loop after every cycle and swaps in one frozen
``Published`` (a single reference assignment), which the HTTP thread reads as ``latest``:
it never takes a lock the loop needs and never sees half a cycle. Without an ``http``
section nothing is published, and the HTTP modules (``httpd.py``, ``metrics.py``, with
asyncio and prometheus_client) are not even imported: a sentinel without HTTP pays
nothing for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ndsclust.config import HttpSettings
from ndsclust.errors import ConfigError
from ndsclust.ldapstore.watch import Watch
from ndsclust.model import ServerName
from ndsclust.sentinel.channels import Channel
from ndsclust.sentinel.logline import log_event
from ndsclust.sentinel.view import View

if TYPE_CHECKING:
    from ndsclust.sentinel.httpd import StatusServer


@dataclass(frozen=True, slots=True)
class Published:
    """One sentinel at the end of one loop cycle (see the module docstring).

    ``view`` is None until the directory view is complete (the watch's refresh);
    ``heard`` maps channel -> peer -> monotonic time last heard; ``stale_after``: a
    snapshot older than this means the loop is stuck."""

    server: ServerName
    at: float
    started: float
    stale_after: float
    view: View | None = None
    heard: Mapping[str, Mapping[ServerName, float]] = field(default_factory=dict)
    channel_stats: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    fenced: bool = False
    rejoin_pending: bool = False
    rejoin_grace: bool = False
    leaving: bool = False
    write_provider: str = ""
    watch_provider: str | None = None
    watch_heard: float = 0.0
    watch_reconnects: int = 0
    watch_full_refreshes: int = 0
    cycles: int = 0
    cycle_seconds: float = 0.0  # the last decision cycle
    cycle_seconds_sum: float = 0.0  # all decision cycles since start
    cycle_seconds_max: float = 0.0


def peers_heard(
    observations: Mapping[str, Mapping[ServerName, float]], me: ServerName
) -> dict[str, dict[ServerName, float]]:
    """Channel -> peer -> last heard, without this server itself."""
    return {ch: {s: t for s, t in obs.items() if s != me} for ch, obs in observations.items()}


class Publisher:
    """The main loop's side: after every cycle ``publish`` swaps in one ``Published`` (a
    single reference assignment, read by the HTTP thread as ``latest``). Does nothing, and
    serves nothing, without an ``http`` section."""

    def __init__(
        self,
        me: ServerName,
        settings: HttpSettings | None,
        channels: Mapping[str, Channel],
        watch: Watch,
        *,
        started: float,
        stale_after: float,
    ) -> None:
        self.me = me
        self.settings = settings
        self.channels = channels
        self.watch = watch
        self.started = started
        self.stale_after = stale_after
        self.latest: Published | None = None
        self.http: StatusServer | None = None
        self._cycles = 0
        self._sum = self._max = self._last = 0.0

    def start(self) -> bool:
        """Serve HTTP when configured; False (logged) when its address cannot be had."""
        if self.settings is None:
            return True
        try:
            from ndsclust.sentinel.httpd import start_status_server  # only with HTTP on

            self.http = start_status_server(self.settings, lambda: self.latest, self.me)
        except ConfigError as e:
            log_event(logging.ERROR, "http_failed", server=self.me, error=str(e).replace("\n", ";"))
            return False
        return True

    def stop(self) -> None:
        if self.http is not None:
            self.http.stop()

    def publish(
        self,
        now: float,
        *,
        view: View | None,
        took: float | None,
        fenced: bool,
        rejoin_pending: bool,
        rejoin_grace: bool,
        leaving: bool,
        write_provider: str,
    ) -> None:
        """``took``: seconds the cycle's decision took, None when it decided nothing."""
        if self.http is None:
            return
        if took is not None:
            self._cycles += 1
            self._sum += took
            self._max = max(self._max, took)
            self._last = took
        w = self.watch.stats
        self.latest = Published(
            server=self.me,
            at=now,
            started=self.started,
            stale_after=self.stale_after,
            view=view,
            heard=peers_heard({n: ch.observe(now) for n, ch in self.channels.items()}, self.me),
            channel_stats={n: dict(ch.stats()) for n, ch in self.channels.items()},
            fenced=fenced,
            rejoin_pending=rejoin_pending,
            rejoin_grace=rejoin_grace,
            leaving=leaving,
            write_provider=write_provider,
            watch_provider=self.watch.provider,
            watch_heard=self.watch.heard,
            watch_reconnects=w.reconnects,
            watch_full_refreshes=w.full_refreshes,
            cycles=self._cycles,
            cycle_seconds=self._last,
            cycle_seconds_sum=self._sum,
            cycle_seconds_max=self._max,
        )

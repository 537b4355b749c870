"""Server liveness in the directory: this sentinel's report, its peers' reports, and the
``server_down`` / ``server_up`` / ``server_isolated`` events (docs/operating.md, "Server
states").

Each cycle the loop hands ``ServerWatch`` what its channels hear (the detector's view,
without counting degraded channels as hearing). From it comes this sentinel's
``LivenessReport``, which the pulse writer (``pulse.py``) publishes on this server's pulse
entry when it changes; the peers' reports arrive through the pulse watch. Every sentinel
judges every server from those reports (``ndsclust.liveness.judge``), and the one
``recorder_for`` each server records its changes, so a change is one event whoever
observed it. A change counts once it has held for ``settle`` seconds, so a channel at the
edge of its timeout does not make a stream of events. The first judgement of a server is a
baseline: a sentinel that starts records nothing about what it finds.

A peer whose sentinel says it is stopping or stopped (SIGTERM) is no place for programs:
the loop's view shows it in maintenance (``stopping()``), so nothing fails back to a
server whose sentinel is leaving (docs/design.md section 3, "Operator actions").
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore import entries
from ndsclust.liveness import Judgement, Status, judge, recorder_for, report_of
from ndsclust.model import LivenessReport, SentinelState, Server, ServerName
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.logline import log_event
from ndsclust.sentinel.recorder import NO_TAG, Record

# What the pulse watch must deliver of a pulse entry for its report (and networks, pulse.py).
REPORT_ATTRS = ("ndsclustHeard", "ndsclustChannels", "ndsclustSentinelState", "ndsclustNetwork")
REPORT_KEYS = ("cn", *(a.lower() for a in REPORT_ATTRS))
# Seconds a new server state must hold before it is recorded.
SETTLE = 1.0

KIND_OF = {
    Status.DOWN: EventKind.SERVER_DOWN,
    Status.UP: EventKind.SERVER_UP,
    Status.ISOLATED: EventKind.SERVER_ISOLATED,
}


class Records(Protocol):
    def put(self, record: Record) -> None: ...


class PulseSeen(Protocol):
    """The directory channel (``channels/directory.py``): a peer's pulse counter seen."""

    def pulse_seen(self, server: ServerName, counter: int, now: float) -> None: ...


@dataclass(slots=True)
class _Track:
    recorded: Status  # the state last taken as known (recorded, or the baseline)
    candidate: Status  # the state judged now ...
    since: float  # ... since this monotonic time


@dataclass(frozen=True, slots=True)
class Change:
    kind: EventKind
    server: ServerName
    text: str


class Changes:
    """Pure: which servers' liveness changed for good, and which of those this server
    records. ``update`` takes the judgements of one cycle; ``unknown`` servers (still in
    this sentinel's start-up grace) are not judged."""

    def __init__(self, me: ServerName, settle: float = SETTLE) -> None:
        self.me = me
        self.settle = settle
        self._tracks: dict[ServerName, _Track] = {}

    def update(
        self,
        now: float,
        judged: Mapping[ServerName, Judgement],
        alive: Collection[ServerName],
        unknown: Collection[ServerName] = (),
    ) -> list[Change]:
        out: list[Change] = []
        for name in [n for n in self._tracks if n not in judged]:
            del self._tracks[name]
        for name, j in judged.items():
            if name == self.me or name in unknown:
                continue
            t = self._tracks.get(name)
            if t is None:
                self._tracks[name] = _Track(j.alive, j.alive, now)
                continue
            if j.alive is not t.candidate:
                t.candidate, t.since = j.alive, now
            if t.candidate is t.recorded or now - t.since < self.settle:
                continue
            t.recorded = t.candidate
            if recorder_for(name, alive) == self.me:
                out.append(
                    Change(KIND_OF[t.recorded], name, f"{name} is {t.recorded.value}: {j.reason}")
                )
        return out


class ServerWatch:
    """The shell's part: peers' reports in, this sentinel's report and events out."""

    def __init__(
        self,
        me: ServerName,
        channels: Collection[str],
        records: Records,
        settle: float = SETTLE,
        pulses: PulseSeen | None = None,
    ) -> None:
        self.me = me
        self._pulses = pulses
        self._parsed: dict[str, tuple[object, ...]] = {}  # DN -> the report's values parsed
        self._channels = frozenset(channels)
        self._records = records
        self._changes = Changes(me, settle)
        self.reports: dict[ServerName, LivenessReport] = {}
        self.networks: dict[ServerName, frozenset[str]] = {}  # published (View.networks)
        self.sentinel = SentinelState.RUNNING
        # What the pulse writer publishes next; replaced whole, read from its thread.
        self.report: LivenessReport | None = None

    def pulse_entry(
        self, dn: str, attrs: Mapping[str, Sequence[str]], now: float | None = None
    ) -> None:
        """A pulse entry the pulse watch delivered: its counter to the directory channel
        (at monotonic time ``now``), and its report kept. A report is parsed only when its
        values changed: a pulse rewrites the counter ten times a second, the report
        seldom."""
        low = {k.lower(): v for k, v in attrs.items()}
        if self._pulses is not None and now is not None:
            try:
                server = ServerName(low["cn"][0])
                counter = int(low["ndsclustpulse"][0])
            except (KeyError, IndexError, ValueError):
                server = self.me
            if server != self.me:
                self._pulses.pulse_seen(server, counter, now)
        key = tuple(tuple(low.get(a, ())) for a in REPORT_KEYS)
        if self._parsed.get(dn) == key:
            return
        try:
            pulse = entries.parse_pulse(dn, {k: list(v) for k, v in attrs.items()})
        except EntryInvalid:
            self._parsed.pop(dn, None)
            return  # a pulse entry that breaks the rules says nothing
        self._parsed[dn] = key
        if pulse.server == self.me:
            return
        if pulse.networks is None:
            self.networks.pop(pulse.server, None)
        else:
            self.networks[pulse.server] = pulse.networks
        if pulse.report is None:
            self.reports.pop(pulse.server, None)
        else:
            self.reports[pulse.server] = pulse.report

    def stopping(self) -> frozenset[ServerName]:
        """Peers whose sentinel says it is stopping or has stopped."""
        return frozenset(
            s for s, r in self.reports.items() if r.sentinel is not SentinelState.RUNNING
        )

    def cycle(
        self,
        now: float,
        heard: Liveness,
        servers: Mapping[ServerName, Server],
        judging: bool,
    ) -> list[Change]:
        """Publish what ``heard`` says; while ``judging`` (a current view, not fenced, not
        rejoining), record the servers' changes this server is the recorder of."""
        self.report = report_of(heard.seen, heard.grace, self._channels, self.sentinel)
        if not judging:
            return []
        reports = {**self.reports, self.me: self.report}
        alive = {self.me} | heard.visible()
        judged = judge({n: s.state for n, s in servers.items()}, reports, alive)
        changes = self._changes.update(now, judged, alive, heard.grace)
        for c in changes:
            level = logging.INFO if c.kind is EventKind.SERVER_UP else logging.WARNING
            log_event(level, c.kind.value, server=self.me, peer=c.server, text=c.text)
            self._records.put(Record(c.kind, NO_TAG, c.text))
            self._records.put(Record(c.kind, NO_TAG, c.text, notify=True))
        return changes

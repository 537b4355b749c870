"""Server states from the sentinels' liveness (docs/operating.md, "Server states").

Every sentinel publishes on its own pulse entry which channels it hears each peer on now
(``model.LivenessReport``: one writer per entry, written only when it changes). From the
reports of the servers that are alive, any reader (``ndsclust status``, ``servers list``,
``doctor`` and the sentinels themselves) judges every server the same way:

- ``down``: no live server hears it on any channel, or its sentinel said it stopped;
- ``isolated``: it is heard, but not on the lan channel where its peers have one (its
  network is cut while the shared disk, or the directory over another network, still
  carries its pulse): the network is at fault, not its sentinel;
- ``maintenance``: it is alive and an operator put it in maintenance, or its sentinel is
  stopping (handing its programs on);
- ``up``: otherwise.

Pure: the caller says which servers are alive (the CLI: those whose pulse is fresh; a
sentinel: itself and the peers its channels hear) and passes their reports.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from ndsclust.model import LivenessReport, SentinelState, ServerName, ServerState

NONE = "-"  # the channel list of a peer heard on no channel


class Status(Enum):
    """A server's state as the liveness shows it (what ``status`` prints)."""

    UP = "up"
    DOWN = "down"
    ISOLATED = "isolated"
    MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class Judgement:
    """One server's state. ``alive`` is the liveness part alone (up, down or isolated; what
    ``server_*`` events follow); ``state`` adds maintenance on top of a live server;
    ``heard`` the channels some live peer hears it on; ``by`` each reporting peer's
    channels; ``reason`` the state in words."""

    alive: Status
    state: Status
    heard: frozenset[str]
    by: tuple[tuple[ServerName, frozenset[str]], ...]
    reason: str


# -- the report on the pulse entry ---------------------------------------------------------


def encode_report(report: LivenessReport) -> dict[str, list[str]]:
    """The report as attribute values (``ndsclustHeard``, ``ndsclustChannels``,
    ``ndsclustSentinelState``); the auxiliary class comes with it."""
    heard = [f"{peer}:{','.join(sorted(chans)) or NONE}" for peer, chans in sorted(report.heard)]
    out: dict[str, list[str]] = {
        "ndsclustHeard": heard,
        "ndsclustChannels": sorted(report.channels),
        "ndsclustSentinelState": [report.sentinel.value],
    }
    return out


def parse_report(
    heard: Sequence[str], channels: Sequence[str], state: str | None
) -> LivenessReport | None:
    """The report in a pulse entry's values; None when it carries none (an older sentinel).
    ValueError naming the value that is wrong."""
    if state is None and not heard and not channels:
        return None
    try:
        sentinel = SentinelState(state or SentinelState.RUNNING.value)
    except ValueError:
        allowed = ", ".join(s.value for s in SentinelState)
        raise ValueError(f"{state!r} is not a sentinel state; allowed: {allowed}") from None
    pairs: list[tuple[ServerName, frozenset[str]]] = []
    for value in heard:
        peer, sep, chans = value.partition(":")
        if not sep or not peer:
            raise ValueError(f"{value!r} is not peer:channels (e.g. beta:lan,disk or beta:-)")
        names = frozenset() if chans == NONE else frozenset(c for c in chans.split(",") if c)
        pairs.append((ServerName(peer), names))
    return LivenessReport(tuple(sorted(pairs)), frozenset(channels), sentinel)


def report_of(
    seen: Mapping[ServerName, frozenset[str]],
    grace: Collection[ServerName],
    channels: Collection[str],
    sentinel: SentinelState,
) -> LivenessReport:
    """What a sentinel publishes from its detector's view: peers still in its start-up
    grace are left out (nothing is known of them yet)."""
    heard = tuple(sorted((p, frozenset(c)) for p, c in seen.items() if p not in grace))
    return LivenessReport(heard, frozenset(channels), sentinel)


# -- judging -------------------------------------------------------------------------------


def judge(
    entries: Mapping[ServerName, ServerState],
    reports: Mapping[ServerName, LivenessReport],
    alive: Collection[ServerName],
) -> dict[ServerName, Judgement]:
    """Every server of ``entries`` (name -> its entry's state) judged from the ``reports``
    of the servers in ``alive``. A server no live peer reports on (a one-server cluster,
    sentinels that publish no report) is up while it is alive itself, down otherwise."""
    out: dict[ServerName, Judgement] = {}
    for name in sorted(entries):
        by: dict[ServerName, frozenset[str]] = {}
        lan = False
        for peer in alive:
            report = reports.get(peer)
            if peer == name or report is None:
                continue
            chans = report.hears(name)
            if chans is not None:
                by[peer] = chans
                lan = lan or "lan" in report.channels
        heard = frozenset().union(*by.values()) if by else frozenset[str]()
        own = reports.get(name)
        if own is not None and own.sentinel is SentinelState.STOPPED:
            live, why = Status.DOWN, "its sentinel was stopped"
        elif not by:
            live, why = (
                (Status.UP, "no peer reports on it; it is alive")
                if name in alive
                else (Status.DOWN, "it is silent and no live peer hears it")
            )
        elif not heard:
            live, why = Status.DOWN, f"no live peer hears it ({', '.join(sorted(by))})"
        elif lan and "lan" not in heard:
            live = Status.ISOLATED
            why = f"heard on {','.join(sorted(heard))} only, not on lan: its network is cut"
        else:
            live, why = Status.UP, f"heard on {','.join(sorted(heard))}"
        state = live
        if live is not Status.DOWN:
            if own is not None and own.sentinel is SentinelState.STOPPING:
                state, why = Status.MAINTENANCE, "its sentinel is stopping"
            elif entries[name] is ServerState.MAINTENANCE:
                state, why = Status.MAINTENANCE, "an operator put it in maintenance"
        out[name] = Judgement(live, state, heard, tuple(sorted(by.items())), why)
    return out


def judge_by_pulse(
    entries: Mapping[ServerName, ServerState],
    stamps: Mapping[ServerName, float | None],
    reports: Mapping[ServerName, LivenessReport | None],
    now: float,
    stale: float,
) -> dict[ServerName, Judgement]:
    """``judge`` as a reader outside the sentinels does: alive are the servers whose pulse
    (``stamps``, wall time) is at most ``stale`` seconds old."""
    alive = pulse_alive(list(entries), stamps, now, stale)
    return judge(entries, {n: r for n, r in reports.items() if r is not None}, alive)


def recorder_for(subject: ServerName, alive: Collection[ServerName]) -> ServerName | None:
    """The one server that records ``subject``'s changes as events: the first live server
    by name other than ``subject``. Servers that hear each other agree on it, so a change is
    one event, not one per observer; two sides of a partition each record theirs."""
    others = sorted(s for s in alive if s != subject)
    return others[0] if others else None


def pulse_alive(
    names: Collection[ServerName],
    stamps: Mapping[ServerName, float | None],
    now: float,
    stale: float,
) -> frozenset[ServerName]:
    """The servers whose pulse was written at most ``stale`` seconds before ``now`` (wall
    time): what a reader outside the sentinels takes as alive."""
    return frozenset(n for n in names if (t := stamps.get(n)) is not None and now - t <= stale)

"""Server states and channels as ``status`` and ``servers`` show them: the liveness
reports on the pulse entries judged by ``ndsclust.liveness`` (docs/operating.md, "Server
states"). Pure: the commands read the entries and pass them with the wall time.

A reader outside the sentinels takes as alive the servers whose pulse was written at most
``stale`` seconds ago (by the writer's clock: keep the clocks in step, as ``doctor``
checks); the reports of those servers say who hears whom.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ndsclust.cli import common
from ndsclust.liveness import Judgement, judge_by_pulse, pulse_alive
from ndsclust.model import Pulse, Server, ServerName

CHANNELS = ("lan", "disk", "directory")


def judgements(
    servers: Mapping[ServerName, Server],
    pulses: Mapping[ServerName, Pulse],
    now: float,
    stale: float,
) -> dict[ServerName, Judgement]:
    """Every server's state from the pulses' reports."""
    return judge_by_pulse(
        {n: s.state for n, s in servers.items()},
        {n: common.parse_time(p.stamp) for n, p in pulses.items()},
        {n: p.report for n, p in pulses.items()},
        now,
        stale,
    )


def state_json(j: Judgement, fresh: bool) -> dict[str, Any]:
    """The keys a server's JSON gets from its judgement. ``seen``: the channels some live
    peer hears it on; where no live peer reports (sentinels of an older version), the
    directory pulse alone."""
    seen = sorted(j.heard) if j.by else (["directory"] if fresh else [])
    return {
        "state": j.state.value,
        "liveness": j.alive.value,
        "reason": j.reason,
        "seen": seen,
        "heard_by": {peer: sorted(chans) for peer, chans in j.by},
    }


def channel_data(
    servers: Mapping[ServerName, Server],
    pulses: Mapping[ServerName, Pulse],
    now: float,
    stale: float,
) -> list[dict[str, Any]]:
    """One row per (observer, peer) as the observer's report says: which of its configured
    channels hear the peer now (like ``corosync-cfgtool -s``). A report of a server whose
    pulse is stale is shown with ``current`` false: it is what it heard when it fell
    silent."""
    stamps = {n: common.parse_time(p.stamp) for n, p in pulses.items()}
    alive = pulse_alive(list(servers), stamps, now, stale)
    out = []
    for observer in sorted(pulses):
        report = pulses[observer].report
        if report is None:
            continue
        for peer, chans in report.heard:
            out.append(
                {
                    "observer": observer,
                    "peer": peer,
                    "current": observer in alive,
                    "channels": {
                        c: ("heard" if c in chans else "silent") for c in sorted(report.channels)
                    },
                    "sentinel": report.sentinel.value,
                }
            )
    return out


def channel_rows(data: list[dict[str, Any]]) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The table of ``channel_data``: columns and rows."""
    extra = sorted({c for d in data for c in d["channels"]} - set(CHANNELS))
    names = [c for c in CHANNELS if any(c in d["channels"] for d in data)] + extra
    columns = ("observer", "peer", *names, "report")
    rows = [
        {
            "observer": d["observer"],
            "peer": d["peer"],
            **{c: d["channels"].get(c, "-") for c in names},
            "report": "current" if d["current"] else "stale (observer silent)",
        }
        for d in data
    ]
    return columns, rows

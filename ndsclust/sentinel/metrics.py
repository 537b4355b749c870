"""What the sentinel's HTTP face shows, as pure functions of one published snapshot.

The main loop publishes a ``Published`` after every cycle (``http_status.py``): a frozen
record holding the cycle's ``View`` and a few counters. From it:

- ``health``: whether this sentinel runs with a complete view (``GET /health``);
- ``app_health``: whether this server hosts an application and its program runs
  (``GET /app/<tag>``, what a load balancer polls);
- ``families``/``render``: the Prometheus text exposition (``GET /metrics``), metric names
  under ``ndsclust_`` with the labels ``tag``, ``server``, ``peer``, ``channel`` (and
  ``state``, ``reason``, ``provider`` where a value names one).

``now`` is monotonic seconds (docs/style.md section 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from ndsclust.model import Tag
from ndsclust.sentinel.http_status import Published
from ndsclust.sentinel.view import View, running

# Channel counters that count something dropped or refused (the rest are traffic).
DROP_PREFIXES = ("dropped_", "bad_", "wrong_")


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    problems: tuple[str, ...]

    def json(self, p: Published | None) -> dict[str, Any]:
        return {
            "server": p.server if p else None,
            "ok": self.ok,
            "problems": list(self.problems),
            "watch_provider": p.watch_provider if p else None,
            "write_provider": p.write_provider if p else None,
        }


def health(p: Published | None, now: float) -> Health:
    """200 (``ok``) only when the sentinel runs its loop with a complete, current view of
    the directory and takes part in the cluster; every reason it does not is listed."""
    if p is None:
        return Health(False, ("the sentinel has not finished a loop cycle yet",))
    problems = []
    if now - p.at > p.stale_after:
        problems.append(f"the main loop has not finished a cycle for {now - p.at:.1f}s")
    if p.view is None:
        problems.append("the directory view is not complete yet (the watch is refreshing)")
    elif not p.view.replication_caught_up:
        problems.append("this server's provider has not caught up with its peers")
    if p.watch_provider is None:
        problems.append("the directory watch is reconnecting")
    if p.fenced:
        problems.append("fenced: this server is cut off from its peers")
    if p.rejoin_pending:
        problems.append("rejoining: proving its view current before it decides")
    if p.leaving:
        problems.append("stopping: handing its programs on")
    return Health(not problems, tuple(problems))


def app_health(p: Published | None, tag: str, now: float) -> tuple[bool, dict[str, Any]]:
    """Whether this server hosts ``tag`` and its program runs here, with a small JSON body
    saying so (or why not)."""
    body: dict[str, Any] = {"tag": tag, "server": p.server if p else None, "hosted": False}
    if p is None or p.view is None:
        return False, {**body, "reason": "the directory view is not complete yet"}
    if now - p.at > p.stale_after:
        return False, {**body, "reason": f"the main loop is stuck ({now - p.at:.1f}s)"}
    app = p.view.apps.get(Tag(tag))
    if app is None:
        return False, {**body, "reason": "no such application"}
    body.update(host=app.host, state=str(app.state))
    if app.host != p.server:
        return False, {**body, "reason": f"hosted by {app.host or 'nobody'}"}
    body["hosted"] = True
    if p.fenced:
        return False, {**body, "reason": "fenced: this server is stopping its programs"}
    proc = p.view.procs.get(app.tag)
    if not running(proc) or proc is None:
        return False, {**body, "reason": "its program does not run here"}
    return True, {**body, "pid": proc.pid, "running": True}


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"ndsclust_{name}", doc, labels=list(labels))


def families(p: Published, now: float) -> Iterator[Metric]:
    """The metric families of one snapshot (see README, "Metrics and health over HTTP")."""
    me = p.server
    up = _gauge("sentinel_up", "1: this sentinel runs; the server label names it", ("server",))
    up.add_metric([me], 1)
    yield up
    h = health(p, now)
    g = _gauge("healthy", "1 when GET /health answers 200", ("server",))
    g.add_metric([me], int(h.ok))
    yield g
    g = _gauge("uptime_seconds", "seconds since this sentinel started", ("server",))
    g.add_metric([me], max(0.0, now - p.started))
    yield g
    for name, doc, value in (
        ("fenced", "1 while this server is cut off and fences itself", p.fenced),
        ("rejoin_pending", "1 while a rejoin proves the view current", p.rejoin_pending),
        ("rejoin_grace", "1 within the grace after a rejoin (no starts)", p.rejoin_grace),
        ("view_complete", "1 once the watch's refresh is done", p.view is not None),
        (
            "replication_caught_up",
            "1 once this server's provider caught up with its peers (FIG. 6 step 614)",
            p.view is not None and p.view.replication_caught_up,
        ),
        (
            "starts_held",
            "1 while no program is started here (start or rejoin grace)",
            p.view is not None and p.view.starts_held,
        ),
    ):
        g = _gauge(name, doc, ("server",))
        g.add_metric([me], int(bool(value)))
        yield g
    g = _gauge(
        "write_provider", "1 for the provider this sentinel writes to", ("server", "provider")
    )
    if p.write_provider:
        g.add_metric([me, p.write_provider], 1)
    yield g
    g = _gauge(
        "watch_connected", "1 while the directory watch follows a provider", ("server", "provider")
    )
    g.add_metric([me, p.watch_provider or ""], int(p.watch_provider is not None))
    yield g
    g = _gauge(
        "watch_lag_seconds",
        "seconds since the directory watch last heard its provider (a change or a keepalive)",
        ("server",),
    )
    g.add_metric([me], max(0.0, now - p.watch_heard) if p.watch_heard else float("nan"))
    yield g
    c = CounterMetricFamily(
        "ndsclust_watch_reconnects", "reconnections of the directory watch", labels=["server"]
    )
    c.add_metric([me], p.watch_reconnects)
    yield c
    c = CounterMetricFamily(
        "ndsclust_watch_full_refreshes",
        "searches sent without a cookie (full refreshes)",
        labels=["server"],
    )
    c.add_metric([me], p.watch_full_refreshes)
    yield c
    s = SummaryMetricFamily(
        "ndsclust_decision_cycle_seconds",
        "decision cycles (view, decide, hand to the executor)",
        labels=["server"],
    )
    s.add_metric([me], count_value=p.cycles, sum_value=p.cycle_seconds_sum)
    yield s
    g = _gauge("decision_cycle_last_seconds", "the last decision cycle", ("server",))
    g.add_metric([me], p.cycle_seconds)
    yield g
    g = _gauge("decision_cycle_max_seconds", "the longest decision cycle since start", ("server",))
    g.add_metric([me], p.cycle_seconds_max)
    yield g
    yield from _peer_families(p, now)
    yield from _channel_families(p)
    if p.view is not None:
        yield from _app_families(p, p.view)


def _peer_families(p: Published, now: float) -> Iterator[Metric]:
    alive = _gauge(
        "peer_alive",
        "1 when the peer is alive on some channel (or in startup grace)",
        ("server", "peer"),
    )
    heard = _gauge(
        "peer_channel_alive",
        "1 when the channel hears the peer within its timeout",
        ("server", "peer", "channel"),
    )
    age = _gauge(
        "peer_last_heard_seconds",
        "seconds since the channel last heard the peer",
        ("server", "peer", "channel"),
    )
    if p.view is not None:
        liveness = p.view.liveness
        for peer in sorted(liveness.seen):
            alive.add_metric([p.server, peer], int(liveness.alive(peer)))
            chans = liveness.channels(peer)
            for ch in sorted(liveness.configured):
                heard.add_metric([p.server, peer, ch], int(ch in chans))
    for ch, peers in sorted(p.heard.items()):
        for peer, at in sorted(peers.items()):
            age.add_metric([p.server, peer, ch], max(0.0, now - at))
    yield alive
    yield heard
    yield age


def _channel_families(p: Published) -> Iterator[Metric]:
    degraded = _gauge(
        "channel_degraded",
        "1 while the channel cannot do its job at this end",
        ("server", "channel"),
    )
    drops = CounterMetricFamily(
        "ndsclust_channel_drops",
        "packets, slots or pulses dropped, by reason",
        labels=["server", "channel", "reason"],
    )
    counters = CounterMetricFamily(
        "ndsclust_channel_events", "other channel counters", labels=["server", "channel", "counter"]
    )
    for ch, stats in sorted(p.channel_stats.items()):
        degraded.add_metric([p.server, ch], stats.get("degraded", 0))
        for k, v in sorted(stats.items()):
            if k == "degraded":
                continue
            if k.startswith(DROP_PREFIXES) or k.endswith("_errors"):
                drops.add_metric([p.server, ch, k], v)
            else:
                counters.add_metric([p.server, ch, k], v)
    yield degraded
    yield drops
    yield counters


def _app_families(p: Published, view: View) -> Iterator[Metric]:
    """One family at a time, each from its own pass over the applications: with 10 000 of
    them only one family's samples are alive at once while the text is written."""
    apps = sorted(view.apps.items())
    local = [(tag, proc) for tag, _ in apps if (proc := view.procs.get(tag)) is not None]
    hists = [(tag, h) for tag, _ in apps if (h := view.history.get(tag)) is not None]
    g = _gauge(
        "app_host",
        "1 for the server the directory names as the application's host",
        ("tag", "server"),
    )
    for tag, app in apps:
        if app.host is not None:
            g.add_metric([tag, app.host], 1)
    yield g
    g = _gauge("app_state", "1 for the application's state (its reason left out)", ("tag", "state"))
    for tag, app in apps:
        g.add_metric([tag, app.state.state.value], 1)
    yield g
    g = _gauge(
        "app_running_here", "1 when this server runs the application's program", ("tag", "server")
    )
    for tag, proc in local:
        g.add_metric([tag, p.server], int(running(proc)))
    yield g
    g = _gauge(
        "app_restarts",
        "restarts in place of this server's copy since it was loaded (claim 57)",
        ("tag", "server"),
    )
    for tag, proc in local:
        g.add_metric([tag, p.server], len(proc.restarts))
    yield g
    g = _gauge(
        "app_failovers", "failovers of the application in the audit trail's recent moves", ("tag",)
    )
    for tag, h in hists:
        g.add_metric([tag], len(h.failovers))
    yield g
    g = _gauge("app_handoffs", "hand-offs for repeated failure in the recent moves", ("tag",))
    for tag, h in hists:
        g.add_metric([tag], len(h.failures))
    yield g


class _One(Collector):
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterator[Metric]:
        yield self._family


def render(p: Published, now: float) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of one snapshot, written one family at
    a time so that only one family's samples and lines are alive at once."""
    return b"".join(generate_latest(_One(family)) for family in families(p, now))

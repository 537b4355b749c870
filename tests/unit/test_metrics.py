"""The sentinel's HTTP face as pure functions: health rules, /app/<tag>, metric rendering."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from ndsclust.sentinel.http_status import Published
from ndsclust.sentinel.metrics import app_health, health, render
from ndsclust.sentinel.procs import ProcState
from ndsclust.sentinel.view import History
from tests.unit.test_decide import WEB, A, B, G, app, lab, proc

NOW = 1000.0


def published(**kw: object) -> Published:
    view = lab(app(A), me=A, procs=[proc()], history={WEB: History(failovers=(990.0,))})
    base = Published(
        server=A,
        at=NOW - 0.1,
        started=NOW - 60,
        stale_after=5.0,
        view=view,
        heard={"lan": {B: NOW - 0.2, G: NOW - 3.0}},
        channel_stats={"lan": {"sent": 10, "dropped_bad_mac": 2, "degraded": 0}},
        write_provider="ldaps://198.18.0.1:636",
        watch_provider="ldaps://198.18.0.1:636",
        watch_heard=NOW - 0.5,
        watch_reconnects=1,
        cycles=7,
        cycle_seconds=0.002,
        cycle_seconds_sum=0.03,
        cycle_seconds_max=0.01,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_health_is_ok_with_a_complete_current_view() -> None:
    h = health(published(), NOW)
    assert h.ok and h.problems == ()


def test_health_lists_every_reason_it_is_not_ok() -> None:
    p = published(view=None, watch_provider=None, fenced=True, rejoin_pending=True, leaving=True)
    h = health(p, NOW)
    assert not h.ok
    text = " ".join(h.problems)
    for word in ("not complete", "reconnecting", "fenced", "rejoining", "stopping"):
        assert word in text
    assert not health(None, NOW).ok


def test_health_sees_a_stuck_loop() -> None:
    h = health(published(at=NOW - 6), NOW)
    assert not h.ok and "has not finished a cycle for 6.0s" in h.problems[0]


def test_health_waits_for_replication_catch_up() -> None:
    p = published()
    assert p.view is not None
    h = health(replace(p, view=replace(p.view, replication_caught_up=False)), NOW)
    assert not h.ok and "caught up" in h.problems[0]


def test_app_is_200_only_on_its_host_with_its_program_running() -> None:
    ok, body = app_health(published(), "web", NOW)
    assert ok and body["pid"] == 4242 and body["host"] == A
    # Hosted elsewhere: 503, saying where.
    other = published(view=lab(app(B), me=A))
    ok, body = app_health(other, "web", NOW)
    assert not ok and body["reason"] == "hosted by beta" and not body["hosted"]
    # Host here, program not running (stopping, paused, none).
    for procs in ([], [proc(ProcState.STOPPING)], [proc(ProcState.STARTING, paused=True)]):
        ok, body = app_health(published(view=lab(app(A), me=A, procs=procs)), "web", NOW)
        assert not ok and body["hosted"] and "does not run" in body["reason"]


def test_app_is_503_when_fenced_stale_unknown_or_incomplete() -> None:
    assert not app_health(published(fenced=True), "web", NOW)[0]
    assert not app_health(published(at=NOW - 10), "web", NOW)[0]
    assert not app_health(published(view=None), "web", NOW)[0]
    ok, body = app_health(published(), "nope", NOW)
    assert not ok and body["reason"] == "no such application"


def test_metrics_parse_and_carry_the_snapshot() -> None:
    s = samples(render(published(), NOW))
    me = (("server", "alpha"),)
    assert s[("ndsclust_sentinel_up", me)] == 1
    assert s[("ndsclust_healthy", me)] == 1
    assert s[("ndsclust_app_host", (("server", "alpha"), ("tag", "web")))] == 1
    assert s[("ndsclust_app_state", (("state", "running"), ("tag", "web")))] == 1
    assert s[("ndsclust_app_running_here", (("server", "alpha"), ("tag", "web")))] == 1
    assert s[("ndsclust_app_failovers", (("tag", "web"),))] == 1
    peer = (("channel", "lan"), ("peer", "gamma"), ("server", "alpha"))
    assert abs(s[("ndsclust_peer_last_heard_seconds", peer)] - 3.0) < 1e-6
    assert s[("ndsclust_peer_channel_alive", peer)] == 1
    assert s[("ndsclust_peer_alive", (("peer", "beta"), ("server", "alpha")))] == 1
    drop = (("channel", "lan"), ("reason", "dropped_bad_mac"), ("server", "alpha"))
    assert s[("ndsclust_channel_drops_total", drop)] == 2
    assert s[("ndsclust_watch_reconnects_total", me)] == 1
    assert abs(s[("ndsclust_watch_lag_seconds", me)] - 0.5) < 1e-6
    assert s[("ndsclust_decision_cycle_seconds_count", me)] == 7
    provider = (("provider", "ldaps://198.18.0.1:636"), ("server", "alpha"))
    assert s[("ndsclust_write_provider", provider)] == 1
    assert s[("ndsclust_fenced", me)] == 0


def test_metrics_follow_a_failover() -> None:
    moved = published(view=lab(app(B), me=A, dead=[A]))
    s = samples(render(moved, NOW))
    assert ("ndsclust_app_host", (("server", "alpha"), ("tag", "web"))) not in s
    assert s[("ndsclust_app_host", (("server", "beta"), ("tag", "web")))] == 1


def test_metrics_before_the_view_is_complete_have_no_applications() -> None:
    s = samples(render(published(view=None), NOW))
    assert s[("ndsclust_view_complete", (("server", "alpha"),))] == 0
    assert not any(name.startswith("ndsclust_app_") for name, _ in s)


def test_a_dead_peer_shows_on_every_channel() -> None:
    s = samples(render(published(view=lab(app(A), me=A, dead=[B])), NOW))
    assert s[("ndsclust_peer_alive", (("peer", "beta"), ("server", "alpha")))] == 0
    for ch in ("lan", "disk"):
        key = (("channel", ch), ("peer", "beta"), ("server", "alpha"))
        assert s[("ndsclust_peer_channel_alive", key)] == 0

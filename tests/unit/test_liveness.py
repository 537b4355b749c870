"""Server states from the sentinels' liveness reports (``ndsclust.liveness``), the events
they make (``sentinel/serverwatch.py``), and what ``status``, ``servers --channels`` and
``doctor`` show of them: pure, no server."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime

import pytest

from ndsclust.cli import liveness_view
from ndsclust.cli.status_cmd import status_data
from ndsclust.doctor import Facts, Level, PulseReading, diagnose
from ndsclust.doctor.liveness import check_liveness
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.store import Snapshot
from ndsclust.liveness import (
    Status,
    encode_report,
    judge,
    parse_report,
    pulse_alive,
    recorder_for,
    report_of,
)
from ndsclust.model import (
    LivenessReport,
    Pulse,
    SentinelState,
    Server,
    ServerName,
    ServerState,
)
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.recorder import Record
from ndsclust.sentinel.serverwatch import Changes, ServerWatch

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
ALL = (A, B, C)
ENTRIES = {n: ServerState.UP for n in ALL}
EVERY = frozenset({"lan", "disk", "directory"})
STAMP = "20261119110640.000000Z"
NOW = datetime(2026, 11, 19, 11, 6, 42, tzinfo=UTC).timestamp()  # STAMP + 2 s


def report(
    heard: Mapping[ServerName, Collection[str]],
    sentinel: SentinelState = SentinelState.RUNNING,
    channels: frozenset[str] = EVERY,
) -> LivenessReport:
    return LivenessReport(
        tuple(sorted((p, frozenset(c)) for p, c in heard.items())), channels, sentinel
    )


def healthy(me: ServerName) -> LivenessReport:
    return report({p: set(EVERY) for p in ALL if p != me})


# -- the report on the pulse entry --------------------------------------------------------


def test_report_round_trips_through_the_entry_values() -> None:
    r = report({B: {"lan", "disk"}, C: set()}, SentinelState.STOPPING)
    values = encode_report(r)
    assert values["ndsclustHeard"] == ["beta:disk,lan", "gamma:-"]
    assert values["ndsclustSentinelState"] == ["stopping"]
    back = parse_report(
        values["ndsclustHeard"], values["ndsclustChannels"], values["ndsclustSentinelState"][0]
    )
    assert back == r
    assert back is not None and back.hears(C) == frozenset() and back.hears(A) is None


def test_a_pulse_without_report_has_none_and_a_bad_one_is_refused() -> None:
    assert parse_report([], [], None) is None
    with pytest.raises(ValueError, match="peer:channels"):
        parse_report(["beta"], [], "running")
    with pytest.raises(ValueError, match="sentinel state"):
        parse_report([], [], "sleeping")
    attrs = {"cn": ["alpha"], "ndsclustPulse": ["7"], "ndsclustHeard": ["beta:lan"]}
    pulse = entries.parse_pulse("cn=alpha,o=p", attrs)
    assert pulse.report is not None and pulse.report.hears(B) == frozenset({"lan"})


def test_report_leaves_out_peers_in_start_up_grace() -> None:
    r = report_of({B: frozenset({"lan"}), C: frozenset()}, {C}, ["lan"], SentinelState.RUNNING)
    assert r.heard == ((B, frozenset({"lan"})),)


# -- judging (issue points 6 and 7) --------------------------------------------------------


def test_every_server_heard_on_every_channel_is_up() -> None:
    judged = judge(ENTRIES, {n: healthy(n) for n in ALL}, ALL)
    assert {n: j.state for n, j in judged.items()} == {n: Status.UP for n in ALL}
    assert judged[A].heard == EVERY and dict(judged[A].by) == {B: EVERY, C: EVERY}


def test_a_killed_server_is_down_once_its_peers_hear_it_on_no_channel() -> None:
    reports = {A: healthy(A), B: report({A: set(), C: EVERY}), C: report({A: set(), B: EVERY})}
    judged = judge(ENTRIES, reports, {B, C})  # alpha's pulse is stale: its report is old
    assert judged[A].state is Status.DOWN and judged[A].heard == frozenset()
    assert "no live peer hears it" in judged[A].reason
    assert judged[B].state is Status.UP and judged[C].state is Status.UP


def test_a_server_cut_off_on_the_lan_but_heard_on_the_disk_is_isolated() -> None:
    cut = {"disk", "directory"}
    reports = {
        A: report({B: cut, C: cut}),
        B: report({A: cut, C: EVERY}),
        C: report({A: cut, B: EVERY}),
    }
    judged = judge(ENTRIES, reports, ALL)
    assert judged[A].state is Status.ISOLATED and judged[A].alive is Status.ISOLATED
    assert "not on lan" in judged[A].reason and "network" in judged[A].reason
    # beta and gamma hear each other on the lan: they are up
    assert judged[B].state is Status.UP and judged[C].state is Status.UP


def test_a_two_server_lan_cut_shows_both_isolated() -> None:
    two = {A: ServerState.UP, B: ServerState.UP}
    reports = {A: report({B: {"disk"}}), B: report({A: {"disk"}})}
    judged = judge(two, reports, {A, B})
    assert judged[A].state is Status.ISOLATED and judged[B].state is Status.ISOLATED


def test_without_a_lan_channel_nobody_is_isolated() -> None:
    disk_only = frozenset({"disk"})
    reports = {B: report({A: {"disk"}}, channels=disk_only)}
    assert judge(ENTRIES, reports, {A, B})[A].state is Status.UP


def test_a_stopped_sentinel_is_down_at_once_and_a_stopping_one_in_maintenance() -> None:
    stopped = {**{n: healthy(n) for n in ALL}, A: report({}, SentinelState.STOPPED)}
    assert judge(ENTRIES, stopped, ALL)[A].state is Status.DOWN
    assert judge(ENTRIES, stopped, ALL)[A].reason == "its sentinel was stopped"
    stopping = {**stopped, A: report({}, SentinelState.STOPPING)}
    j = judge(ENTRIES, stopping, ALL)[A]
    assert j.state is Status.MAINTENANCE and j.alive is Status.UP


def test_maintenance_shows_on_a_live_server_only() -> None:
    entries_ = {**ENTRIES, A: ServerState.MAINTENANCE}
    reports = {n: healthy(n) for n in ALL}
    assert judge(entries_, reports, ALL)[A].state is Status.MAINTENANCE
    dead = {**reports, B: report({A: set()}), C: report({A: set()})}
    assert judge(entries_, dead, {B, C})[A].state is Status.DOWN


def test_a_silent_observers_report_does_not_count() -> None:
    reports = {B: report({A: EVERY}), C: report({A: set()})}
    assert judge(ENTRIES, reports, {A, C})[A].state is Status.DOWN  # beta is silent
    assert judge(ENTRIES, reports, {A, B, C})[A].state is Status.UP


def test_without_reports_a_server_is_up_while_its_pulse_is_fresh() -> None:
    assert judge(ENTRIES, {}, {A})[A].state is Status.UP
    assert judge(ENTRIES, {}, {A})[B].state is Status.DOWN


def test_pulse_alive_by_wall_time() -> None:
    assert pulse_alive(ALL, {A: 100.0, B: 90.0, C: None}, 104.0, 5.0) == {A}


# -- one event per change ------------------------------------------------------------------


def test_the_recorder_is_the_first_live_server_other_than_the_subject() -> None:
    assert recorder_for(A, ALL) == B
    assert recorder_for(B, ALL) == A
    assert recorder_for(A, {A, C}) == C
    assert recorder_for(A, {A}) is None


def down_view() -> dict[ServerName, Status]:
    return {A: Status.DOWN, B: Status.UP, C: Status.UP}


def judged_as(states: dict[ServerName, Status]) -> dict:  # type: ignore[type-arg]
    entries_ = {n: ServerState.UP for n in states}
    out = {}
    for n, s in states.items():
        heard = {"lan", "disk"} if s is Status.UP else ({"disk"} if s is Status.ISOLATED else set())
        out[n] = heard
    reports = {obs: report({n: out[n] for n in states if n != obs}) for obs in states if out[obs]}
    alive = {n for n in states if out[n]}
    return judge(entries_, reports, alive)


def test_a_change_is_recorded_once_by_one_observer_after_it_settled() -> None:
    up = judged_as({A: Status.UP, B: Status.UP, C: Status.UP})
    down = judged_as(down_view())
    beta, gamma = Changes(B, settle=1.0), Changes(C, settle=1.0)
    for w in (beta, gamma):
        assert w.update(0.0, up, ALL) == []  # the first look is a baseline
        assert w.update(1.0, down, {B, C}) == []  # not settled yet
    got = beta.update(2.5, down, {B, C}) + gamma.update(2.5, down, {B, C})
    assert [(c.kind, c.server) for c in got] == [(EventKind.SERVER_DOWN, A)]
    assert got[0].text.startswith("alpha is down: no live peer hears it")
    assert beta.update(3.0, down, {B, C}) == []  # recorded: no repeat
    back = beta.update(4.0, up, ALL) + beta.update(5.5, up, ALL)
    assert [(c.kind, c.server) for c in back] == [(EventKind.SERVER_UP, A)]


def test_a_state_that_flaps_inside_the_settle_time_makes_no_event() -> None:
    up = judged_as({A: Status.UP, B: Status.UP, C: Status.UP})
    iso = judged_as({A: Status.ISOLATED, B: Status.UP, C: Status.UP})
    assert iso[A].alive is Status.ISOLATED
    w = Changes(B, settle=1.0)
    w.update(0.0, up, ALL)
    for t in (0.5, 1.0, 1.5, 2.0):
        assert w.update(t, iso if t % 1 else up, ALL) == []
    assert [c.kind for c in w.update(3.0, iso, ALL) + w.update(4.1, iso, ALL)] == [
        EventKind.SERVER_ISOLATED
    ]


def test_a_server_in_start_up_grace_is_not_judged() -> None:
    w = Changes(B, settle=0.0)
    down = judged_as(down_view())
    assert w.update(0.0, down, {B, C}, unknown={A}) == []
    assert w.update(1.0, down, {B, C}) == []  # first judged now: a baseline, no event


# -- what the commands show ---------------------------------------------------------------


def pulses(**reports: LivenessReport) -> dict[ServerName, Pulse]:
    return {ServerName(n): Pulse(ServerName(n), 1, STAMP, report=r) for n, r in reports.items()}


def test_status_shows_the_channels_actually_heard() -> None:
    cut = {"disk", "directory"}
    servers = {n: Server(n) for n in ALL}
    data = status_data(
        Snapshot({}, servers, ()),
        pulses(
            alpha=report({B: cut, C: cut}),
            beta=report({A: cut, C: EVERY}),
            gamma=report({A: cut, B: EVERY}),
        ),
        [],
        NOW,
    )
    alpha, beta, _ = data["servers"]
    assert alpha["state"] == "isolated" and alpha["seen"] == ["directory", "disk"]
    assert alpha["heard_by"] == {"beta": ["directory", "disk"], "gamma": ["directory", "disk"]}
    assert beta["state"] == "up" and beta["seen"] == ["directory", "disk", "lan"]


def test_servers_channels_table_like_corosync_cfgtool() -> None:
    servers = {n: Server(n) for n in ALL}
    ps = pulses(beta=report({A: {"disk"}, C: EVERY}))
    rows = liveness_view.channel_data(servers, ps, NOW, 5.0)
    assert rows[0]["observer"] == "beta" and rows[0]["peer"] == "alpha"
    assert rows[0]["channels"] == {"directory": "silent", "disk": "heard", "lan": "silent"}
    columns, table = liveness_view.channel_rows(rows)
    assert columns == ("observer", "peer", "lan", "disk", "directory", "report")
    assert table[1] == {
        "observer": "beta",
        "peer": "gamma",
        "lan": "heard",
        "disk": "heard",
        "directory": "heard",
        "report": "current",
    }
    stale = liveness_view.channel_data(servers, ps, NOW + 60, 5.0)
    assert liveness_view.channel_rows(stale)[1][0]["report"] == "stale (observer silent)"


# -- doctor -------------------------------------------------------------------------------


def readings(stamp: dict[ServerName, float], **reports: LivenessReport) -> dict:  # type: ignore[type-arg]
    return {n: PulseReading(n, 1, stamp.get(n, 100.0), 100.0, reports.get(n)) for n in ALL}


def test_doctor_names_the_network_for_an_isolated_server_not_the_sentinel() -> None:
    cut = {"disk"}
    servers = {n: Server(n, (f"198.18.0.{i}:7946",)) for i, n in enumerate(ALL, 1)}
    # alpha's pulse no longer reaches the directory (the lan carries it), its disk pulse does
    rs = readings(
        {A: 10.0},
        alpha=report({B: cut, C: cut}),
        beta=report({A: cut, C: EVERY}),
        gamma=report({A: cut, B: EVERY}),
    )
    found = [f for f in check_liveness(servers, rs, 101.0, 5.0) if f.subject == A]
    assert found[0].level is Level.PROBLEM and "isolated" in found[0].message
    assert "network of alpha" in found[0].fix and "198.18.0.1:7946" in found[0].fix
    every = [f for f in diagnose(Facts(now=101.0, servers=servers, pulses=rs)) if f.subject == A]
    assert {f.check for f in every} >= {"liveness", "pulse"}
    assert not [f for f in every if "systemctl" in f.fix], every


def test_doctor_says_a_dead_server_is_down() -> None:
    servers = {n: Server(n) for n in ALL}
    rs = readings({A: 10.0}, beta=report({A: set(), C: EVERY}), gamma=report({A: set()}))
    (alpha,) = [f for f in check_liveness(servers, rs, 101.0, 5.0) if f.subject == A]
    assert alpha.level is Level.PROBLEM and "is down" in alpha.message
    assert "systemctl status ndsclust-sentinel" in alpha.fix


# -- the sentinel's part ---------------------------------------------------------------------


class Collect(list[Record]):
    def put(self, record: Record) -> None:
        self.append(record)


def pulse_attrs(name: str, r: LivenessReport) -> dict[str, list[str]]:
    return {"cn": [name], "ndsclustPulse": ["5"], **encode_report(r)}


def test_serverwatch_publishes_what_it_hears_and_records_a_death_once() -> None:
    records = Collect()
    beta = ServerWatch(B, ["lan", "disk", "directory"], records, settle=0.0)
    servers = {n: Server(n) for n in ALL}
    beta.pulse_entry("cn=gamma,o=p", pulse_attrs("gamma", healthy(C)))
    heard = Liveness(B, EVERY, {A: EVERY, C: EVERY})
    beta.cycle(0.0, heard, servers, judging=True)
    assert beta.report is not None and beta.report.hears(A) == EVERY
    assert records == []  # a baseline
    gone = Liveness(B, EVERY, {A: frozenset(), C: EVERY})
    beta.pulse_entry("cn=gamma,o=p", pulse_attrs("gamma", report({A: set(), B: EVERY})))
    beta.cycle(1.0, gone, servers, judging=True)
    beta.cycle(2.0, gone, servers, judging=True)
    assert [(r.kind, r.notify) for r in records] == [
        (EventKind.SERVER_DOWN, False),
        (EventKind.SERVER_DOWN, True),
    ]
    assert records[0].text.startswith("alpha is down")


def test_serverwatch_names_peers_whose_sentinel_is_leaving() -> None:
    w = ServerWatch(B, ["lan"], Collect())
    w.pulse_entry("cn=alpha,o=p", pulse_attrs("alpha", report({}, SentinelState.STOPPING)))
    w.pulse_entry("cn=gamma,o=p", pulse_attrs("gamma", healthy(C)))
    assert w.stopping() == {A}
    w.pulse_entry("cn=alpha,o=p", pulse_attrs("alpha", report({}, SentinelState.STOPPED)))
    assert w.stopping() == {A}
    w.pulse_entry("cn=alpha,o=p", pulse_attrs("alpha", healthy(A)))
    assert w.stopping() == frozenset()

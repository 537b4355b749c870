"""The decision core over many cycles: three servers decide on one directory.

``World`` is the simulation engine of ``ndsclust simulate`` (``ndsclust/simulate/engine.py``)
with one application: each cycle every live server decides on its copy of the directory,
then the servers' actions run one server after another against the write provider
(compare-and-swaps checked, a failed one drops the rest of that tag's actions), then
programs advance. The invariant checked after every single action: no two live servers run
(or are still stopping) the same program (``DoubleRun``).

Timing follows docs/design.md section 4 with one second per cycle: a cut-off server fences
itself after one silent cycle, its peers declare it dead only after ``DETECT`` silent
cycles; a sentinel that starts counts its peers alive until it had time to hear them and
starts nothing it hosts for one failover timeout. The hard cases at the end use the
engine's replication lag and lost answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndsclust.model import (
    App,
    AppState,
    AppType,
    Server,
    ServerName,
    StateValue,
    Tag,
)
from ndsclust.sentinel.actions import Action, Claim, EventKind, Release
from ndsclust.sentinel.decide import decide
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.view import Policy, View
from ndsclust.simulate.engine import Answer, DoubleRun, Sim, Timing

A, B, G = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
ALL = (A, B, G)
WEB = Tag("web")
CHANNELS = frozenset({"lan", "disk"})
DETECT = 3  # cycles of silence before peers call a server dead (failover_timeout)
FENCE = 1  # cycles of silence before a cut-off server fences itself (fence_timeout)
TIMING = Timing(step=1.0, failover=DETECT, fence=FENCE, channels=CHANNELS)


def web(*, auto: bool = True, aware: bool = False, resources: Iterable[str] = ()) -> App:
    return App(
        tag=WEB,
        type=AppType.AWARE if aware else AppType.CAPABLE,
        command=("/usr/bin/web",),
        primary=A,
        backups=(B, G),
        host=A,
        resources=frozenset(resources),
        auto_recover=auto,
        state=StateValue(AppState.RUNNING),
    )


class World(Sim):
    """The engine with ``web`` running on its host, as the scenarios below start."""

    def __init__(
        self,
        app: App,
        resources: dict[ServerName, set[str]] | None = None,
        policy: Policy = Policy(),
        **options: object,
    ) -> None:
        resources = resources if resources is not None else {s: set(app.resources) for s in ALL}
        host = app.host
        assert host is not None
        super().__init__(
            [Server(s, resources=frozenset(resources.get(s, ()))) for s in ALL],
            [app],
            timing=TIMING,
            policy=policy,
            procs={host: [ProcInfo(app.tag, ProcState.RUNNING, 100, 0.0)]},
            **options,  # type: ignore[arg-type]
        )

    @property
    def web(self) -> App:
        return self.app(WEB)

    def isolate(self, s: str) -> None:
        self.heal()
        super().isolate(s)


# ------------------------------------------------------------------------ scenarios


def test_fig7a_fig7b_three_servers_failover_then_auto_failback() -> None:
    w = World(web())
    w.step(2)
    assert w.running_on(WEB) == [A] and w.events == []
    w.kill(A)
    w.step(DETECT)
    assert w.web.host == B
    w.step()
    assert w.running_on(WEB) == [B] and w.web.state == StateValue(AppState.RUNNING)
    assert w.kinds() == [EventKind.FAILOVER]
    assert (B, EventKind.FAILOVER, WEB) in w.notes
    w.revive(A)
    # beta keeps it until it has heard alpha for alpha's start hold (DETECT cycles), then
    # unloads, releases, and alpha loads it.
    w.step(7)
    assert w.web.host == A and w.running_on(WEB) == [A]
    assert w.web.state == StateValue(AppState.RUNNING)
    assert w.kinds() == [EventKind.FAILOVER, EventKind.REGISTRATION, EventKind.FAILBACK]


def test_fig7b_manual_failback_waits_for_the_operator() -> None:
    w = World(web(auto=False))
    w.kill(A)
    w.step(DETECT + 1)
    w.revive(A)
    w.step(5)
    assert w.web.host == B and w.running_on(WEB) == [B]
    assert w.web.state == StateValue(AppState.AWAITING_FAILBACK)
    assert w.notes.count((B, EventKind.AWAITING_FAILBACK, WEB)) == 1
    w.request(WEB, "failback")
    w.step(5)
    assert w.web.host == A and w.running_on(WEB) == [A] and w.web.request is None
    assert w.web.state == StateValue(AppState.RUNNING)


def test_fig7b_aware_program_waits_paused_on_primary_and_starts_on_failback() -> None:
    w = World(web(aware=True, auto=False))
    w.kill(A)
    w.step(DETECT + 1)
    w.revive(A)
    w.step(3)
    paused_copy = w.procs[A][WEB]
    assert paused_copy.paused and paused_copy.state is ProcState.STARTING
    assert w.running_on(WEB) == [B]
    w.request(WEB, "failback")
    w.step(5)
    assert w.running_on(WEB) == [A] and w.web.host == A


def test_fig7a_resource_missing_on_beta_gamma_takes_over() -> None:
    w = World(web(resources={"san1"}), resources={A: {"san1"}, G: {"san1"}})
    w.kill(A)
    w.step(DETECT + 1)
    assert w.web.host == G and w.running_on(WEB) == [G]
    missing = [e for e in w.events if e.kind is EventKind.RESOURCE_MISSING]
    assert sorted((e.server, e.text) for e in missing) == [
        (B, "beta lacks san1: cannot take it over from alpha"),
        (G, "skipped beta lacks san1"),
    ]


def test_fig7a_two_takers_race_only_one_wins_the_swap() -> None:
    # beta and gamma each believe they are the taker (beta hears gamma; gamma thinks beta is
    # dead too): both claim on the same snapshot; the swap lets one through.
    w = World(web())
    w.kill(A)
    w.now = 10.0
    views = {
        B: View(
            apps=w.apps,
            servers=w.servers,
            liveness=Liveness(B, CHANNELS, {A: frozenset(), G: CHANNELS}),
        ),
        G: View(
            apps=w.apps,
            servers=w.servers,
            liveness=Liveness(G, CHANNELS, {A: frozenset(), B: frozenset()}),
        ),
    }
    decisions = {s: decide(v, s, w.now, w.policy) for s, v in views.items()}
    assert isinstance(decisions[B][0], Claim) and isinstance(decisions[G][0], Claim)
    w.execute(B, decisions[B])
    w.execute(G, decisions[G])
    w.advance(B)
    w.advance(G)
    assert w.web.host == B and w.running_on(WEB) == [B]


def test_fig4e_partition_heals_loser_unloads() -> None:
    # Both ran a copy while cut off; the directory converged on beta (the later write).
    w = World(web())
    w.procs[B][WEB] = ProcInfo(WEB, ProcState.RUNNING, 300, 0.0)
    w.set_app(WEB, host=B)
    w.checking = False
    w.step()  # alpha unloads during this cycle
    w.checking = True
    w.check()
    assert w.procs[A][WEB].state is ProcState.EXITED
    assert (A, EventKind.DOUBLE_CLAIM, WEB) in [(e.server, e.kind, e.tag) for e in w.events]
    w.step(5)
    # Then the ordinary failback brings it home, one copy at a time.
    assert w.running_on(WEB) == [A] and w.web.host == A


def test_fencing_isolated_host_stops_before_peers_take_over() -> None:
    w = World(web())
    w.isolate(A)
    w.step(DETECT + 2)
    assert w.web.host == B and w.running_on(WEB) == [B]
    assert w.procs[A][WEB].state is ProcState.EXITED
    assert (A, EventKind.FENCED, WEB) in w.notes
    w.heal()
    w.step(6)
    assert w.web.host == A and w.running_on(WEB) == [A]


def test_claim57_program_keeps_failing_is_handed_off_and_not_sent_back() -> None:
    w = World(web())
    for _ in range(3):
        w.crash(WEB)
        w.step(2)
        assert w.web.host == A and w.running_on(WEB) == [A]
    w.crash(WEB)
    w.step(3)
    assert w.web.host == B and w.running_on(WEB) == [B]
    assert w.kinds() == [EventKind.RESTART] * 3 + [EventKind.HANDOFF, EventKind.FAILBACK_HELD]
    w.step(10)
    assert w.web.host == B  # it kept failing on the primary: the failback is held
    assert w.web.state.state is AppState.RUNNING and "failback held" in w.web.state.reason


def test_host_failures_are_never_damped_a_dead_host_never_keeps_it() -> None:
    # Blocker 2 of issue 14: failovers from dead hosts are no program failure. However often
    # the host dies, the application goes to a live server, and fails back when it returns.
    w = World(web())
    for _ in range(6):
        host = w.web.host
        assert host is not None
        w.kill(host)
        w.step(DETECT + 1)
        assert w.web.host != host and w.running_on(WEB) == [w.web.host]
        w.revive(host)
        w.step(8)
        assert w.web.host == A and w.running_on(WEB) == [A]
    assert EventKind.FLAP_DAMPED not in w.kinds()
    assert w.kinds().count(EventKind.FAILOVER) == 6


def test_issue14_blocker1_a_program_that_cannot_start_tries_every_server_in_order() -> None:
    # The example's programs.cwd is missing on alpha and beta: the program fails to start on
    # the primary, then on the first backup, and gamma, the second backup, gets its turn.
    w = World(web())
    w.broken = {A, B}
    w.crash(WEB)
    w.step(30)
    assert w.web.host == G and w.running_on(WEB) == [G]
    handoffs = [(e.server, e.text) for e in w.events if e.kind is EventKind.HANDOFF]
    assert [srv for srv, _ in handoffs] == [A, B]
    assert "handoff to beta" in handoffs[0][1] and "handoff to gamma" in handoffs[1][1]
    assert EventKind.FLAP_DAMPED not in w.kinds()
    # alpha and beta failed within the window: no failback to alpha, and status says why.
    assert "failback held" in w.web.state.reason and "ndsclust cleanup web" in w.web.state.reason


def test_issue14_blocker1_given_up_after_every_server_and_cleanup_places_it_again() -> None:
    w = World(web())
    w.broken = set(ALL)
    w.crash(WEB)
    w.step(40)
    assert w.running_on(WEB) == []
    assert w.web.state.state is AppState.FAILED and w.web.host == G
    assert "failed on alpha, failed on beta, failed on gamma" in w.web.state.reason
    assert "ndsclust cleanup web" in w.web.state.reason
    assert w.kinds().count(EventKind.FAILED) == 1
    # The operator creates the directory and cleans up: it runs again, and with the
    # failures forgotten it fails back to its primary.
    w.broken = set()
    w.request(WEB, "cleanup")
    w.step(12)
    assert w.web.request is None and EventKind.CLEANUP in w.kinds()
    assert w.web.host == A and w.running_on(WEB) == [A]
    assert w.web.state == StateValue(AppState.RUNNING)


def test_issue14_blocker2_start_up_handoffs_never_keep_it_on_a_dead_host() -> None:
    # Hand-offs at start-up (alpha could not start it), then SIGKILL of the host, twice:
    # the auto-recover application always goes to a live server, and comes back to alpha
    # once the failures are cleaned up.
    w = World(web())
    w.broken = {A}
    w.crash(WEB)
    w.step(12)
    assert w.web.host == B and w.running_on(WEB) == [B]
    w.broken = set()
    for _ in range(2):
        host = w.web.host
        assert host is not None
        w.kill(host)
        w.step(DETECT + 2)
        assert w.web.host not in (None, host) and w.running_on(WEB) == [w.web.host]
        w.revive(host)
        w.step(6)
    assert EventKind.FLAP_DAMPED not in w.kinds()
    assert w.web.state.state is AppState.RUNNING
    w.request(WEB, "cleanup")
    w.step(12)
    assert w.web.host == A and w.running_on(WEB) == [A]


def test_maintenance_moves_app_away_and_back_after() -> None:
    w = World(web())
    w.maintenance(A, True)
    w.step(4)
    assert w.web.host == B and w.running_on(WEB) == [B]
    w.maintenance(A, False)
    w.step(5)
    assert w.web.host == A and w.running_on(WEB) == [A]


def test_operator_unload_then_load() -> None:
    w = World(web())
    w.request(WEB, "unload")
    w.step(3)
    assert w.web.host is None and w.runners(WEB) == [] and w.web.request is None
    assert w.web.state == StateValue(AppState.STOPPED)
    w.step(3)
    assert w.runners(WEB) == []
    w.request(WEB, "load")
    w.step(2)
    assert w.web.host == A and w.running_on(WEB) == [A]


def test_operator_migrate_stays_on_target() -> None:
    w = World(web())
    w.request(WEB, "migrate:gamma")
    w.step(4)
    assert w.web.host == G and w.running_on(WEB) == [G]
    w.step(10)
    assert w.web.host == G and w.running_on(WEB) == [G]
    w.request(WEB, "migrate:alpha")
    w.step(4)
    assert w.web.host == A and w.running_on(WEB) == [A]


# ------------------------------------------------------------- random faults, invariants

OPS = st.one_of(
    st.tuples(st.just("kill"), st.sampled_from(ALL)),
    st.tuples(st.just("revive"), st.sampled_from(ALL)),
    st.tuples(st.just("isolate"), st.sampled_from(ALL)),
    st.tuples(st.just("heal"), st.just(A)),
    st.tuples(st.just("crash"), st.just(A)),
    st.tuples(st.just("maintenance_on"), st.sampled_from(ALL)),
    st.tuples(st.just("maintenance_off"), st.sampled_from(ALL)),
    st.tuples(
        st.sampled_from(
            [
                "load",
                "unload",
                "failback",
                "migrate:alpha",
                "migrate:beta",
                "migrate:gamma",
                "migrate:delta",
            ]
        ),
        st.just(A),
    ),
)


def play(w: World, ops: list[tuple[tuple[str, ServerName], int]]) -> None:
    """Each operation, then its cycles (``DoubleRun`` is raised after any action that runs
    a second copy); then every fault is undone: healed, revived, out of maintenance."""
    for (op, server), cycles in ops:
        match op:
            case "kill":
                w.kill(server)
            case "revive":
                w.revive(server)
            case "isolate":
                w.isolate(server)
            case "heal":
                w.heal()
            case "crash":
                w.crash(WEB)
            case "maintenance_on":
                w.maintenance(server, True)
            case "maintenance_off":
                w.maintenance(server, False)
            case _:
                w.request(WEB, op)
        w.step(cycles)
    w.heal()
    for s in ALL:
        w.revive(s)
        w.maintenance(s, False)


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(st.tuples(OPS, st.integers(1, 4)), max_size=12),
    auto=st.booleans(),
    aware=st.booleans(),
    beta_lacks=st.booleans(),
)
def test_random_faults_never_run_twice_and_settle_on_the_host(
    ops: list[tuple[tuple[str, ServerName], int]], auto: bool, aware: bool, beta_lacks: bool
) -> None:
    resources = {A: {"san1"}, B: set() if beta_lacks else {"san1"}, G: {"san1"}}
    w = World(web(auto=auto, aware=aware, resources={"san1"}), resources=resources)
    play(w, ops)
    w.step(40)
    app = w.web
    assert app.request is None
    if app.host is None:
        assert w.runners(WEB) == []
    elif app.state.state not in (AppState.FAILED, AppState.ERROR):
        assert w.running_on(WEB) == [app.host], (app, w.events[-5:])
        assert app.state.state in (AppState.RUNNING, AppState.AWAITING_FAILBACK), app


# ------------------------------------------------- hard cases: lag and lost answers


def first(kind: type, answer: Answer, hit: list[Action]) -> Callable[[ServerName, Action], Answer]:
    """Answers ``answer`` to the first action of type ``kind`` (kept in ``hit``), ``ok`` else."""

    def answers(me: ServerName, action: Action) -> Answer:
        if isinstance(action, kind) and not hit:
            hit.append(action)
            return answer
        return "ok"

    return answers


def test_lost_answer_of_a_claim_the_taker_starts_from_what_the_directory_says() -> None:
    # beta's claim reaches the write provider but its answer is lost: the shell drops the
    # Load (and the event) with it; the next cycle beta finds itself host and loads.
    lost: list[Action] = []
    w = World(web(), answers=first(Claim, "lost", lost))
    w.kill(A)
    w.step(DETECT + 3)
    assert lost and w.web.host == B and w.running_on(WEB) == [B]
    assert EventKind.FAILOVER not in w.kinds()  # it went with the lost answer


def test_a_refused_release_is_decided_again_and_the_migrate_still_happens() -> None:
    refused: list[Action] = []
    w = World(web(), answers=first(Release, "refused", refused))
    w.request(WEB, "migrate:gamma")
    w.settle()
    assert refused and w.web.host == G and w.running_on(WEB) == [G] and w.web.request is None


def test_lagging_new_host_loads_only_once_its_copy_names_it() -> None:
    w = World(web(), lag={G: 4.0})
    w.request(WEB, "migrate:gamma")
    w.step(3)
    assert w.web.host == G and w.runners(WEB) == []  # alpha let go; gamma has not seen it
    w.settle()
    assert w.running_on(WEB) == [G]


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(st.tuples(OPS, st.integers(1, 4)), max_size=10),
    lag=st.dictionaries(st.sampled_from(ALL), st.integers(0, 3)),
    lose=st.sets(st.integers(0, 40), max_size=4),
)
def test_random_faults_with_lag_and_lost_answers_never_run_twice(
    ops: list[tuple[tuple[str, ServerName], int]], lag: dict[ServerName, int], lose: set[int]
) -> None:
    writes = [0]

    def answers(me: ServerName, action: Action) -> Answer:
        writes[0] += 1
        return "lost" if writes[0] in lose else "ok"

    w = World(web(), lag={s: float(v) for s, v in lag.items()}, answers=answers)
    play(w, ops)
    w.settle()
    app = w.web
    if app.host is not None and app.state.state not in (AppState.FAILED, AppState.ERROR):
        assert w.running_on(WEB) == [app.host], (app, w.events[-5:])


def test_double_run_is_reported() -> None:
    w = World(web())
    w.procs[B][WEB] = ProcInfo(WEB, ProcState.RUNNING, 300, 0.0)
    with pytest.raises(DoubleRun, match="web runs on alpha, beta"):
        w.check()


# ------------------------------------------------------------- the cluster-wide pause


def test_paused_dead_host_keeps_its_applications_until_resume() -> None:
    w = World(web(), paused=True)
    w.kill(A)
    w.step(DETECT * 10)
    assert w.web.host == A and w.runners(WEB) == []
    held = [e for e in w.events if e.kind is EventKind.PAUSED_HOLD]
    assert [(e.server, e.text.split(":")[:2]) for e in held] == [(B, ["paused", " would failover"])]
    w.paused = False
    w.step()
    assert w.web.host == B  # the host has been silent long enough: at once
    w.step()
    assert w.running_on(WEB) == [B]


def test_paused_program_that_exits_stays_down_until_resume() -> None:
    w = World(web(), paused=True)
    w.crash(WEB)
    w.step(10)
    assert w.runners(WEB) == [] and EventKind.RESTART not in w.kinds()
    w.paused = False
    w.step(2)
    assert w.running_on(WEB) == [A] and w.kinds()[-1] is EventKind.RESTART


def test_paused_operator_migrate_is_honoured() -> None:
    w = World(web(), paused=True)
    w.request(WEB, "migrate:gamma")
    w.settle()
    assert w.web.host == G and w.running_on(WEB) == [G] and w.web.request is None
    assert w.web.state == StateValue(AppState.RUNNING, "migrate")


def test_paused_no_failback_no_maintenance_move_a_restarted_host_loads_its_own() -> None:
    w = World(web())
    w.kill(A)
    w.settle()
    assert w.web.host == B
    w.paused = True
    w.revive(A)
    w.settle()
    assert w.web.host == B and w.running_on(WEB) == [B]  # no failback while paused
    w.maintenance(B, True)
    w.settle()
    assert w.web.host == B and w.running_on(WEB) == [B]  # nor a move off maintenance
    w.maintenance(B, False)
    w.kill(B)
    w.revive(B)  # its sentinel starts again: web is its own, it loads it
    w.settle()
    assert w.web.host == B and w.running_on(WEB) == [B]
    w.paused = False
    w.settle()
    assert w.web.host == A and w.running_on(WEB) == [A]  # resumed: the failback happens


def test_paused_isolated_host_still_fences_so_resume_is_safe() -> None:
    w = World(web(), paused=True)
    w.isolate(A)
    w.step(DETECT * 3)
    assert w.runners(WEB) == [] and w.web.host == A  # fenced; nobody took over
    w.paused = False
    w.settle()
    assert w.web.host in (B, G) and len(w.running_on(WEB)) == 1

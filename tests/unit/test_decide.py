"""The decision core, one branch per test: FIGS. 6-9, claim 57, requests, fencing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

from ndsclust.model import (
    App,
    AppState,
    AppType,
    Request,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
)
from ndsclust.sentinel import requests
from ndsclust.sentinel.actions import (
    Action,
    Claim,
    ConsumeRequest,
    EventKind,
    Load,
    LoadPaused,
    Notify,
    RecordEvent,
    Release,
    Restart,
    SetState,
    Unload,
    announce,
    handed_off,
)
from ndsclust.sentinel.decide import decide
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.view import History, Policy, View, histories, last_valid

A, B, G = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
ALL = (A, B, G)
WEB = Tag("web")
CHANNELS = frozenset({"lan", "disk"})
NOW = 10_000.0
POLICY = Policy()
T = TypeVar("T")

LOADING = StateValue(AppState.LOADING)
RUNNING = StateValue(AppState.RUNNING)
STOPPED = StateValue(AppState.STOPPED)
UNLOADING = StateValue(AppState.UNLOADING)
AWAITING = StateValue(AppState.AWAITING_FAILBACK)
PENDING = StateValue(AppState.REPLICATION_PENDING)


def loading(kind: EventKind) -> StateValue:
    """The state a move writes with its swap: why the application is where it is."""
    return StateValue(AppState.LOADING, kind.value)


FAILOVER = loading(EventKind.FAILOVER)
MIGRATED = StateValue(AppState.RUNNING, EventKind.MIGRATE.value)


def app(
    host: ServerName | None = A,
    *,
    tag: Tag = WEB,
    primary: ServerName = A,
    backups: tuple[ServerName, ...] = (B, G),
    resources: Iterable[str] = (),
    auto: bool = True,
    aware: bool = False,
    state: StateValue = RUNNING,
    request: str | None = None,
) -> App:
    return App(
        tag=tag,
        type=AppType.AWARE if aware else AppType.CAPABLE,
        command=("/usr/bin/web",),
        primary=primary,
        backups=backups,
        host=host,
        resources=frozenset(resources),
        auto_recover=auto,
        state=state,
        request=Request.parse(request) if request else None,
    )


def proc(
    state: ProcState = ProcState.RUNNING,
    *,
    tag: Tag = WEB,
    paused: bool = False,
    stop: bool = False,
    restarts: tuple[float, ...] = (),
    reason: str = "",
    code: int | None = None,
) -> ProcInfo:
    return ProcInfo(
        tag=tag,
        state=state,
        pid=None if paused else 4242,
        started_at=0.0,
        exit_code=code,
        restarts=restarts,
        paused=paused,
        stop_requested=stop,
        reason=reason,
    )


def exited(*, stop: bool, restarts: tuple[float, ...] = (), code: int = 1) -> ProcInfo:
    return proc(
        ProcState.EXITED, stop=stop, restarts=restarts, code=code, reason="" if stop else "exited"
    )


def lab(
    *apps: App,
    me: ServerName,
    dead: Iterable[ServerName] = (),
    seen: Mapping[ServerName, frozenset[str]] | None = None,
    published: Mapping[ServerName, Iterable[str]] | None = None,
    maintenance: Iterable[ServerName] = (),
    procs: Iterable[ProcInfo] = (),
    caught_up: bool = True,
    fenced: bool = False,
    registering: bool = False,
    history: Mapping[Tag, History] | None = None,
    said: Mapping[tuple[Tag, EventKind, str], float] | None = None,
) -> View:
    published = published or {}
    dead = set(dead)
    servers = {
        s: Server(
            s,
            resources=frozenset(published.get(s, ())),
            state=ServerState.MAINTENANCE if s in maintenance else ServerState.UP,
        )
        for s in ALL
    }
    if seen is None:
        seen = {p: frozenset() if p in dead else CHANNELS for p in ALL if p != me}
    return View(
        apps={a.tag: a for a in apps},
        servers=servers,
        liveness=Liveness(me=me, configured=CHANNELS, seen=seen),
        procs={p.tag: p for p in procs},
        resources=frozenset(published.get(me, ())),
        replication_caught_up=caught_up,
        fenced=fenced,
        registering=registering,
        history=history or {},
        said=said or {},
    )


def run(view: View, now: float = NOW, policy: Policy = POLICY) -> list[Action]:
    return decide(view, view.liveness.me, now, policy)


def kinds(actions: list[Action]) -> list[EventKind]:
    return [a.kind for a in actions if isinstance(a, RecordEvent)]


def only(actions: list[Action], cls: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, cls)]


# --------------------------------------------------------------------- FIG. 6 registration


def test_fig6_host_absent_means_unloaded_by_operator_and_stays_unloaded() -> None:
    out = run(lab(app(None, state=STOPPED), me=A, registering=True))
    assert out == [
        RecordEvent(
            EventKind.REGISTRATION,
            WEB,
            "unloaded by an operator: staying unloaded until someone loads it",
        )
    ]


def test_fig6_host_absent_with_stale_state_is_shown_stopped() -> None:
    out = run(lab(app(None, state=RUNNING), me=A, registering=True))
    assert out[0] == SetState(WEB, STOPPED)
    assert not only(out, Load) and not only(out, Claim)


def test_fig6_phoenixing_capable_waits_for_failback() -> None:
    out = run(lab(app(B), me=A, registering=True))
    assert out == [
        RecordEvent(EventKind.REGISTRATION, WEB, "phoenixing: beta hosts it; waiting for failback")
    ]


def test_fig6_phoenixing_aware_loads_paused() -> None:
    out = run(lab(app(B, aware=True), me=A, registering=True))
    assert out == [
        LoadPaused(WEB),
        RecordEvent(
            EventKind.REGISTRATION,
            WEB,
            "phoenixing: beta hosts it; waiting for failback (loaded paused here)",
        ),
    ]


def test_fig6_simultaneous_failure_loads_once_replication_caught_up() -> None:
    out = run(lab(app(A, state=RUNNING), me=A, registering=True))
    assert out == [
        Load(WEB),
        SetState(WEB, LOADING),
        RecordEvent(
            EventKind.REGISTRATION,
            WEB,
            "simultaneous failure: the host already names alpha; running it here",
        ),
    ]


def test_fig6_step614_simultaneous_failure_waits_for_replication() -> None:
    out = run(lab(app(A), me=A, registering=True, caught_up=False))
    # The hold shows as a state, says how it ends and is recorded once (issue 14).
    assert out == [
        SetState(WEB, PENDING),
        RecordEvent(
            EventKind.REPLICATION_PENDING,
            WEB,
            "alpha starts it once its own provider has caught up with its peers "
            "(it does so by itself; ndsclust doctor shows which provider lags)",
        ),
    ]
    # Already shown: nothing more to write, and still nothing loaded.
    assert run(lab(app(A, state=PENDING), me=A, registering=True, caught_up=False)) == []


def test_fig6_registration_is_recorded_only_by_the_primary_and_only_once() -> None:
    assert run(lab(app(A), me=B, registering=True)) == []
    assert run(lab(app(B), me=A, registering=False)) == []


def test_fig6_not_caught_up_withholds_a_paused_copy_silently() -> None:
    assert run(lab(app(B, aware=True), me=A, registering=True, caught_up=False)) == []


# ------------------------------------------------------------------------ steady state, FIG. 8


def test_fig8_host_without_program_loads_it() -> None:
    assert run(lab(app(A, state=STOPPED), me=A)) == [Load(WEB), SetState(WEB, LOADING)]


def test_load_in_flight_is_not_repeated() -> None:
    assert run(lab(app(A, state=LOADING), me=A, procs=[proc(ProcState.STARTING)])) == []


def test_running_program_is_shown_running_once() -> None:
    assert run(lab(app(A, state=LOADING), me=A, procs=[proc()])) == [SetState(WEB, RUNNING)]
    assert run(lab(app(A, state=RUNNING), me=A, procs=[proc()])) == []


def test_host_alive_elsewhere_needs_nothing_here() -> None:
    for me in (B, G):
        assert run(lab(app(A), me=me)) == []


def test_host_not_among_its_servers_is_an_error_and_does_not_run() -> None:
    out = run(lab(app(G, backups=(B,)), me=G, procs=[proc()]))
    reason = (
        "the host names gamma, which is neither its primary nor a backup; "
        "fix ndsclustHostServer or the server lists"
    )
    assert out == [
        Unload(WEB, reason),
        SetState(WEB, StateValue(AppState.ERROR, reason)),
        RecordEvent(EventKind.ERROR, WEB, f"error({reason})"),
        Notify(EventKind.ERROR, WEB, f"error({reason})"),
    ]
    errored = app(G, backups=(B,), state=StateValue(AppState.ERROR, reason))
    assert run(lab(errored, me=G)) == []


def test_unloading_in_progress_waits() -> None:
    assert run(lab(app(A), me=A, procs=[proc(ProcState.STOPPING)])) == []


def test_fig4e_double_claim_loser_unloads_and_says_so() -> None:
    # After a partition heals the directory holds one host (beta); alpha still runs a copy.
    out = run(lab(app(B), me=A, procs=[proc()]))
    text = "beta hosts it; stopping the copy on alpha"
    assert out == [
        Unload(WEB, "double claim: beta hosts it"),
        RecordEvent(EventKind.DOUBLE_CLAIM, WEB, text),
        Notify(EventKind.DOUBLE_CLAIM, WEB, text),
    ]


def test_fig4e_double_claim_unload_is_not_repeated_while_stopping() -> None:
    assert run(lab(app(B), me=A, procs=[proc(ProcState.STOPPING)])) == []


def test_fig4e_double_claim_even_when_starting() -> None:
    out = run(lab(app(G), me=B, procs=[proc(ProcState.STARTING)]))
    assert out[0] == Unload(WEB, "double claim: gamma hosts it")


def test_host_removed_by_hand_stops_the_program() -> None:
    out = run(lab(app(None), me=A, procs=[proc()]))
    assert out == [
        Unload(WEB, "host removed by an operator"),
        RecordEvent(
            EventKind.UNLOAD, WEB, "host removed by an operator: stopping the copy on alpha"
        ),
    ]


def test_program_whose_entry_was_removed_is_unloaded() -> None:
    out = run(lab(me=A, procs=[proc(tag=Tag("gone"))]))
    assert out == [Unload(Tag("gone"), "its entry was removed from the directory")]
    assert run(lab(me=A, procs=[proc(ProcState.EXITED, tag=Tag("gone"), stop=True)])) == []


def test_unhosted_app_state_kept_stopped_by_first_live_server_only() -> None:
    stale = app(None, state=RUNNING)
    assert run(lab(stale, me=A)) == [SetState(WEB, STOPPED)]
    assert run(lab(stale, me=B)) == []
    # alpha dead: beta is the first live server and speaks.
    assert run(lab(stale, me=B, dead=[A])) == [SetState(WEB, STOPPED)]
    assert run(lab(app(None, state=STOPPED), me=A)) == []


def test_apps_are_decided_in_tag_order_each_as_a_group() -> None:
    db, web = app(A, tag=Tag("db"), state=STOPPED), app(A, state=STOPPED)
    out = run(lab(web, db, me=A))
    assert out == [Load(Tag("db")), SetState(Tag("db"), LOADING), Load(WEB), SetState(WEB, LOADING)]


# ---------------------------------------------------------------------- FIGS. 7A, 9 failover


def failover_text(host: ServerName = A) -> str:
    return f"failover from {host} (silent channels: disk,lan)"


def test_fig7a_first_live_backup_claims_then_loads() -> None:
    out = run(lab(app(A), me=B, dead=[A]))
    assert out == [
        Claim(WEB, A, failover_text(), FAILOVER),
        Load(WEB),
        RecordEvent(EventKind.FAILOVER, WEB, failover_text()),
        Notify(EventKind.FAILOVER, WEB, failover_text()),
    ]
    assert run(lab(app(A), me=G, dead=[A])) == []


def test_fig8_host_alive_on_one_channel_is_not_failed_over() -> None:
    # 806 -> 808: the LAN is silent but the drive pulse still beats.
    seen = {A: frozenset({"disk"}), G: CHANNELS}
    assert run(lab(app(A), me=B, seen=seen)) == []


def test_fig7a_dead_first_backup_lets_the_next_take_it() -> None:
    out = run(lab(app(A), me=G, dead=[A, B]))
    assert out[0] == Claim(WEB, A, failover_text(), FAILOVER)


def test_fig7a_backup_lacking_resource_is_skipped() -> None:
    db = app(A, resources={"san1"})
    published = {A: {"san1"}, G: {"san1"}}
    assert run(lab(db, me=G, dead=[A], published=published))[0] == Claim(
        WEB, A, failover_text(), FAILOVER
    )
    text = "beta lacks san1: cannot take it over from alpha"
    assert run(lab(db, me=B, dead=[A], published=published)) == [
        RecordEvent(EventKind.RESOURCE_MISSING, WEB, text),
        Notify(EventKind.RESOURCE_MISSING, WEB, text),
    ]


def test_fig7a_resource_missing_is_said_only_by_the_server_that_lacks_it() -> None:
    # gamma lacks the resource but comes after the taker: it says nothing.
    db = app(A, resources={"san1"})
    assert run(lab(db, me=G, dead=[A], published={B: {"san1"}})) == []


def test_fig7a_resource_missing_is_repeated_only_after_repeat_after() -> None:
    db = app(A, resources={"san1"})
    text = "beta lacks san1: cannot take it over from alpha"
    said = {(WEB, EventKind.RESOURCE_MISSING, text): NOW - 10.0}
    published = {G: {"san1"}}
    assert run(lab(db, me=B, dead=[A], published=published, said=said)) == []
    later = NOW + POLICY.repeat_after
    assert kinds(run(lab(db, me=B, dead=[A], published=published, said=said), now=later)) == [
        EventKind.RESOURCE_MISSING
    ]


def test_fig7a_candidate_order_counts_only_live_servers() -> None:
    # beta dead, gamma lacks, so gamma is next in line and says why it cannot take it.
    db = app(A, resources={"san1"})
    out = run(lab(db, me=G, dead=[A, B]))
    assert kinds(out)[0] is EventKind.RESOURCE_MISSING
    assert not only(out, Claim)


def test_fig7a_dead_backup_host_goes_back_to_the_primary_first() -> None:
    out = run(lab(app(B), me=A, dead=[B]))
    assert out[0] == Claim(WEB, B, failover_text(B), FAILOVER)
    assert run(lab(app(B), me=G, dead=[B])) == []


def test_fig7a_server_in_maintenance_never_claims() -> None:
    assert run(lab(app(A), me=B, dead=[A], maintenance=[B])) == []
    assert run(lab(app(A), me=G, dead=[A], maintenance=[B]))[0] == Claim(
        WEB, A, failover_text(), FAILOVER
    )


def test_fig7a_unknown_host_counts_as_dead() -> None:
    stray = app(ServerName("delta"))
    assert run(lab(stray, me=A))[0] == Claim(
        WEB, ServerName("delta"), "failover from delta (silent channels: disk,lan)", FAILOVER
    )


def test_fig7a_nobody_eligible_first_live_server_marks_failed_once() -> None:
    db = app(A, resources={"san1"})
    reason = "no server can take it over from alpha: beta lacks san1, gamma lacks san1"
    failed = StateValue(AppState.FAILED, reason)
    out = run(lab(db, me=B, dead=[A]))
    assert out == [
        RecordEvent(
            EventKind.RESOURCE_MISSING, WEB, "beta lacks san1: cannot take it over from alpha"
        ),
        Notify(EventKind.RESOURCE_MISSING, WEB, "beta lacks san1: cannot take it over from alpha"),
        SetState(WEB, failed),
        RecordEvent(EventKind.FAILED, WEB, str(failed)),
        Notify(EventKind.FAILED, WEB, str(failed)),
    ]
    # gamma is not the first live server: only its own resource event.
    assert kinds(run(lab(db, me=G, dead=[A]))) == [EventKind.RESOURCE_MISSING]
    # Already failed with that reason: not written again.
    again = app(A, resources={"san1"}, state=failed)
    text = "beta lacks san1: cannot take it over from alpha"
    said = {(WEB, EventKind.RESOURCE_MISSING, text): NOW}
    assert run(lab(again, me=B, dead=[A], said=said)) == []


def test_fig7a_all_backups_dead_marks_failed() -> None:
    out = run(lab(app(A), me=G, dead=[A, B], maintenance=[G]))
    reason = "no server can take it over from alpha: beta is dead, gamma is in maintenance"
    assert out[0] == SetState(WEB, StateValue(AppState.FAILED, reason))


def test_fig7a_failover_honours_a_pending_load_request() -> None:
    out = run(lab(app(A, request="load"), me=B, dead=[A]))
    assert out[:2] == [
        Claim(WEB, A, failover_text(), FAILOVER, Request.parse("load")),
        Load(WEB),
    ]


def test_fig7a_failover_leaves_other_requests_to_the_new_host() -> None:
    out = run(lab(app(A, request="failback"), me=B, dead=[A]))
    assert out[:2] == [Claim(WEB, A, failover_text(), FAILOVER), Load(WEB)]
    assert not only(out, ConsumeRequest)


def test_fig7a_no_taker_rejects_a_pending_request() -> None:
    db = app(A, resources={"san1"}, request="load")
    out = run(lab(db, me=B, dead=[A]))
    assert ConsumeRequest(WEB, Request.parse("load")) in out
    assert EventKind.REQUEST_REJECTED in kinds(out)


def test_a_dead_host_never_keeps_it_whatever_the_failure_counts() -> None:
    # Blocker 2 of issue 14: three hand-offs in the window (start-up failures) used to leave
    # the application failed(flapping) on its dead host. A failover is never damped.
    history = {WEB: History(failures=((NOW - 300, A), (NOW - 200, A), (NOW - 100, A)))}
    out = run(lab(app(A), me=B, dead=[A], history=history))
    assert out[0] == Claim(WEB, A, failover_text(), FAILOVER)
    assert EventKind.FLAP_DAMPED not in kinds(out)


def test_failover_prefers_a_server_where_the_program_did_not_just_fail() -> None:
    history = {WEB: History(failures=((NOW - 100, B),))}
    assert run(lab(app(A), me=B, dead=[A], history=history)) == []
    out = run(lab(app(A), me=G, dead=[A], history=history))
    assert out[0] == Claim(WEB, A, failover_text(), FAILOVER)
    # ... but takes it rather than leave it on a dead host.
    out = run(lab(app(A), me=B, dead=[A, G], history=history))
    assert out[0] == Claim(WEB, A, failover_text(), FAILOVER)


def test_histories_count_only_program_failures_since_the_last_cleanup() -> None:
    moves = [
        (WEB, "failover", 100.0, A),
        (WEB, "migrate", 110.0, B),
        (WEB, "maintenance", 120.0, B),
        (WEB, "failback", 130.0, B),
        (WEB, "handoff", 140.0, A),
        (WEB, "cleanup", 150.0, G),
        (WEB, "handoff", 160.0, B),
    ]
    h = histories(moves, NOW, 200.0)
    assert h[WEB] == History(
        failures=((NOW - 40, B),), cleaned=NOW - 50, seen=frozenset({A, B}), failovers=(NOW - 100,)
    )
    # A failover is reported (metrics), never counted as a failure of the program.
    assert histories(moves[:4], NOW, 200.0) == {WEB: History(failovers=(NOW - 100,))}


def test_failover_with_migrate_request_goes_straight_to_the_target() -> None:
    m = app(A, request="migrate:gamma")
    assert run(lab(m, me=B, dead=[A])) == []
    out = run(lab(m, me=G, dead=[A]))
    text = "migrate to gamma (host alpha is dead)"
    assert out[:2] == [
        Claim(WEB, A, text, loading(EventKind.MIGRATE), Request.parse("migrate:gamma")),
        Load(WEB),
    ]
    # Target unfit: the ordinary failover happens; the new host will reject the request.
    assert run(lab(m, me=B, dead=[A, G]))[0] == Claim(WEB, A, failover_text(), FAILOVER)


# ----------------------------------------------------------------------- FIGS. 7B, 8 failback


def test_fig7b_auto_recover_backup_unloads_then_swaps_host_back() -> None:
    out = run(lab(app(B), me=B, procs=[proc()]))
    assert out == [Unload(WEB, "failback to alpha"), SetState(WEB, UNLOADING)]
    assert run(lab(app(B, state=UNLOADING), me=B, procs=[proc(ProcState.STOPPING)])) == []
    out = run(lab(app(B, state=UNLOADING), me=B, procs=[exited(stop=True)]))
    assert out == [
        Release(WEB, A, B, "failback to alpha", loading(EventKind.FAILBACK)),
        RecordEvent(EventKind.FAILBACK, WEB, "failback to alpha"),
        Notify(EventKind.FAILBACK, WEB, "failback to alpha"),
    ]


def test_fig7b_860_primary_still_dead_backup_keeps_running() -> None:
    assert run(lab(app(B), me=B, dead=[A], procs=[proc()])) == []


def test_fig7b_no_failback_to_a_primary_in_maintenance() -> None:
    assert run(lab(app(B), me=B, maintenance=[A], procs=[proc()])) == []


def test_fig7b_no_failback_to_a_primary_lacking_a_resource() -> None:
    db = app(B, resources={"san1"})
    assert run(lab(db, me=B, published={B: {"san1"}}, procs=[proc()])) == []


def test_fig7b_864_manual_failback_waits_and_asks_once() -> None:
    text = "alpha is back; failback waits for an operator's approval: ndsclust failback web"
    out = run(lab(app(B, auto=False), me=B, procs=[proc()]))
    assert out == [
        SetState(WEB, AWAITING),
        RecordEvent(EventKind.AWAITING_FAILBACK, WEB, text),
        Notify(EventKind.AWAITING_FAILBACK, WEB, text),
    ]
    assert run(lab(app(B, auto=False, state=AWAITING), me=B, procs=[proc()])) == []


def test_fig7b_awaiting_failback_returns_to_running_if_primary_dies_again() -> None:
    out = run(lab(app(B, auto=False, state=AWAITING), me=B, dead=[A], procs=[proc()]))
    assert out == [SetState(WEB, RUNNING)]


def test_fig7b_866_approved_failback_unloads_then_swaps_and_consumes() -> None:
    approved = app(B, auto=False, state=AWAITING, request="failback")
    text = "failback to alpha (approved)"
    assert run(lab(approved, me=B, procs=[proc()])) == [Unload(WEB, text), SetState(WEB, UNLOADING)]
    out = run(lab(approved, me=B, procs=[exited(stop=True)]))
    assert out == [
        Release(WEB, A, B, text, loading(EventKind.FAILBACK), Request.parse("failback")),
        RecordEvent(EventKind.FAILBACK, WEB, text),
        Notify(EventKind.FAILBACK, WEB, text),
    ]


def test_fig8_908_primary_loads_once_host_names_it() -> None:
    assert run(lab(app(B), me=A)) == []
    assert run(lab(app(A, state=UNLOADING), me=A)) == [Load(WEB), SetState(WEB, LOADING)]


def test_fig7b_aware_primary_keeps_a_paused_copy_while_backup_hosts() -> None:
    assert run(lab(app(B, aware=True), me=A)) == [LoadPaused(WEB)]
    assert run(lab(app(B, aware=True), me=A, procs=[proc(ProcState.STARTING, paused=True)])) == []
    # Not for a capable program, nor on a backup.
    assert run(lab(app(B), me=A)) == []
    assert run(lab(app(A, aware=True), me=B)) == []


def test_fig7b_aware_paused_copy_starts_when_host_names_the_primary() -> None:
    out = run(
        lab(
            app(A, aware=True, state=UNLOADING), me=A, procs=[proc(ProcState.STARTING, paused=True)]
        )
    )
    assert out == [Load(WEB), SetState(WEB, LOADING)]


def test_fig7b_paused_copy_is_dropped_when_no_longer_needed() -> None:
    paused_copy = proc(ProcState.STARTING, paused=True)
    drop = [Unload(WEB, "paused copy no longer needed")]
    assert run(lab(app(None, aware=True), me=A, procs=[paused_copy])) == drop
    assert run(lab(app(B, aware=True), me=A, maintenance=[A], procs=[paused_copy])) == drop
    assert (
        run(lab(app(B, aware=True, primary=G, backups=(A, B)), me=A, procs=[paused_copy])) == drop
    )


def test_claim58_no_automatic_failback_to_a_primary_where_it_kept_failing() -> None:
    history = {WEB: History(failures=((NOW - 60, A),))}
    out = run(lab(app(B), me=B, procs=[proc()], history=history))
    held = StateValue(
        AppState.RUNNING,
        "failback held: the program kept failing on alpha within 3600s; fails back when "
        "that expires or after: ndsclust cleanup web",
    )
    assert out[0] == SetState(WEB, held)
    assert kinds(out) == [EventKind.FAILBACK_HELD]
    assert run(lab(app(B, state=held), me=B, procs=[proc()], history=history)) == []
    later = NOW + POLICY.flap_window
    assert run(lab(app(B), me=B, procs=[proc()], history=history), now=later)[0] == Unload(
        WEB, "failback to alpha"
    )
    cleaned = {WEB: History(failures=(), cleaned=NOW - 1)}
    assert run(lab(app(B), me=B, procs=[proc()], history=cleaned))[0] == Unload(
        WEB, "failback to alpha"
    )


def test_fig7b_interrupted_failback_reloads_when_primary_dies_again() -> None:
    out = run(lab(app(B, state=UNLOADING), me=B, dead=[A], procs=[exited(stop=True)]))
    assert out == [Load(WEB), SetState(WEB, LOADING)]


# ------------------------------------------------------------------------- operator requests


def test_request_load_unhosted_first_fit_server_claims_loads_and_consumes() -> None:
    req = app(None, state=STOPPED, request="load")
    out = run(lab(req, me=A))
    text = "load on alpha (requested)"
    assert out == [
        Claim(WEB, None, text, loading(EventKind.LOAD), Request.parse("load")),
        Load(WEB),
        RecordEvent(EventKind.LOAD, WEB, text),
    ]
    assert run(lab(req, me=B)) == []
    assert run(lab(req, me=G)) == []


def test_request_load_skips_servers_that_cannot_run_it() -> None:
    req = app(None, state=STOPPED, request="load", resources={"san1"})
    published = {G: {"san1"}}
    assert run(lab(req, me=A, published=published)) == []
    assert run(lab(req, me=G, published=published))[0] == Claim(
        WEB, None, "load on gamma (requested)", loading(EventKind.LOAD), Request.parse("load")
    )


def test_request_load_nobody_fit_is_rejected_by_first_live_server() -> None:
    req = app(None, state=STOPPED, request="load", resources={"san1"})
    text = "load: no server can run it: alpha lacks san1, beta lacks san1, gamma lacks san1"
    assert run(lab(req, me=A)) == [
        ConsumeRequest(WEB, Request.parse("load")),
        RecordEvent(EventKind.REQUEST_REJECTED, WEB, text),
        Notify(EventKind.REQUEST_REJECTED, WEB, text),
    ]
    assert run(lab(req, me=B)) == []


def test_request_load_on_running_host_is_ignored() -> None:
    out = run(lab(app(A, request="load"), me=A, procs=[proc()]))
    assert out == [
        ConsumeRequest(WEB, Request.parse("load")),
        RecordEvent(EventKind.REQUEST_IGNORED, WEB, "load: already running on alpha"),
    ]


def test_request_load_restarts_a_program_past_its_restart_limit() -> None:
    spent = exited(stop=False, restarts=(NOW - 3, NOW - 2, NOW - 1))
    failed = StateValue(AppState.FAILED, "whatever")
    out = run(lab(app(A, state=failed, request="load"), me=A, dead=[B, G], procs=[spent]))
    assert out == [
        ConsumeRequest(WEB, Request.parse("load"), LOADING),
        Load(WEB),
        RecordEvent(EventKind.LOAD, WEB, "load on alpha (requested)"),
    ]


def test_request_load_on_host_outside_its_servers_is_rejected() -> None:
    out = run(lab(app(G, backups=(B,), request="load"), me=G))
    assert out[:2] == [
        ConsumeRequest(WEB, Request.parse("load")),
        RecordEvent(
            EventKind.REQUEST_REJECTED,
            WEB,
            "load: gamma hosts it but is neither its primary nor a backup",
        ),
    ]
    assert only(out, SetState)[0].value.state is AppState.ERROR


def test_request_unload_stops_then_removes_host() -> None:
    req = app(A, request="unload")
    assert run(lab(req, me=A, procs=[proc()])) == [
        Unload(WEB, "unload requested"),
        SetState(WEB, UNLOADING),
    ]
    out = run(lab(app(A, request="unload", state=UNLOADING), me=A, procs=[exited(stop=True)]))
    assert out == [
        Release(WEB, None, A, "unload requested", STOPPED, Request.parse("unload")),
        RecordEvent(EventKind.UNLOAD, WEB, "unload requested"),
    ]
    assert run(lab(req, me=B)) == []


def test_request_unload_of_a_failed_program_removes_host_at_once() -> None:
    out = run(lab(app(A, request="unload"), me=A, procs=[exited(stop=False)]))
    assert out[0] == Release(WEB, None, A, "unload requested", STOPPED, Request.parse("unload"))


def test_request_unload_with_dead_host_first_live_server_removes_it() -> None:
    req = app(A, request="unload")
    text = "unload requested; host alpha is dead"
    assert run(lab(req, me=B, dead=[A])) == [
        Release(WEB, None, A, text, STOPPED, Request.parse("unload")),
        RecordEvent(EventKind.UNLOAD, WEB, text),
    ]
    assert run(lab(req, me=G, dead=[A])) == []


def test_request_unload_when_unloaded_is_ignored() -> None:
    req = app(None, state=STOPPED, request="unload")
    assert run(lab(req, me=A)) == [
        ConsumeRequest(WEB, Request.parse("unload")),
        RecordEvent(EventKind.REQUEST_IGNORED, WEB, "unload: it is not loaded anywhere"),
    ]
    assert run(lab(req, me=B)) == []


def test_request_failback_with_nothing_to_fail_back_is_ignored() -> None:
    out = run(lab(app(A, request="failback"), me=A, procs=[proc()]))
    assert out == [
        ConsumeRequest(WEB, Request.parse("failback")),
        RecordEvent(
            EventKind.REQUEST_IGNORED,
            WEB,
            "failback: nothing to fail back: the primary alpha hosts it",
        ),
    ]
    out = run(lab(app(B, request="failback"), me=B, dead=[A], procs=[proc()]))
    assert out == [
        ConsumeRequest(WEB, Request.parse("failback")),
        RecordEvent(EventKind.REQUEST_IGNORED, WEB, "failback: cannot fail back: alpha is dead"),
    ]
    out = run(lab(app(None, state=STOPPED, request="failback"), me=A))
    assert kinds(out) == [EventKind.REQUEST_IGNORED]


def test_request_migrate_unloads_then_swaps_to_target() -> None:
    req = app(A, request="migrate:gamma")
    text = (
        "migrate to gamma; it stays there (no automatic failback) until an operator moves it: "
        "ndsclust failback web sends it back to alpha"
    )
    assert run(lab(req, me=A, procs=[proc()])) == [Unload(WEB, text), SetState(WEB, UNLOADING)]
    out = run(lab(req, me=A, procs=[exited(stop=True)]))
    assert out == [
        Release(WEB, G, A, text, loading(EventKind.MIGRATE), Request.parse("migrate:gamma")),
        RecordEvent(EventKind.MIGRATE, WEB, text),
    ]
    assert run(lab(req, me=G)) == []


def test_request_migrate_target_loads_once_host_names_it_and_stays() -> None:
    # An operator put it on a backup: no automatic failback although the primary is alive.
    # The entry says why it is there (loading(migrate), written with the swap): no event
    # from the audit trail is needed.
    moved = loading(EventKind.MIGRATE)
    assert run(lab(app(G, state=moved), me=G)) == [Load(WEB)]
    out = run(lab(app(G, state=moved), me=G, procs=[proc()]))
    assert out[0] == SetState(WEB, MIGRATED)
    # Issue 14 point 4: the hold says why it does not fail back and how to release it, once.
    held = (
        "alpha is back but it stays on gamma, where an operator migrated it (no automatic "
        "failback after a migrate); to send it back: ndsclust failback web"
    )
    assert out[1:] == announce(EventKind.FAILBACK_HELD, WEB, held)
    said = {(WEB, EventKind.FAILBACK_HELD, held): NOW - 10_000}
    assert run(lab(app(G, state=MIGRATED), me=G, procs=[proc()], said=said)) == []
    assert run(lab(app(G, auto=False, state=MIGRATED), me=G, procs=[proc()], said=said)) == []


def test_request_migrate_of_auto_recover_app_sticks_without_the_migrate_event() -> None:
    # Issue 18: an operator migrates an auto-recover application from its primary alpha to
    # beta, and the audit trail's migrate event never reaches beta (history is empty). The
    # entry alpha's one atomic modify left behind is all beta needs to keep it.
    home = app(A, request="migrate:beta", auto=True)
    release = run(lab(home, me=A, procs=[exited(stop=True)]))[0]
    assert isinstance(release, Release) and release.to == B
    moved = app(B, auto=True, state=release.state)  # host, state and request in one write
    assert release.consumes == Request.parse("migrate:beta")
    first = run(lab(moved, me=B))
    assert first == [Load(WEB)]
    second = run(lab(moved, me=B, procs=[proc()]))
    assert second[0] == SetState(WEB, MIGRATED) and kinds(second) == [EventKind.FAILBACK_HELD]
    assert not only(second, Unload)
    kept = app(B, auto=True, state=MIGRATED)
    assert not only(run(lab(kept, me=B, procs=[proc()])), Unload)
    # Later program failures keep the pin: restarted in place, still no failback.
    assert run(lab(kept, me=B, procs=[exited(stop=False)]))[0] == Restart(WEB)


def test_request_migrate_back_to_primary_is_the_way_home() -> None:
    out = run(lab(app(G, request="migrate:alpha", state=MIGRATED), me=G, procs=[proc()]))
    assert out == [Unload(WEB, "migrate to alpha"), SetState(WEB, UNLOADING)]


def rejected(out: list[Action]) -> str:
    events = [a for a in out if isinstance(a, RecordEvent)]
    assert [e.kind for e in events] == [EventKind.REQUEST_REJECTED]
    assert not only(out, Unload) and not only(out, Release) and not only(out, Claim)
    return events[0].text


def test_request_migrate_to_unknown_server_is_rejected() -> None:
    text = "migrate:delta: nothing moves: delta is not a known server"
    out = run(lab(app(A, request="migrate:delta"), me=A, procs=[proc()]))
    assert out == [
        ConsumeRequest(WEB, Request.parse("migrate:delta")),
        RecordEvent(EventKind.REQUEST_REJECTED, WEB, text),
        Notify(EventKind.REQUEST_REJECTED, WEB, text),
    ]


def test_request_migrate_to_server_outside_its_list_is_rejected() -> None:
    out = run(lab(app(A, backups=(B,), request="migrate:gamma"), me=A, procs=[proc()]))
    assert rejected(out) == (
        "migrate:gamma: nothing moves: gamma is neither its primary nor a backup (alpha, beta)"
    )


def test_request_migrate_to_dead_server_is_rejected() -> None:
    out = run(lab(app(A, request="migrate:gamma"), me=A, dead=[G], procs=[proc()]))
    assert rejected(out) == "migrate:gamma: nothing moves: gamma is dead"


def test_request_migrate_to_server_in_maintenance_is_rejected() -> None:
    out = run(lab(app(A, request="migrate:gamma"), me=A, maintenance=[G], procs=[proc()]))
    assert rejected(out) == "migrate:gamma: nothing moves: gamma is in maintenance"


def test_request_migrate_to_server_lacking_a_resource_is_rejected() -> None:
    out = run(
        lab(
            app(A, request="migrate:gamma", resources={"san1"}),
            me=A,
            published={A: {"san1"}},
            procs=[proc()],
        )
    )
    assert rejected(out) == "migrate:gamma: nothing moves: gamma lacks san1"


def test_request_migrate_to_current_host_is_ignored() -> None:
    out = run(lab(app(A, request="migrate:alpha"), me=A, procs=[proc()]))
    assert out == [
        ConsumeRequest(WEB, Request.parse("migrate:alpha")),
        RecordEvent(EventKind.REQUEST_IGNORED, WEB, "migrate:alpha: alpha already hosts it"),
    ]


def test_request_migrate_unhosted_loads_on_target() -> None:
    req = app(None, state=STOPPED, request="migrate:beta")
    assert run(lab(req, me=A)) == []
    assert run(lab(req, me=B))[:2] == [
        Claim(
            WEB,
            None,
            "migrate to beta (it was unloaded)",
            loading(EventKind.MIGRATE),
            Request.parse("migrate:beta"),
        ),
        Load(WEB),
    ]
    bad = app(None, state=STOPPED, request="migrate:delta")
    assert kinds(run(lab(bad, me=A))) == [EventKind.REQUEST_REJECTED]
    assert run(lab(bad, me=B)) == []


def test_request_migrate_host_dead_target_unfit_failover_then_rejected() -> None:
    out = run(lab(app(B, request="migrate:gamma"), me=B, dead=[G], procs=[proc()]))
    assert kinds(out) == [EventKind.REQUEST_REJECTED]


# ------------------------------------------------------------------------------- maintenance


def test_maintenance_host_moves_app_to_next_fit_server() -> None:
    text = "alpha is in maintenance: moving to beta"
    assert run(lab(app(A), me=A, maintenance=[A], procs=[proc()])) == [
        Unload(WEB, text),
        SetState(WEB, UNLOADING),
    ]
    out = run(lab(app(A, state=UNLOADING), me=A, maintenance=[A], procs=[exited(stop=True)]))
    assert out == [
        Release(WEB, B, A, text, loading(EventKind.MAINTENANCE)),
        RecordEvent(EventKind.MAINTENANCE, WEB, text),
    ]


def test_maintenance_skips_servers_that_cannot_take_it() -> None:
    out = run(lab(app(A), me=A, maintenance=[A], dead=[B], procs=[exited(stop=True)]))
    assert out[0] == Release(
        WEB, G, A, "alpha is in maintenance: moving to gamma", loading(EventKind.MAINTENANCE)
    )


def test_maintenance_with_nowhere_to_go_keeps_running_and_says_so() -> None:
    out = run(lab(app(A), me=A, maintenance=[A], dead=[B, G], procs=[proc()]))
    text = "alpha is in maintenance but no server can take it: beta is dead, gamma is dead"
    assert out == [
        RecordEvent(EventKind.MAINTENANCE_BLOCKED, WEB, text),
        Notify(EventKind.MAINTENANCE_BLOCKED, WEB, text),
    ]
    said = {(WEB, EventKind.MAINTENANCE_BLOCKED, text): NOW - 1}
    assert run(lab(app(A), me=A, maintenance=[A], dead=[B, G], procs=[proc()], said=said)) == []


def test_maintenance_on_backup_host_moves_to_next_not_to_primary_in_maintenance() -> None:
    out = run(lab(app(B), me=B, maintenance=[A, B], procs=[exited(stop=True)]))
    assert out[0] == Release(
        WEB, G, B, "beta is in maintenance: moving to gamma", loading(EventKind.MAINTENANCE)
    )


# ------------------------------------------------------------------- claim 57 supervision


def test_claim57_program_exit_is_restarted_in_place() -> None:
    out = run(lab(app(A), me=A, procs=[exited(stop=False, restarts=(NOW - 100,))]))
    assert out == [
        Restart(WEB),
        RecordEvent(EventKind.RESTART, WEB, "exited; restart 2 of 3 within 900s"),
    ]


def test_claim57_restarts_outside_window_do_not_count() -> None:
    old = (NOW - 1000, NOW - 950, NOW - 901)
    assert run(lab(app(A), me=A, procs=[exited(stop=False, restarts=old)]))[0] == Restart(WEB)


def test_claim57_restart_limit_hands_program_to_next_server() -> None:
    spent = exited(stop=False, restarts=(NOW - 30, NOW - 20, NOW - 10))
    text = "handoff to beta: exited; restart limit reached (3 within 900s) on alpha"
    assert run(lab(app(A), me=A, procs=[spent])) == [
        Release(WEB, B, A, text, handed_off([A])),
        RecordEvent(EventKind.HANDOFF, WEB, text),
        Notify(EventKind.HANDOFF, WEB, text),
    ]


def test_claim57_handoff_needs_sufficient_resources() -> None:
    spent = exited(stop=False, restarts=(NOW - 30, NOW - 20, NOW - 10))
    db = app(A, resources={"san1"})
    out = run(lab(db, me=A, published={A: {"san1"}, G: {"san1"}}, procs=[spent]))
    assert out[0] == Release(
        WEB,
        G,
        A,
        "handoff to gamma: exited; restart limit reached (3 within 900s) on alpha",
        handed_off([A]),
    )


def test_claim57_restart_limit_with_nowhere_to_go_is_failed_once() -> None:
    spent = exited(stop=False, restarts=(NOW - 30, NOW - 20, NOW - 10))
    reason = (
        "exited; restart limit reached (3 within 900s) on alpha; given up: failed on alpha, "
        "beta is dead, gamma is dead; fix the cause, then: ndsclust cleanup web"
    )
    failed = StateValue(AppState.FAILED, reason)
    out = run(lab(app(A), me=A, dead=[B, G], procs=[spent]))
    assert out == [
        SetState(WEB, failed),
        RecordEvent(EventKind.FAILED, WEB, str(failed)),
        Notify(EventKind.FAILED, WEB, str(failed)),
    ]
    assert run(lab(app(A, state=failed), me=A, dead=[B, G], procs=[spent])) == []


def test_claim57_handoff_is_flap_damped() -> None:
    spent = exited(stop=False, restarts=(NOW - 30, NOW - 20, NOW - 10))
    few = Policy(flap_max_failovers=1)
    history = {WEB: History(failures=((NOW - 400, B),))}
    out = run(lab(app(A), me=A, procs=[spent], history=history), policy=few)
    reason = (
        "flapping: 1 hand-offs after program failures within 3600s; given up on alpha; "
        "fix the program, then: ndsclust cleanup web"
    )
    assert out[0] == SetState(WEB, StateValue(AppState.FAILED, reason))
    assert kinds(out) == [EventKind.FLAP_DAMPED]


def test_issue14_blocker1_handoff_goes_to_the_next_server_where_it_did_not_fail() -> None:
    # Failed on alpha, handed to beta, failed there too: gamma gets its turn, not alpha.
    spent = exited(stop=False, restarts=(NOW - 30, NOW - 20, NOW - 10))
    history = {WEB: History(failures=((NOW - 60, A),))}
    out = run(lab(app(B), me=B, procs=[spent], history=history))
    assert out[0] == Release(
        WEB,
        G,
        B,
        "handoff to gamma: exited; restart limit reached (3 within 900s) on beta",
        handed_off([A, B]),
    )


def test_issue14_the_entry_names_where_it_failed_before_the_events_arrive() -> None:
    # A refusal is handed on at once: beta decides before alpha's hand-off event reaches
    # it. The swap's own state (loading(handoff: alpha)) keeps it from going back to alpha.
    refused = proc(ProcState.EXITED, reason="refused: not allowed")
    out = run(lab(app(B, state=handed_off([A])), me=B, procs=[refused]))
    assert isinstance(out[0], Release) and out[0].to == G
    assert out[0].state == handed_off([A, B])
    # gamma runs it: the primary is named as failed until its event shows, then by it.
    held = run(lab(app(G, state=handed_off([A, B])), me=G, procs=[proc()]))
    assert isinstance(held[0], SetState) and "failback held" in held[0].value.reason
    still = run(lab(app(G, state=held[0].value), me=G, procs=[proc()]))
    assert not only(still, Unload)
    seen = {WEB: History(failures=((NOW - 5000, A),), seen=frozenset({A}))}
    expired = run(lab(app(G, state=held[0].value), me=G, procs=[proc()], history=seen))
    assert expired[0] == Unload(WEB, "failback to alpha")


def test_issue14_point3_an_operators_migrate_is_never_damped() -> None:
    # However many failures count, a migrate moves it (live host: unload, then swap; dead
    # host: straight to the target), and says so with its event.
    many = {WEB: History(failures=((NOW - 30, A), (NOW - 20, B), (NOW - 10, G)))}
    req = app(A, request="migrate:beta")
    assert run(lab(req, me=A, procs=[proc()], history=many))[0] == Unload(
        WEB, requests.migrate_text(req, B)
    )
    out = run(lab(req, me=A, procs=[exited(stop=True)], history=many))
    assert isinstance(out[0], Release) and out[0].to == B and kinds(out) == [EventKind.MIGRATE]
    out = run(lab(req, me=B, dead=[A], history=many))
    assert isinstance(out[0], Claim) and kinds(out) == [EventKind.MIGRATE]


def test_issue14_cleanup_forgets_restarts_and_failures() -> None:
    spent = exited(stop=False, restarts=(NOW - 30, NOW - 20, NOW - 10))
    cleaned = {WEB: History(failures=(), cleaned=NOW - 5)}
    assert run(lab(app(A), me=A, procs=[spent], history=cleaned))[0] == Restart(WEB)


def test_issue14_cleanup_request_restarts_a_given_up_program_on_its_host() -> None:
    spent = exited(stop=False, restarts=(NOW - 30, NOW - 20, NOW - 10))
    given_up = StateValue(AppState.FAILED, "given up")
    out = run(lab(app(G, state=given_up, request="cleanup"), me=G, procs=[spent]))
    text = "failure counts cleared by an operator (on gamma); starting it on gamma"
    assert out == [
        ConsumeRequest(WEB, Request.parse("cleanup"), StateValue(AppState.LOADING)),
        Load(WEB),
        RecordEvent(EventKind.CLEANUP, WEB, text),
    ]
    # Running, or unloaded: only the counts are cleared (the speaker answers unhosted).
    out = run(lab(app(A, request="cleanup"), me=A, procs=[proc()]))
    assert out == [
        ConsumeRequest(WEB, Request.parse("cleanup")),
        RecordEvent(EventKind.CLEANUP, WEB, "failure counts cleared by an operator (on alpha)"),
    ]
    # A state that names failures is cleared with the request.
    held = StateValue(AppState.RUNNING, "failback held: the program kept failing on alpha")
    out = run(lab(app(B, state=held, request="cleanup"), me=B, procs=[proc()]))
    assert out[0] == ConsumeRequest(WEB, Request.parse("cleanup"), RUNNING)
    # ... when only the state names them; those the events name go with the cleanup event.
    seen = {WEB: History(failures=((NOW - 9, A),), seen=frozenset({A}))}
    out = run(lab(app(B, state=held, request="cleanup"), me=B, procs=[proc()], history=seen))
    assert out[0] == ConsumeRequest(WEB, Request.parse("cleanup"))
    assert run(lab(app(None, state=STOPPED, request="cleanup"), me=B)) == []
    assert kinds(run(lab(app(None, state=STOPPED, request="cleanup"), me=A))) == [EventKind.CLEANUP]


def test_issue14_refused_program_goes_to_the_next_server_then_error() -> None:
    refused = proc(ProcState.EXITED, reason="refused: /usr/bin/web is not allowed")
    out = run(lab(app(A), me=A, procs=[refused]))
    # No restart in place: trying again cannot help; the next server gets its turn.
    assert isinstance(out[0], Release) and out[0].to == B
    history = {WEB: History(failures=((NOW - 20, A), (NOW - 10, B)))}
    out = run(lab(app(G), me=G, procs=[refused], history=history))
    assert isinstance(out[0], SetState) and out[0].value.state is AppState.ERROR
    assert out[0].value.reason.startswith("refused: /usr/bin/web is not allowed; given up: ")
    assert "ndsclust cleanup web" in out[0].value.reason
    assert kinds(out) == [EventKind.ERROR]


def test_issue14_migrate_to_the_host_where_it_was_given_up_starts_it() -> None:
    spent = exited(stop=False, restarts=(NOW - 30, NOW - 20, NOW - 10))
    given_up = StateValue(AppState.FAILED, "flapping")
    out = run(lab(app(A, state=given_up, request="migrate:alpha"), me=A, procs=[spent]))
    assert out[:2] == [
        ConsumeRequest(WEB, Request.parse("migrate:alpha"), StateValue(AppState.LOADING)),
        Load(WEB),
    ]
    assert kinds(out) == [EventKind.MIGRATE]


def test_issue14_invalid_edit_of_a_running_app_keeps_it_running_and_says_so() -> None:
    good = app(A)
    apps, bad = last_valid(
        {}, [("ndsclustTag=web,ou=applications,dc=x", "ndsclustCommand: relative")], {WEB: good}
    )
    assert apps == {WEB: good} and bad == {WEB: "ndsclustCommand: relative"}
    view = replace(lab(good, me=A, procs=[proc()]), apps=apps, invalid=bad)
    out = run(view)
    assert not only(out, Unload)
    text = (
        "invalid edit: ndsclustCommand: relative; alpha keeps its last valid entry (the "
        "program is not stopped) until the entry is fixed"
    )
    assert out == [
        SetState(WEB, StateValue(AppState.ERROR, text)),
        *announce(EventKind.ERROR, WEB, text),
    ]
    said = {(WEB, EventKind.ERROR, text): NOW - 1}
    assert run(replace(view, said=said)) == []
    # Other servers neither unload nor report it.
    assert run(replace(lab(good, me=B), apps=apps, invalid=bad)) == []


def test_issue14_an_entry_every_sentinel_ignores_is_reported_once() -> None:
    bad = {WEB: "ndsclustBackupServer: delta is not a known server"}
    text = "ndsclustBackupServer: delta is not a known server; every sentinel ignores this entry until it is fixed"
    assert run(replace(lab(me=A), invalid=bad)) == [
        RecordEvent(EventKind.INVALID_ENTRY, WEB, text),
        Notify(EventKind.INVALID_ENTRY, WEB, text),
    ]
    assert run(replace(lab(me=B), invalid=bad)) == []
    assert run(replace(lab(me=B, dead=[A]), invalid=bad))[0] == RecordEvent(
        EventKind.INVALID_ENTRY, WEB, text
    )


def test_claim57_failed_program_on_backup_goes_back_to_live_primary() -> None:
    out = run(lab(app(B), me=B, procs=[exited(stop=False)]))
    assert out[0] == Release(WEB, A, B, "failback to alpha", loading(EventKind.FAILBACK))


# ----------------------------------------------------------------------------------- fencing


def test_fencing_unloads_every_local_program_and_claims_nothing() -> None:
    db = app(B, tag=Tag("db"))
    procs = [
        proc(tag=Tag("db")),
        proc(ProcState.STARTING, tag=WEB, paused=True),
        proc(ProcState.EXITED, tag=Tag("old"), stop=True),
    ]
    out = run(lab(app(A), db, me=A, dead=[B, G], fenced=True, procs=procs))
    text = "alpha is cut off from the cluster: stopping the copy here"
    assert out == [
        Unload(Tag("db"), "fenced"),
        Unload(WEB, "fenced"),
        Notify(EventKind.FENCED, Tag("db"), text),
        Notify(EventKind.FENCED, WEB, text),
    ]


def test_fencing_with_nothing_running_does_nothing() -> None:
    assert run(lab(app(A, state=STOPPED), me=B, dead=[A], fenced=True)) == []


# -------------------------------------------------------------------- replication pending


def test_fig6_step614_failover_waits_for_replication() -> None:
    out = run(lab(app(A), me=B, dead=[A], caught_up=False))
    assert out[0] == SetState(WEB, PENDING) and kinds(out) == [EventKind.REPLICATION_PENDING]


def test_replication_pending_holds_restarts_and_unloads_too() -> None:
    out = run(lab(app(A), me=A, procs=[exited(stop=False)], caught_up=False))
    assert out[0] == SetState(WEB, PENDING) and kinds(out) == [EventKind.REPLICATION_PENDING]
    assert run(lab(app(B), me=A, procs=[proc()], caught_up=False)) == []
    out = run(lab(app(None, request="load", state=STOPPED), me=A, caught_up=False))
    assert out[0] == SetState(WEB, PENDING) and kinds(out) == [EventKind.REPLICATION_PENDING]


def test_replication_pending_leaves_others_states_alone() -> None:
    # gamma would do nothing for an app beta hosts: no state written.
    assert run(lab(app(B, state=RUNNING), me=G, caught_up=False)) == []


def test_fig7b_crashing_paused_copy_is_not_restarted_beyond_the_budget() -> None:
    spent = exited(stop=False, restarts=(NOW - 3, NOW - 2, NOW - 1))
    assert run(lab(app(B, aware=True), me=A, procs=[spent])) == []
    assert run(lab(app(B, aware=True), me=A, procs=[exited(stop=False)])) == [LoadPaused(WEB)]


def test_just_rejoined_host_starts_nothing_until_the_grace_is_over() -> None:
    """A peer's claim decided while this server was silent may still land: the host the
    directory names starts no program within the rejoin's grace, and starts it after."""
    view = lab(app(A, state=STOPPED), me=A)
    assert run(replace(view, starts_held=True)) == []
    assert run(view) == [Load(WEB), SetState(WEB, LOADING)]


def test_just_rejoined_host_still_unloads_a_copy_another_server_hosts() -> None:
    view = replace(lab(app(B), me=A, procs=[proc()]), starts_held=True)
    assert [a for a in run(view) if isinstance(a, Unload)] == [
        Unload(WEB, "double claim: beta hosts it")
    ]

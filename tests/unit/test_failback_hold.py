"""A hand-over waits for its target's start hold (FIG. 8): pure decisions at explicit times.

A primary that comes back holds its starts for one failover timeout (``View.starts_held``).
The backup keeps running the program until it has heard the primary for that long
(``Liveness.since``, ``Policy.start_hold``), then unloads and releases as before; so the
program is down for the hand-over only, not for the rest of the hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
from ndsclust.sentinel.actions import (
    Action,
    EventKind,
    Notify,
    RecordEvent,
    Release,
    SetState,
    Unload,
)
from ndsclust.sentinel.decide import decide
from ndsclust.sentinel.detector import Detector, Liveness, heard_since
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.view import Policy, View
from ndsclust.simulate.engine import Sim, Timing

A, B, G = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
ALL = (A, B, G)
WEB = Tag("web")
CHANNELS = frozenset({"lan", "disk"})
NOW = 10_000.0
HOLD = 0.8  # timeouts.failover: how long a server that (re)starts holds its starts
POLICY = Policy(start_hold=HOLD)

RUNNING = StateValue(AppState.RUNNING)
LOADING = StateValue(AppState.LOADING)
UNLOADING = StateValue(AppState.UNLOADING)
AWAITING = StateValue(AppState.AWAITING_FAILBACK)
FAILBACK = StateValue(AppState.LOADING, EventKind.FAILBACK.value)


def web(
    host: ServerName = B, *, auto: bool = True, state: StateValue = RUNNING, request: str = ""
) -> App:
    return App(
        tag=WEB,
        type=AppType.CAPABLE,
        command=("/usr/bin/web",),
        primary=A,
        backups=(B, G),
        host=host,
        auto_recover=auto,
        state=state,
        request=Request.parse(request) if request else None,
    )


def copy(state: ProcState = ProcState.RUNNING, *, stop: bool = False) -> ProcInfo:
    return ProcInfo(
        WEB,
        state,
        None if state is ProcState.EXITED else 4242,
        0.0,
        exit_code=0 if state is ProcState.EXITED else None,
        stop_requested=stop,
    )


def view(
    app: App,
    *,
    me: ServerName = B,
    since: Mapping[ServerName, float],
    procs: Iterable[ProcInfo] = (copy(),),
    maintenance: Iterable[ServerName] = (),
) -> View:
    """Every peer heard now; ``since``: from when (a peer left out was never heard yet)."""
    down = set(maintenance)
    servers = {
        s: Server(s, state=ServerState.MAINTENANCE if s in down else ServerState.UP) for s in ALL
    }
    seen = {p: CHANNELS for p in ALL if p != me}
    liveness = Liveness(me=me, configured=CHANNELS, seen=seen, since=dict(since))
    return View(
        apps={WEB: app}, servers=servers, liveness=liveness, procs={p.tag: p for p in procs}
    )


def run(v: View, now: float = NOW, policy: Policy = POLICY) -> list[Action]:
    return decide(v, v.liveness.me, now, policy)


def returned(heard: float) -> dict[ServerName, float]:
    """The primary heard again ``heard`` seconds ago; gamma heard all along."""
    return {A: NOW - heard, G: NOW - 3600.0}


# ----------------------------------------------------------------- heard since (detector)


def test_heard_since_keeps_the_first_time_and_restarts_after_a_silence() -> None:
    det = Detector({"lan": 1.0}, me=A, started=0.0, startup_grace=0.0)
    first = heard_since(det.liveness({"lan": {B: 10.0}}, 10.0, [B, G]), {}, 10.0)
    assert first.since == {B: 10.0}  # gamma, never heard, has no time
    later = heard_since(det.liveness({"lan": {B: 14.9}}, 15.0, [B, G]), first.since, 15.0)
    assert later.since == {B: 10.0}
    assert later.heard_for(B, 15.0) == 5.0 and later.heard_over(B, 15.0, 5.0)
    assert later.heard_for(G, 15.0) == 0.0 and later.heard_for(A, 15.0) == float("inf")
    assert later.settled(15.0, 5.0) == {B} and later.settled(15.0, 5.1) == frozenset()
    # Silent past its timeout: dead, forgotten; heard again: counted from then.
    gone = heard_since(det.liveness({"lan": {B: 14.9}}, 16.5, [B]), later.since, 16.5)
    assert gone.since == {}
    back = heard_since(det.liveness({"lan": {B: 20.0}}, 20.1, [B]), gone.since, 20.1)
    assert back.since == {B: 20.1} and not back.heard_over(B, 20.5, HOLD)


def test_a_peer_without_since_or_not_heard_now_was_heard_for_no_time() -> None:
    lv = Liveness(me=A, configured=CHANNELS, seen={B: frozenset(), G: CHANNELS}, since={B: 1.0})
    assert lv.heard_for(B, 100.0) == 0.0  # silent now: its old time does not count
    assert lv.heard_for(G, 100.0) == 0.0  # heard, but the shell did not say since when


# ------------------------------------------------------------------ the backup's decision


def test_backup_keeps_running_while_the_primary_was_heard_for_less_than_its_hold() -> None:
    for heard in (0.0, 0.3, HOLD - 0.01):
        assert run(view(web(), since=returned(heard))) == [], heard


def test_backup_unloads_once_the_primary_was_heard_for_its_hold_then_releases() -> None:
    out = run(view(web(), since=returned(HOLD)))
    assert out == [Unload(WEB, "failback to alpha"), SetState(WEB, UNLOADING)]
    # The release, once the copy has ended, is the hand-over as it always was.
    ended = copy(ProcState.EXITED, stop=True)
    out = run(view(web(state=UNLOADING), since=returned(HOLD + 0.1), procs=[ended]))
    assert out == [
        Release(WEB, A, B, "failback to alpha", FAILBACK),
        RecordEvent(EventKind.FAILBACK, WEB, "failback to alpha"),
        Notify(EventKind.FAILBACK, WEB, "failback to alpha"),
    ]


def test_the_wait_never_stops_a_copy_nor_swaps_the_host() -> None:
    # While it waits nothing runs on the primary: the host names this backup and its copy
    # keeps running, so the primary cannot start a second one (invariant 1 as before).
    for heard in (0.0, 0.5):
        out = run(view(web(), since=returned(heard)))
        assert not [a for a in out if isinstance(a, (Unload, Release))]


def test_a_waiting_backup_shows_running_once_its_program_runs() -> None:
    out = run(view(web(state=LOADING), since=returned(0.1)))
    assert out == [SetState(WEB, RUNNING)]
    starting = copy(ProcState.STARTING)
    assert run(view(web(state=LOADING), since=returned(0.1), procs=[starting])) == []


def test_nothing_running_here_is_handed_back_at_once() -> None:
    # A backup whose copy is not running (its sentinel just restarted, the program ended)
    # keeps nothing up by waiting: it releases at once, as before.
    for procs in ((), (copy(ProcState.EXITED, stop=True),)):
        out = run(view(web(state=UNLOADING), since=returned(0.0), procs=procs))
        assert out[0] == Release(WEB, A, B, "failback to alpha", FAILBACK)


def test_a_primary_never_heard_yet_is_waited_for() -> None:
    # Alive by start-up grace only, or no time known: not heard for its hold.
    assert run(view(web(), since={G: NOW - 3600.0})) == []


def test_no_hold_configured_means_no_wait() -> None:
    out = run(view(web(), since=returned(0.0)), policy=Policy())
    assert out[0] == Unload(WEB, "failback to alpha")


# ---------------------------------------------------------------------- operators' requests


def test_a_requested_failback_waits_pending_then_is_honoured() -> None:
    # The primary cannot start during its hold anyway: releasing at once would only stop
    # the program sooner. The request stays pending, the state as it is.
    approved = web(auto=False, state=AWAITING, request="failback")
    assert run(view(approved, since=returned(0.2))) == []
    text = "failback to alpha (approved)"
    assert run(view(approved, since=returned(HOLD))) == [
        Unload(WEB, text),
        SetState(WEB, UNLOADING),
    ]
    done = run(
        view(approved, since=returned(HOLD + 0.2), procs=[copy(ProcState.EXITED, stop=True)])
    )
    assert done[0] == Release(WEB, A, B, text, FAILBACK, Request.parse("failback"))


def test_a_migrate_to_a_server_just_back_waits_for_its_hold() -> None:
    pinned = web(A, request="migrate:gamma")
    since = {B: NOW - 3600.0, G: NOW - 0.2}
    assert run(view(pinned, me=A, since=since)) == []
    since = {B: NOW - 3600.0, G: NOW - HOLD}
    assert run(view(pinned, me=A, since=since))[0] == Unload(
        WEB,
        "migrate to gamma; it stays there (no automatic failback) until an operator moves it: ndsclust failback web sends it back to alpha",
    )


def test_unload_and_maintenance_moves_do_not_wait() -> None:
    out = run(view(web(request="unload"), since=returned(0.0)))
    assert out[0] == Unload(WEB, "unload requested")
    # beta in maintenance moves it to the first fit server, alpha, just back: at once (a
    # stopping sentinel has a deadline, an operator emptying a server wants it empty).
    out = run(view(web(), since=returned(0.0), maintenance=[B]))
    assert out[0] == Unload(WEB, "beta is in maintenance: moving to alpha")


# ------------------------------------------------------------------------- the simulation


def _timeline(request: str = "") -> tuple[Sim, float, list[tuple[float, ServerName]]]:
    """Fail ``web`` over to beta, bring alpha back; return the sim, when alpha came back and,
    per step, where the program was running."""
    timing = Timing(step=0.1, failover=0.8, fence=0.3, channels=CHANNELS)
    app = web(A, auto=not request)
    sim = Sim([Server(s) for s in ALL], [app], timing=timing, procs={A: [copy()]})
    sim.kill(A)
    for _ in range(40):
        sim.step()
    assert sim.running_on(WEB) == [B]
    sim.revive(A)
    back = sim.now
    if request:
        sim.request(WEB, request)
    runs = [(back, s) for s in sim.runners(WEB)]
    for _ in range(40):
        sim.step()
        runs += [(sim.now, s) for s in sim.runners(WEB)]
    assert sim.app(WEB).host == A and sim.running_on(WEB) == [A]
    return sim, back, runs


def test_sim_backup_runs_until_the_primary_hold_is_over_then_hands_over() -> None:
    for request in ("", "failback"):
        sim, back, runs = _timeline(request)
        hold_end = back + sim.timing.hold
        last_on_b = max(t for t, s in runs if s == B)
        first_on_a = min(t for t, s in runs if s == A)
        # beta kept it through alpha's hold; the gap is the hand-over alone: beta's copy
        # stopping, the release, alpha loading (3 steps), not the rest of the hold.
        assert last_on_b >= hold_end - 1e-9, request
        assert first_on_a - last_on_b <= 3 * sim.timing.step + 1e-9, request
        assert sim.policy.start_hold == sim.timing.hold

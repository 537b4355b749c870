"""FIGS. 7B and 8: handing an application back to its primary, and handing over in general.

The backup side (FIG. 7B, splice D; FIG. 9 steps 1050-1070): once the primary is alive on
any channel again, with auto-recover (218A) the backup unloads the program (868 dismount,
870 deactivate) and then swaps the host back to the primary; without it the application
shows ``awaiting-failback`` and the backup asks the operators (864) until one approves
with a ``failback`` request. The primary side (splice C; FIG. 8 steps 906-908): it loads
the program once the host names it; a cluster-aware program may wait loaded but paused
and starts the moment the host names this server.

``depart`` is that hand-over protocol for every move away from this server (failback,
migrate, maintenance, unload): unload first, swap the host only once the program has
ended, so two servers never run it at once.

A primary that comes back holds its starts for one failover timeout (``View.starts_held``:
a claim decided while it was silent may still land). A backup that let go at once would
leave the program down for the rest of that hold, so a failback, automatic or requested,
and a migrate wait while their target has been heard for less than the hold
(``target_held``): the program keeps running here, a request stays pending, and the
hand-over begins once the target can start it. The wait changes nothing of the hand-over
itself, so no double run can follow from it: this copy runs until the unload ends it, the
host is swapped only after that, and the target starts only once it sees the swap and its
own hold is over. Only a copy that runs here waits: with nothing running there is nothing
to keep up, and the host is handed over at once, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from ndsclust.model import App, AppState, AppType, StateValue
from ndsclust.sentinel.actions import (
    FAILBACK_HELD_REASON,
    PINNING,
    Action,
    EventKind,
    LoadPaused,
    Release,
    Unload,
    announce,
    placed,
    placed_by,
)
from ndsclust.sentinel.procs import ProcInfo
from ndsclust.sentinel.view import Move, Viewpoint, paused, running, stopped

RUNNING = StateValue(AppState.RUNNING)
AWAITING = StateValue(AppState.AWAITING_FAILBACK)
# The moves that wait for their target's start hold (``target_held``): the ones that send
# an application to a server of the operator's choosing, which may have just come back. A
# maintenance move or a stopping sentinel's hand-over goes at once: the server is leaving.
WAITING_MOVES = frozenset({EventKind.FAILBACK, EventKind.MIGRATE})


def wants_paused_copy(vp: Viewpoint, app: App) -> bool:
    """FIG. 6 step 612 / FIG. 7B: a cluster-aware program waits paused on its primary while
    another server hosts it, if the primary may run it at all."""
    return (
        app.type is AppType.AWARE
        and app.primary == vp.me
        and app.host is not None
        and app.host != vp.me
        and vp.unfit(app, vp.me) is None
    )


def as_primary(vp: Viewpoint, app: App, proc: ProcInfo | None) -> list[Action]:
    """The primary while a live backup hosts the application (FIG. 8 step 906: wait)."""
    if wants_paused_copy(vp, app) and stopped(proc):
        if proc is not None and proc.failed and (proc.refused or vp.restarts_left(proc) <= 0):
            # A paused copy that keeps crashing is not started again and again (claim 57's
            # budget applies to it too): the failback will start a fresh copy instead.
            return []
        return [LoadPaused(app.tag)]
    return []


@dataclass(frozen=True, slots=True)
class Stay:
    """The backup keeps the application: the state it shows (a hold names itself and how to
    release it), the event announced when that state is written, and ``notes``: actions
    that say, once, why an application that looks as if it should fail back does not."""

    state: StateValue
    kind: EventKind | None = None
    text: str = ""
    notes: tuple[Action, ...] = ()


def as_backup(vp: Viewpoint, app: App) -> Move | Stay:
    """This backup hosts ``app``: fail back now (a Move) or keep it (a Stay)."""
    primary = app.primary
    pin = placed_by(app.state)
    back = vp.unfit(app, primary) is None
    if pin in PINNING:
        # An operator migrated it here: it stays until an operator moves it again. The
        # entry says so (running(migrate), written with the swap), not the audit trail.
        notes: list[Action] = []
        if back:
            notes = vp.say(app.tag, EventKind.FAILBACK_HELD, pinned_text(app, vp.me), again=False)
        return Stay(placed(AppState.RUNNING, pin), notes=tuple(notes))
    if not back:
        # FIG. 7B 860: the primary has not recovered (or may not take it): keep it here.
        return Stay(RUNNING)
    if not app.auto_recover:
        return Stay(AWAITING, EventKind.AWAITING_FAILBACK, awaiting_text(app))
    if primary in vp.failed_on(app):
        # Claim 58 fails back once the failure is corrected; a program that kept failing on
        # the primary is not sent straight back to fail again.
        held = StateValue(
            AppState.RUNNING,
            f"{FAILBACK_HELD_REASON}: the program kept failing on {primary} within "
            f"{vp.policy.flap_window:g}s; fails back when that expires or after: "
            f"ndsclust cleanup {app.tag}",
        )
        return Stay(held, EventKind.FAILBACK_HELD, f"{primary} is back; {held.reason}")
    return Move(primary, EventKind.FAILBACK, f"failback to {primary}")


def pinned_text(app: App, me: str) -> str:
    return (
        f"{app.primary} is back but it stays on {me}, where an operator migrated it (no "
        f"automatic failback after a migrate); to send it back: ndsclust failback {app.tag}"
    )


def awaiting_text(app: App) -> str:
    return (
        f"{app.primary} is back; failback waits for an operator's approval: "
        f"ndsclust failback {app.tag}"
    )


def target_held(vp: Viewpoint, move: Move, proc: ProcInfo | None) -> bool:
    """FIG. 8: ``move``'s target may still hold its starts, so the program running here stays
    until it does not: the target has been heard without a break for less than
    ``Policy.start_hold`` (``Liveness.since``, kept by ``detector.heard_since``)."""
    to = move.to
    if to is None or to == vp.me or move.kind not in WAITING_MOVES or not running(proc):
        return False
    hold = vp.policy.start_hold
    return hold > 0 and not vp.view.liveness.heard_over(to, vp.now, hold)


def held_stay(vp: Viewpoint, app: App) -> Stay:
    """What the host shows while a hand-over waits for ``target_held``: the state it has
    (running, a hold, awaiting-failback: the request it waits to honour is pending), or
    running once its program runs."""
    if app.state.state in (AppState.RUNNING, AppState.AWAITING_FAILBACK):
        return Stay(app.state)
    return Stay(vp.kept(app, AppState.RUNNING))


def depart(vp: Viewpoint, app: App, proc: ProcInfo | None, move: Move) -> list[Action]:
    """Hand ``app`` over as ``move`` says: unload, then (next cycles) swap the host."""
    if running(proc) or paused(proc):
        # FIG. 7B 868/870: the program ends here before the host may name anyone else.
        return [Unload(app.tag, move.text), *vp.set_state(app, StateValue(AppState.UNLOADING))]
    if not stopped(proc):
        return []  # still stopping: the swap waits until the program has ended
    # One atomic modify: the host swap, the state (loading(<kind>) tells the new host why
    # it gets the application; stopped when nobody will host it) and the request honoured.
    state = StateValue(AppState.STOPPED) if move.to is None else placed(AppState.LOADING, move.kind)
    release = Release(app.tag, move.to, vp.me, move.text, state, move.request)
    return [release, *announce(move.kind, app.tag, move.text)]

"""Operators' requests (``ndsclustRequest``): load, unload, failback, cleanup, migrate:<server>.

A request is a value an operator writes (``ndsclust load TAG`` or ``ldapmodify``); exactly
one server answers it and consumes it with a compare-and-swap delete, together with what
it does:

- the host answers requests about what it hosts (unload, migrate, failback, load);
- with no host, the server that loads it answers ``load`` (the first fit server in the
  application's order) and ``migrate:<server>`` (the named server); what cannot be
  honoured is answered by the speaker (the first live server in that order);
- with a dead host, ``unload`` is answered by the speaker, which removes the dead host;
  the others wait for the failover (``failover.take_over``) and then for the new host.

A request that cannot be honoured is consumed with a ``request_rejected`` event saying
why; one with nothing to do, with ``request_ignored``. Nothing moves in either case.

``cleanup`` (like ``pcs resource cleanup``) is answered by the host, or by the speaker when
nobody hosts it, with a ``cleanup`` event: every failure before it is forgotten
(``History.cleaned``: restarts in place, the servers it failed on, flap damping), and a
host whose program was given up (``failed(...)``, ``error(...)``) starts it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ndsclust.model import App, AppState, Request, RequestKind, ServerName, StateValue
from ndsclust.sentinel.actions import (
    FAILBACK_HELD_REASON,
    Action,
    ConsumeRequest,
    EventKind,
    Load,
    Release,
    announce,
    handed_off_from,
)
from ndsclust.sentinel.failover import claim_and_load
from ndsclust.sentinel.procs import ProcInfo
from ndsclust.sentinel.view import Move, Viewpoint, running, stopped

STOPPED = StateValue(AppState.STOPPED)


@dataclass(frozen=True, slots=True)
class Answer:
    """How the host answers a request: a move away, or actions done here and now.

    ``final``: the answer decides everything for this application this cycle.
    """

    move: Move | None = None
    actions: tuple[Action, ...] = ()
    final: bool = False


def _decline(request: Request, kind: EventKind, text: str, app: App) -> list[Action]:
    return [ConsumeRequest(app.tag, request), *announce(kind, app.tag, f"{request}: {text}")]


def migrate_problem(vp: Viewpoint, app: App, target: ServerName | None) -> str | None:
    """Why ``app`` cannot migrate to ``target``, or None."""
    if target is None:
        return "names no server"
    if target != vp.me and target not in vp.view.servers:
        return f"{target} is not a known server"
    if target not in app.servers():
        return f"{target} is neither its primary nor a backup ({', '.join(app.servers())})"
    return vp.unfit(app, target)


def as_host(vp: Viewpoint, app: App, proc: ProcInfo | None) -> Answer:
    """This server hosts ``app`` and an operator's request is pending."""
    request = app.request
    assert request is not None
    me = vp.me
    match request.kind:
        case RequestKind.UNLOAD:
            return Answer(move=Move(None, EventKind.UNLOAD, "unload requested", request))
        case RequestKind.CLEANUP:
            return Answer(final=True, actions=tuple(cleanup(vp, app, proc, request)))
        case RequestKind.MIGRATE:
            target = request.target
            if target == me and not running(proc) and me in app.servers():
                # The operator wants it here, where it is not running (given up): start it,
                # like a load, whatever the failure counts say.
                return _load_here(
                    vp, app, request, f"migrate to {me} (requested; it was not running)"
                )
            if target == me:
                return Answer(
                    actions=tuple(
                        _decline(request, EventKind.REQUEST_IGNORED, f"{me} already hosts it", app)
                    )
                )
            problem = migrate_problem(vp, app, target)
            if problem is not None or target is None:
                return Answer(
                    actions=tuple(
                        _decline(
                            request, EventKind.REQUEST_REJECTED, f"nothing moves: {problem}", app
                        )
                    )
                )
            return Answer(move=Move(target, EventKind.MIGRATE, migrate_text(app, target), request))
        case RequestKind.FAILBACK:
            primary = app.primary
            if primary == me:
                return Answer(
                    actions=tuple(
                        _decline(
                            request,
                            EventKind.REQUEST_IGNORED,
                            f"nothing to fail back: the primary {me} hosts it",
                            app,
                        )
                    )
                )
            problem = vp.unfit(app, primary)
            if problem is not None:
                return Answer(
                    actions=tuple(
                        _decline(
                            request, EventKind.REQUEST_IGNORED, f"cannot fail back: {problem}", app
                        )
                    )
                )
            # FIG. 7B 866: the operator approved.
            return Answer(
                move=Move(primary, EventKind.FAILBACK, f"failback to {primary} (approved)", request)
            )
        case RequestKind.LOAD:
            if me not in app.servers():
                return Answer(
                    actions=tuple(
                        _decline(
                            request,
                            EventKind.REQUEST_REJECTED,
                            f"{me} hosts it but is neither its primary nor a backup",
                            app,
                        )
                    )
                )
            if vp.in_maintenance(me):
                return Answer(
                    actions=tuple(
                        _decline(
                            request,
                            EventKind.REQUEST_IGNORED,
                            f"{me} hosts it and is in maintenance: it moves to the next server",
                            app,
                        )
                    )
                )
            if running(proc):
                return Answer(
                    actions=tuple(
                        _decline(
                            request, EventKind.REQUEST_IGNORED, f"already running on {me}", app
                        )
                    )
                )
            # An operator's load starts it again even past the restart limit (claim 57).
            return _load_here(vp, app, request, f"load on {me} (requested)")


def _load_here(vp: Viewpoint, app: App, request: Request, text: str) -> Answer:
    """Start the program on this host now; the request goes with the state in one modify."""
    kind = EventKind.MIGRATE if request.kind is RequestKind.MIGRATE else EventKind.LOAD
    state = vp.kept(app, AppState.LOADING)
    return Answer(
        final=True,
        actions=(
            ConsumeRequest(app.tag, request, state),
            Load(app.tag),
            *announce(kind, app.tag, text),
        ),
    )


def migrate_text(app: App, target: ServerName) -> str:
    """A migrate's event: it pins the application where it goes, and says how to undo it."""
    if target == app.primary:
        return f"migrate to {target}"
    return (
        f"migrate to {target}; it stays there (no automatic failback) until an operator "
        f"moves it: ndsclust failback {app.tag} sends it back to {app.primary}"
    )


def cleanup(vp: Viewpoint, app: App, proc: ProcInfo | None, request: Request) -> list[Action]:
    """Forget the failures (the ``cleanup`` event does, ``History.cleaned``); a host whose
    program was given up starts it again at once, so nothing waits for the event."""
    given_up = app.state.state in (AppState.FAILED, AppState.ERROR)
    text = f"failure counts cleared by an operator (on {vp.me})"
    if app.host == vp.me and given_up and stopped(proc) and vp.me in app.servers():
        return [
            ConsumeRequest(app.tag, request, vp.kept(app, AppState.LOADING)),
            Load(app.tag),
            *announce(EventKind.CLEANUP, app.tag, text + f"; starting it on {vp.me}"),
        ]
    state = STOPPED if app.host is None else None
    held = app.state.reason.startswith(FAILBACK_HELD_REASON)
    if handed_off_from(app.state) or (held and app.primary not in vp.history(app.tag).seen):
        # The failures only the state names are forgotten too (those the events name are
        # forgotten once the cleanup event shows: ``History.cleaned``).
        state = StateValue(app.state.state)
    return [ConsumeRequest(app.tag, request, state), *announce(EventKind.CLEANUP, app.tag, text)]


def unhosted(vp: Viewpoint, app: App) -> list[Action]:
    """Nobody hosts ``app`` (FIG. 6 step 606: an operator unloaded it)."""
    request = app.request
    speaker = vp.speaker(app) == vp.me
    if request is None:
        # Nobody hosts it, so it is stopped, whatever an interrupted move left behind.
        return vp.set_state(app, STOPPED) if speaker else []
    match request.kind:
        case RequestKind.LOAD:
            target = vp.first_fit(app, None)
            if target == vp.me:
                return claim_and_load(
                    vp, app, EventKind.LOAD, f"load on {vp.me} (requested)", request
                )
            if target is None and speaker:
                return _decline(
                    request,
                    EventKind.REQUEST_REJECTED,
                    f"no server can run it: {vp.why_none_fit(app, None)}",
                    app,
                )
            return []
        case RequestKind.MIGRATE:
            problem = migrate_problem(vp, app, request.target)
            if problem is None:
                if request.target == vp.me:
                    return claim_and_load(
                        vp, app, EventKind.MIGRATE, f"migrate to {vp.me} (it was unloaded)", request
                    )
                return []
            if speaker:
                return _decline(
                    request, EventKind.REQUEST_REJECTED, f"nothing moves: {problem}", app
                )
            return []
        case RequestKind.CLEANUP:
            return cleanup(vp, app, None, request) if speaker else []
        case RequestKind.UNLOAD | RequestKind.FAILBACK:
            if speaker:
                return _decline(
                    request, EventKind.REQUEST_IGNORED, "it is not loaded anywhere", app
                )
            return []


def unload_from_dead_host(vp: Viewpoint, app: App) -> list[Action]:
    """``unload`` while the host is dead: the speaker removes the dead host."""
    request = app.request
    host = app.host
    assert request is not None and request.kind is RequestKind.UNLOAD and host is not None
    if vp.speaker(app) != vp.me:
        return []
    text = f"unload requested; host {host} is dead"
    return [
        Release(app.tag, None, host, text, STOPPED, request),
        *announce(EventKind.UNLOAD, app.tag, text),
    ]

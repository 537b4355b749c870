"""FIGS. 7A and 9, claim 57: taking an application over when its host or its program fails.

Host failure (FIG. 7A, 806-816; FIG. 9, 1020-1040): when every liveness channel is silent
about the host, the candidates are the application's servers in the operator's order
without the dead host (so the primary comes first when a backup host dies). Only live
candidates outside maintenance count. A candidate lacking a listed resource does not take
it (claim 57: "sufficient resources") and says so itself: each server speaks only for
itself. The first candidate with every resource swaps the host from the dead server to
itself, then loads. The patent's backup loads before it writes the host (FIG. 9,
1030-1040); the swap comes first here because the compare-and-swap is what guarantees a
single taker when two backups decide at once. When nobody can take it, the first live
server in the application's order marks it failed, once.

Program failure (claim 57): a program that exited on its own is restarted in place up to
``max_restarts`` times within ``restart_window``, then handed to the first fit server.

Flap damping: a failover or hand-off that would make more than ``flap_max_failovers``
failure moves within ``flap_window`` does not happen; the application stays put, failed,
until an operator's request moves it or the window passes.
"""

from __future__ import annotations

from ndsclust.model import App, AppState, Request, RequestKind, ServerName, StateValue
from ndsclust.sentinel.actions import (
    Action,
    Claim,
    ConsumeRequest,
    EventKind,
    Load,
    RecordEvent,
    Release,
    Restart,
    announce,
    placed,
)
from ndsclust.sentinel.procs import ProcInfo
from ndsclust.sentinel.view import Viewpoint

LOADING = StateValue(AppState.LOADING)


def failed(reason: str) -> StateValue:
    return StateValue(AppState.FAILED, reason)


def claim_and_load(
    vp: Viewpoint, app: App, kind: EventKind, text: str, honours: Request | None = None
) -> list[Action]:
    """Swap the host from what the view shows to this server, then start the program.

    The swap comes first: if it fails (``SwapConflict``) the shell drops the rest, so a
    server that lost the race never starts anything. The same atomic modify writes
    ``loading(<kind>)`` (why the application is here, kept on the entry) and consumes
    ``honours``, the operator's request this claim carries out.
    """
    claim = Claim(app.tag, app.host, text, placed(AppState.LOADING, kind), honours)
    return [claim, Load(app.tag), *announce(kind, app.tag, text)]


def take_over(vp: Viewpoint, app: App) -> list[Action]:
    """``app.host`` is dead (every channel silent) and is not this server."""
    host = app.host
    assert host is not None and host != vp.me
    request = app.request
    if request is not None and request.kind is RequestKind.MIGRATE:
        target = request.target
        if target is not None and target != host and vp.unfit(app, target) is None:
            # The operator named the new host: it takes over directly, no detour.
            if target == vp.me:
                return claim_and_load(
                    vp,
                    app,
                    EventKind.MIGRATE,
                    f"migrate to {target} (host {host} is dead)",
                    request,
                )
            return []
    out: list[Action] = []
    taker: ServerName | None = None
    skipped: list[str] = []
    for server in app.servers():
        if server == host or not vp.alive(server) or vp.in_maintenance(server):
            continue
        if server != vp.me and server not in vp.view.servers:
            continue
        missing = vp.missing(app, server)
        if missing:
            if server == vp.me:
                out += vp.say(
                    app.tag,
                    EventKind.RESOURCE_MISSING,
                    f"{vp.me} lacks {', '.join(sorted(missing))}: cannot take it over from {host}",
                )
            else:
                skipped.append(f"{server} lacks {', '.join(sorted(missing))}")
            continue
        taker = server
        break
    if taker is None:
        if vp.speaker(app) == vp.me:
            reason = f"no server can take it over from {host}: {vp.why_none_fit(app, host)}"
            out += vp.set_state(app, failed(reason), EventKind.FAILED)
            if request is not None:
                out += [
                    ConsumeRequest(app.tag, request),
                    *announce(EventKind.REQUEST_REJECTED, app.tag, f"{request}: {reason}"),
                ]
        return out
    if taker != vp.me:
        return out
    if request is None and vp.flapping(app.tag):
        # An operator's request overrides the damping: someone is watching.
        return out + vp.set_state(app, failed(vp.flap_reason(host)), EventKind.FLAP_DAMPED)
    silent = ",".join(sorted(vp.view.liveness.silent(host))) or "-"
    # A pending load is honoured by this claim; other requests wait for the new host.
    load = request if request is not None and request.kind is RequestKind.LOAD else None
    taken = out + claim_and_load(
        vp, app, EventKind.FAILOVER, f"failover from {host} (silent channels: {silent})", load
    )
    for text in skipped:
        # The taker also names the backups it passed over (FIG. 7A): the skipped server may
        # not get to say it before the claim makes the question moot.
        taken += announce(EventKind.RESOURCE_MISSING, app.tag, f"skipped {text}")
    return taken


def supervise(vp: Viewpoint, app: App, proc: ProcInfo) -> list[Action]:
    """This server hosts ``app`` and its program exited on its own (claim 57)."""
    why = proc.reason or f"exit code {proc.exit_code}"
    policy = vp.policy
    left = vp.restarts_left(proc)
    if left > 0:
        n = policy.max_restarts - left + 1
        return [
            Restart(app.tag),
            RecordEvent(
                EventKind.RESTART,
                app.tag,
                f"{why}; restart {n} of {policy.max_restarts} within {policy.restart_window:g}s",
            ),
        ]
    limit = (
        f"{why}; restart limit reached ({policy.max_restarts} within {policy.restart_window:g}s)"
    )
    target = vp.first_fit(app, vp.me)
    if target is None:
        reason = f"{limit}; no other server can take it: {vp.why_none_fit(app, vp.me)}"
        return vp.set_state(app, failed(reason), EventKind.FAILED)
    if vp.flapping(app.tag):
        return vp.set_state(app, failed(vp.flap_reason(vp.me)), EventKind.FLAP_DAMPED)
    # The program has already ended: nothing to unload before the swap.
    text = f"handoff to {target}: {limit}"
    release = Release(app.tag, target, vp.me, text, placed(AppState.LOADING, EventKind.HANDOFF))
    return [release, *announce(EventKind.HANDOFF, app.tag, text)]

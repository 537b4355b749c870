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

A dead host never keeps an application, whatever its failure counts say: candidates where
the program failed recently (``Viewpoint.ordered``) come last, but still come.

Program failure (claim 57): a program that exited on its own is restarted in place up to
``max_restarts`` times within ``restart_window``; one the sentinel refused to start
(``programs.allowed_commands``, ``ProcInfo.refused``) is not, since trying again cannot
help. Then the server hands it to the next fit server in the application's order where it
has not failed within ``flap_window`` (primary, then each backup), and each hand-off is
recorded as that server's failure. When every fit server has had its turn, or after
``flap_max_failovers`` hand-offs within ``flap_window`` (flap damping), the program is
given up where it is: ``failed(reason)`` (``error(reason)`` when refused), until an
operator's ``cleanup`` (which forgets the failures) or ``load``. Only these failures
count: failovers, migrations, maintenance moves, failbacks and graceful stops never do.
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
    handed_off,
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
    for server in vp.ordered(app, host):
        if not vp.alive(server) or vp.in_maintenance(server):
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
    # No damping here: a dead host runs nothing, so leaving the application on it would
    # leave it down whatever its failure counts say.
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
    """This server hosts ``app`` and its program exited on its own or could not start
    (claim 57)."""
    why = proc.reason or f"exit code {proc.exit_code}"
    policy = vp.policy
    left = 0 if proc.refused else vp.restarts_left(proc)
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
    limit = why  # a refusal names the server already
    if not proc.refused:
        limit += (
            f"; restart limit reached ({policy.max_restarts} within "
            f"{policy.restart_window:g}s) on {vp.me}"
        )
    target = vp.next_untried(app, vp.me)
    if target is None:
        reason = f"{limit}; given up: {_tried(vp, app)}; {release(app)}"
        if proc.refused:
            return vp.set_state(app, StateValue(AppState.ERROR, reason), EventKind.ERROR)
        return vp.set_state(app, failed(reason), EventKind.FAILED)
    if vp.flapping(app):
        return vp.set_state(app, failed(vp.flap_reason(app.tag, vp.me)), EventKind.FLAP_DAMPED)
    # The program has already ended: nothing to unload before the swap. The hand-off event
    # is this server's failure (``History``): the program is not handed back here soon.
    text = f"handoff to {target}: {limit}"
    failed_here = vp.failed_on(app) | {vp.me}
    state = handed_off(s for s in app.servers() if s in failed_here)
    release_ = Release(app.tag, target, vp.me, text, state)
    return [release_, *announce(EventKind.HANDOFF, app.tag, text)]


def release(app: App) -> str:
    """How an operator releases an application given up after program failures."""
    return f"fix the cause, then: ndsclust cleanup {app.tag}"


def _tried(vp: Viewpoint, app: App) -> str:
    """Why no other server gets a turn, server by server in the application's order."""
    bad = vp.failed_on(app) | {vp.me}
    parts = [
        f"failed on {s}" if s in bad else (vp.unfit(app, s) or f"{s} can take it")
        for s in app.servers()
    ]
    return ", ".join(parts)

"""The sentinel's decision core: from one ``View``, what this server does next (FIGS. 6-9).

``decide(view, me, now, policy)`` is pure: no I/O, no clock reads. The shell calls it
every cycle with a fresh view and executes the actions it returns (``actions`` lists
them). Calling it again on the same view returns the same actions; calling it on the next
view never repeats work in flight: a program STARTING counts as loaded, one STOPPING as
being unloaded, a state already written is not written again, and a standing condition is
recorded at most once per ``Policy.repeat_after``.

What the shell must guarantee:

- The view is complete (built after the watch's refresh) and shows this server's own
  successful writes from the cycle before (host swaps above all: a server that claimed an
  application and does not see itself as host would take its own new copy for a double
  claim and unload it).
- Actions run in list order. Actions are grouped by tag (tags in sorted order) and the
  groups are independent. Within a group, a compare-and-swap (``Claim``, ``Release``,
  ``ConsumeRequest``) that fails with ``SwapConflict`` drops the rest of that group for
  this cycle: the next view decides again. So each group puts its swap before whatever
  depends on it: ``Claim`` before ``Load`` (a server that lost the race starts nothing),
  ``Release`` only once the local program has ended (it is never in the same group as the
  ``Unload`` that ends it), the request consumed with the swap that honours it, events
  last. Other failures (an unreachable provider) may abandon the cycle: nothing in a group
  is unsafe to leave undone.
- ``Load`` on a paused copy resumes it; ``Load`` or ``Restart`` on an exited program starts
  it again; ``Unload`` begins a stop and returns.
- ``View.history`` and ``View.said`` are kept as their docstrings say.
- Liveness has a grace after this sentinel starts and after its fence ends: a peer not
  yet heard since counts as alive until its channels' timeouts have passed. Silence this
  server suffered while cut off says nothing about its peers; without the grace, a server
  rejoining would take over from a live host it simply has not heard yet.

What ``decide`` guarantees, per application (``me`` is this server):

- Fenced (docs/design.md section 4): every local program is unloaded; nothing else happens.
- Replication not caught up (FIG. 6 step 614): nothing is claimed, loaded, unloaded or
  written, except ``replication-pending`` on the applications this server would start.
- Starts held (just rejoined, ``View.starts_held``): an application whose actions would
  start its program here gets no action at all this cycle. The other side of that hold: a
  failback (automatic or requested) or migrate to a server heard for less than
  ``Policy.start_hold`` waits, its program running here (``failback.target_held``).
- Host is ``me`` (FIG. 8 step 908, FIG. 9): requests first (``requests``); then a move away
  if this server is in maintenance or, as a backup, the primary is back (``failback``;
  not when an operator migrated it here, nor while its program's failures on the primary
  count); otherwise keep the program running: load it, restart it after a failure or hand
  it to the next server where it has not failed (claim 57, ``failover.supervise``), and
  show ``running``, or the hold that keeps it here with its reason (``failback.Stay``).
  A host that is neither primary nor backup is an error: the program does not run.
- Host is another server or none, and the program runs here: unload it. After a
  partition heals the directory holds one host (the more current write, FIGS. 4E-4H);
  the loser unloads and records a ``double_claim``.
- Host is none: requests only (``requests.unhosted``); the first live server keeps the
  state at ``stopped``.
- Host is alive elsewhere: a cluster-aware primary keeps a paused copy (FIG. 7B); a
  paused copy nobody wants any more is unloaded, as is a program whose entry is gone.
- Host is dead on every channel: failover (``failover.take_over``), never damped.
- An entry that became invalid is decided on its last valid copy and reported once by its
  host; one that never was valid is reported once by one server (``invalid``).
- On the first cycle with replication caught up, a primary records which FIG. 6 case it
  found (``registration``).
- Paused (``View.paused``): automatic actions wait and are recorded as ``paused_hold``
  instead; operators' requests are honoured (``pause_hold``).
"""

from __future__ import annotations

from ndsclust.model import App, AppState, RequestKind, ServerName, StateValue, Tag
from ndsclust.sentinel import failback, failover, invalid, pause_hold, requests, stacks
from ndsclust.sentinel.actions import (
    STARTS,
    Action,
    EventKind,
    Load,
    Notify,
    Restart,
    Unload,
    announce,
)
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.registration import registration_event
from ndsclust.sentinel.view import Move, Policy, View, Viewpoint, paused, running, stopping


def decide(view: View, me: ServerName, now: float, policy: Policy = Policy()) -> list[Action]:
    """FIGS. 6-9: what server ``me`` must do next, at monotonic time ``now``."""
    vp = Viewpoint(view, me, now, policy)
    if view.fenced:
        return _fence(vp)
    plan = stacks.Plan.of(view)  # stacks: sets move as one (ndsclust/sentinel/stacks.py)
    out: list[Action] = []
    for tag in sorted(tags_of(view)):
        out += decide_tag(vp, plan, tag)
    return out


def tags_of(view: View) -> set[Tag]:
    """Every tag ``decide`` decides on: entries, local programs, invalid entries."""
    return {*view.apps, *view.procs, *view.invalid}


def decide_tag(vp: Viewpoint, plan: stacks.Plan, tag: Tag) -> list[Action]:
    """``decide``'s actions for one tag of an unfenced view. ``plan`` is ``Plan.of`` the
    view; a stack's members are decided together, so the caller asks for every member."""
    view = vp.view
    app = view.apps.get(tag)
    actions = _orphan(vp, tag) if app is None else plan.actions(vp, app, _for_app)
    if tag in view.invalid:
        actions = invalid.reported(vp, tag, app, actions)
    if not view.replication_caught_up:
        actions = _hold(vp, app, actions)
    elif view.starts_held and any(isinstance(a, (Load, Restart)) for a in actions):
        # Just rejoined: a peer's claim decided while this server was silent may land
        # within the grace; start nothing here until it is over (or the claim shows).
        actions = []
    if view.paused:
        actions = pause_hold.hold(vp, app, actions)
    return actions


def _fence(vp: Viewpoint) -> list[Action]:
    # Cut off: peers will take everything over after failover_timeout, so every program
    # here must be gone first. Unloads come first: a notifier that cannot reach anyone
    # must not delay them.
    unloads: list[Action] = []
    notes: list[Action] = []
    for tag, proc in sorted(vp.view.procs.items()):
        if running(proc) or paused(proc):
            text = f"{vp.me} is cut off from the cluster: stopping the copy here"
            unloads.append(Unload(tag, "fenced"))
            notes.append(Notify(EventKind.FENCED, tag, text))
    return unloads + notes


def _hold(vp: Viewpoint, app: App | None, actions: list[Action]) -> list[Action]:
    # FIG. 6 step 614: the local copy of the directory may be stale, so act on nothing.
    # A paused copy (LoadPaused) runs nothing: holding it back needs no explanation.
    if app is not None and any(isinstance(a, STARTS) for a in actions):
        text = (
            f"{vp.me} starts it once its own provider has caught up with its peers "
            "(it does so by itself; ndsclust doctor shows which provider lags)"
        )
        state = vp.kept(app, AppState.REPLICATION_PENDING)
        return vp.set_state(app, state, EventKind.REPLICATION_PENDING, text)
    return []


def _orphan(vp: Viewpoint, tag: Tag) -> list[Action]:
    """A local program whose entry is gone from the directory: an operator removed it."""
    proc = vp.view.procs.get(tag)
    if running(proc) or paused(proc):
        return [Unload(tag, "its entry was removed from the directory")]
    return []


def _for_app(vp: Viewpoint, app: App) -> list[Action]:
    proc = vp.proc(app.tag)
    actions = _as_host(vp, app, proc) if app.host == vp.me else _as_other(vp, app, proc)
    return actions + registration_event(vp, app)


def _as_other(vp: Viewpoint, app: App, proc: ProcInfo | None) -> list[Action]:
    host = app.host
    if running(proc):
        if host is None:
            return [
                Unload(app.tag, "host removed by an operator"),
                *announce(
                    EventKind.UNLOAD,
                    app.tag,
                    f"host removed by an operator: stopping the copy on {vp.me}",
                ),
            ]
        # FIGS. 4E-4H: the directory converged on another host; the loser unloads.
        return [
            Unload(app.tag, f"double claim: {host} hosts it"),
            *announce(
                EventKind.DOUBLE_CLAIM, app.tag, f"{host} hosts it; stopping the copy on {vp.me}"
            ),
        ]
    if stopping(proc):
        return []
    if paused(proc) and not failback.wants_paused_copy(vp, app):
        return [Unload(app.tag, "paused copy no longer needed")]
    if host is None:
        return requests.unhosted(vp, app)
    if vp.alive(host):
        return failback.as_primary(vp, app, proc)
    if app.request is not None and app.request.kind is RequestKind.UNLOAD:
        return requests.unload_from_dead_host(vp, app)
    return failover.take_over(vp, app)


def _as_host(vp: Viewpoint, app: App, proc: ProcInfo | None) -> list[Action]:
    if stopping(proc):
        return []  # an unload is in flight: decide again once it has ended
    me = vp.me
    out: list[Action] = []
    if app.request is not None:
        answer = requests.as_host(vp, app, proc)
        if answer.move is not None:
            return _hand_over(vp, app, proc, answer.move)
        if answer.final:
            return list(answer.actions)
        out += answer.actions
    if me not in app.servers():
        reason = (
            f"the host names {me}, which is neither its primary nor a backup; "
            "fix ndsclustHostServer or the server lists"
        )
        if running(proc) or paused(proc):
            out.append(Unload(app.tag, reason))
        return out + vp.set_state(app, StateValue(AppState.ERROR, reason), EventKind.ERROR)
    desired = vp.kept(app, AppState.RUNNING)
    if vp.in_maintenance(me):
        target = vp.first_fit(app, me)
        if target is not None:
            move = Move(
                target,
                EventKind.MAINTENANCE,
                f"{me} is {vp.out_of_service(me)}: moving to {target}",
            )
            return out + failback.depart(vp, app, proc, move)
        # Better running here than nowhere: maintenance waits for a server to take it.
        out += vp.say(
            app.tag,
            EventKind.MAINTENANCE_BLOCKED,
            f"{me} is {vp.out_of_service(me)} but no server can take it: "
            f"{vp.why_none_fit(app, me)}",
        )
    elif me != app.primary:
        plan = failback.as_backup(vp, app)
        if isinstance(plan, Move):
            return out + _hand_over(vp, app, proc, plan)
        return out + _keep_running(vp, app, proc, plan)
    return out + _keep_running(vp, app, proc, failback.Stay(desired))


def _hand_over(vp: Viewpoint, app: App, proc: ProcInfo | None, move: Move) -> list[Action]:
    """``move`` now, or once its target's start hold is over (``failback.target_held``): the
    program keeps running here meanwhile, as if no move were due."""
    if failback.target_held(vp, move, proc):
        return _keep_running(vp, app, proc, failback.held_stay(vp, app))
    return failback.depart(vp, app, proc, move)


def _keep_running(
    vp: Viewpoint, app: App, proc: ProcInfo | None, stay: failback.Stay
) -> list[Action]:
    """This server hosts ``app`` and keeps it: the program must run (FIG. 8 step 908)."""
    if proc is None or paused(proc) or (proc.state is ProcState.EXITED and proc.stop_requested):
        return [Load(app.tag), *vp.set_state(app, vp.kept(app, AppState.LOADING))]
    if proc.failed:
        return failover.supervise(vp, app, proc)
    if proc.state is ProcState.RUNNING:
        # A hold (awaiting-failback, failback held) is announced once, when it is written
        # (FIG. 7B 864: ask the operators).
        return vp.set_state(app, stay.state, stay.kind, stay.text) + list(stay.notes)
    return []  # STARTING: the load is in flight

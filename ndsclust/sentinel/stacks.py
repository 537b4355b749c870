"""Service stacks: applications that need each other and applications that keep apart.

Pure, like the rest of the decision core (docs/design.md section 3, "Stacks"). ``decide``
calls ``Plan.actions`` for every application; an application that takes part in no stack
relation goes to the core unchanged.

**Sets.** ``ndsclustRequires: <tag>`` links two applications; the connected sets of those
links run on one server. Members are ordered requirements first (ties by tag); the first
member is the set's *root* and acts as its lock: the ordinary core decides the root's
placement (failover, migrate, failback, maintenance, hand-off) with one decision, on an
*effective* entry whose server list is the servers every member may run on and whose
resources and addresses are the members'. The other members follow the root's host:

- on the root's host they are claimed (from a dead host or none) and started once every
  requirement runs here; a live server still holding one releases it once its copy ended;
- a server that is not the root's host stops its copies and releases the members it still
  holds to the root's host;
- before the root leaves its host, the other members stop there in reverse order, and the
  root is released only once they all have ended.

So a server runs members of a set only while it holds the root, and the root's host swap
(one compare-and-swap) is the one decision: two servers never run parts of one set. A
member that fails past its restart limit hands the whole set off (``_hand_off``), as a
lone program's failure would: the set leaves as above and the root is released to the
next fit server where it has not failed.

**Separation.** ``ndsclustAvoids: <tag>`` is symmetric: of two applications that avoid each
other (either side naming the other), the one whose tag sorts later gives way. Its server
order puts servers running the other last, so failover, hand-off and failback prefer any
other fit server, and a host sharing a server with it fails it over to the first such
server that becomes fit (as a backup's failback would). When no other server is fit it runs
anyway: availability wins, and the state and an ``avoids_overridden`` event say so.

**Errors.** A requirement naming no application, a cycle, or a set whose members share no
server is an ``error(reason)`` naming the entries, on every member; their programs do not
run until an operator fixes the entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from ndsclust.model import (
    App,
    AppState,
    Request,
    ServerName,
    StateValue,
    Tag,
    parse_service_address,
)
from ndsclust.sentinel.actions import (
    Action,
    Claim,
    EventKind,
    ForwardRequest,
    Load,
    Release,
    Restart,
    SetState,
    Unload,
    announce,
    handed_off,
)
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.view import View, Viewpoint, paused, running, stopped, stopping

Core = Callable[[Viewpoint, App], list[Action]]
LOADING = StateValue(AppState.LOADING)
STOPPED = StateValue(AppState.STOPPED)
UNLOADING = StateValue(AppState.UNLOADING)


@dataclass(frozen=True, slots=True)
class Stack:
    """A connected set of applications linked by ``ndsclustRequires``."""

    members: tuple[Tag, ...]  # start order: requirements first, ties by tag
    servers: tuple[ServerName, ...]  # where every member may run, in the root's order
    problem: str | None = None  # why the set cannot run, naming the entries

    @property
    def root(self) -> Tag:
        return self.members[0]


def _key(tag: str) -> str:
    return tag.lower()  # ndsclustTag matches case-insensitively


def find_stacks(apps: Mapping[Tag, App]) -> dict[Tag, Stack]:
    """The stack of every application that requires or is required by another."""
    by_key = {_key(t): t for t in apps}
    needs: dict[Tag, list[Tag]] = {}
    missing: list[str] = []
    for tag, app in apps.items():
        for req in app.requires:
            found = by_key.get(_key(req))
            if found is None:
                missing.append(f"{tag} requires {req}, which is not an application")
            elif found != tag:
                needs.setdefault(tag, []).append(found)
            else:
                missing.append(f"{tag} requires itself")
    linked: dict[Tag, set[Tag]] = {}
    for tag, reqs in needs.items():
        for req in reqs:
            linked.setdefault(tag, set()).add(req)
            linked.setdefault(req, set()).add(tag)
    for tag, app in apps.items():
        if app.requires:
            linked.setdefault(tag, set())
    out: dict[Tag, Stack] = {}
    for start in sorted(linked):
        if start in out:
            continue
        component = _component(start, linked)
        stack = _stack(component, apps, needs, missing)
        for tag in component:
            out[tag] = stack
    return out


def _component(start: Tag, linked: Mapping[Tag, set[Tag]]) -> set[Tag]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in linked.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _stack(
    component: set[Tag],
    apps: Mapping[Tag, App],
    needs: Mapping[Tag, list[Tag]],
    missing: list[str],
) -> Stack:
    order, cycle = _order(component, needs)
    problems = [m for m in missing if m.split(" ", 1)[0] in component]
    if cycle:
        problems.append(f"{' requires '.join(cycle)}: a cycle; remove one ndsclustRequires")
    root = apps[order[0]]
    servers = tuple(s for s in root.servers() if all(s in apps[t].servers() for t in order))
    if not servers:
        lists = "; ".join(f"{t}: {', '.join(apps[t].servers())}" for t in order)
        problems.append(
            f"no server is in the server lists of every member of {', '.join(order)} ({lists})"
        )
    return Stack(tuple(order), servers, "; ".join(problems) or None)


def _order(component: set[Tag], needs: Mapping[Tag, list[Tag]]) -> tuple[list[Tag], list[Tag]]:
    """Requirements first, ties by tag; and a cycle found (empty when there is none)."""
    order: list[Tag] = []
    placed: set[Tag] = set()
    left = set(component)
    while left:
        ready = sorted(t for t in left if all(r in placed for r in needs.get(t, ())))
        if not ready:
            cycle = _cycle(min(left), needs, left)
            # Place the rest by tag so every member still has a stable position.
            return order + sorted(left), cycle
        order.append(ready[0])
        placed.add(ready[0])
        left.discard(ready[0])
    return order, []


def _cycle(start: Tag, needs: Mapping[Tag, list[Tag]], left: set[Tag]) -> list[Tag]:
    path = [start]
    while True:
        nxt = min(r for r in needs.get(path[-1], ()) if r in left)
        if nxt in path:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)


def _avoid_pairs(apps: Mapping[Tag, App]) -> dict[Tag, set[Tag]]:
    """For each application, the applications it gives way to (the later tag gives way)."""
    by_key = {_key(t): t for t in apps}
    out: dict[Tag, set[Tag]] = {}
    for tag, app in apps.items():
        for other in app.avoids:
            found = by_key.get(_key(other))
            if found is None or found == tag:
                continue
            late, early = (tag, found) if tag > found else (found, tag)
            out.setdefault(late, set()).add(early)
    return out


@dataclass(frozen=True)
class Plan:
    """The stacks and separations of one view; built once per ``decide`` call."""

    stacks: Mapping[Tag, Stack]
    yields_to: Mapping[Tag, set[Tag]]
    _done: dict[Tag, list[Action]] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, view: View) -> Plan:
        return cls(find_stacks(view.apps), _avoid_pairs(view.apps))

    def actions(self, vp: Viewpoint, app: App, core: Core) -> list[Action]:
        """What ``decide`` does for ``app``; ``core`` is its decision for one application."""
        stack = self.stacks.get(app.tag)
        if stack is None:
            if app.tag not in self.yields_to and not app.addresses:
                return core(vp, app)
            return self._separate(vp, app, core(vp, self._effective(vp, app)))
        if app.tag not in self._done:
            self._done.update(self._stack(vp, stack, core))
        return self._done.pop(app.tag, [])

    def _effective(self, vp: Viewpoint, app: App, stack: Stack | None = None) -> App:
        """The entry the core decides on: a set's root stands for the whole set; servers
        running what it gives way to go last in its order."""
        apps = vp.view.apps
        members = [apps[t] for t in stack.members] if stack else [app]
        servers = list(stack.servers) if stack else list(app.servers())
        taken = self._occupied(vp, members)
        ordered = [s for s in servers if s not in taken] + [s for s in servers if s in taken]
        if not ordered:
            return app
        return replace(
            app,
            primary=ordered[0],
            backups=tuple(ordered[1:]),
            resources=frozenset().union(*(m.resources for m in members)),
            addresses=tuple(sorted({a for m in members for a in m.addresses})),
        )

    def _occupied(self, vp: Viewpoint, members: list[App]) -> set[ServerName]:
        """Servers running an application one of ``members`` gives way to."""
        out: set[ServerName] = set()
        for m in members:
            for other in self.yields_to.get(m.tag, ()):
                host = self._host_of(vp, other)
                if host is not None and vp.alive(host):
                    out.add(host)
        return out

    def _host_of(self, vp: Viewpoint, tag: Tag) -> ServerName | None:
        stack = self.stacks.get(tag)
        app = vp.view.apps.get(stack.root if stack else tag)
        return app.host if app is not None else None

    def _separate(self, vp: Viewpoint, app: App, actions: list[Action]) -> list[Action]:
        """Availability over preference: running next to what it avoids, and saying so."""
        if app.host != vp.me or vp.me not in self._occupied(vp, self._members(vp, app)):
            return actions
        if any(isinstance(a, (Unload, Release)) and a.tag == app.tag for a in actions):
            return actions  # it is leaving
        core_state = [a for a in actions if isinstance(a, SetState) and a.tag == app.tag]
        if core_state and core_state[0].value.state is not AppState.RUNNING:
            return actions
        if not core_state and app.state.state is not AppState.RUNNING:
            return actions
        others = sorted(self.yields_to.get(app.tag, set()))
        text = f"avoids {', '.join(others)}, but no other server can run it: running on {vp.me}"
        rest = [a for a in actions if not (isinstance(a, SetState) and a.tag == app.tag)]
        value = StateValue(AppState.RUNNING, text)
        return rest + vp.set_state(app, value, EventKind.AVOIDS_OVERRIDDEN, text)

    def _members(self, vp: Viewpoint, app: App) -> list[App]:
        stack = self.stacks.get(app.tag)
        if stack is None:
            return [app]
        return [vp.view.apps[t] for t in stack.members]

    def _stack(self, vp: Viewpoint, stack: Stack, core: Core) -> dict[Tag, list[Action]]:
        apps = vp.view.apps
        if stack.problem is not None:
            return {t: _broken(vp, apps[t], stack.problem) for t in stack.members}
        root = apps[stack.root]
        out: dict[Tag, list[Action]] = {t: [] for t in stack.members}
        effective = self._effective(vp, root, stack)
        root_actions = self._separate(vp, root, core(vp, effective))
        followers = stack.members[1:]
        leaving = root.host != vp.me or any(
            isinstance(a, (Unload, Release)) and a.tag == root.tag for a in root_actions
        )
        given_up: str | None = None
        if not leaving:
            failing = _past_limit(vp, stack)
            if failing is not None:
                handoff = _hand_off(vp, effective, *failing)
                if isinstance(handoff, str):
                    given_up = handoff
                else:
                    root_actions, leaving = handoff, True
        if root.host == vp.me and leaving:
            # Dependents stop first, one at a time in reverse order; the root's own unload
            # and release wait until every other member has ended here.
            here = [t for t in reversed(followers) if not stopped(vp.proc(t))]
            if here:
                first = here[0]
                if not stopping(vp.proc(first)):
                    out[first] = [Unload(first, f"the stack of {root.tag} leaves {vp.me}")]
                root_actions = []
        out[root.tag] = root_actions
        for tag in followers:
            out[tag] += _follow(vp, stack, apps[tag], root, leaving, given_up)
        return out


def _past_limit(vp: Viewpoint, stack: Stack) -> tuple[Tag, ProcInfo] | None:
    """The first member after the root that failed here past its restart limit (or was
    refused): the set leaves this server for it, as a lone program would."""
    for tag in stack.members[1:]:
        proc = vp.proc(tag)
        app = vp.view.apps[tag]
        if app.host != vp.me or proc is None or not proc.failed or stopping(proc):
            continue
        if proc.refused or _restarts_left(vp, stack, proc) <= 0:
            return tag, proc
    return None


def _restarts_left(vp: Viewpoint, stack: Stack, proc: ProcInfo) -> int:
    """A member's restarts in place; a cleanup of the set (written on any member, done on
    the root) gives it its budget back too."""
    return max(vp.restarts_left(proc), vp.restarts_left(replace(proc, tag=stack.root)))


def _hand_off(vp: Viewpoint, effective: App, tag: Tag, proc: ProcInfo) -> list[Action] | str:
    """A member kept failing here: the whole set is handed to the next fit server where it
    has not failed (``failover.supervise`` for the set, decided on the root's effective
    entry, so the hand-off counts against the root and the set does not come back soon).
    The root stops last (``Plan._stack`` stops the others first) and is then released with
    ``loading(handoff: ...)``; the members follow it. Returns why the set stays instead
    when no server can take it (the member then shows ``failed``)."""
    me = vp.me
    why = proc.reason or f"exit code {proc.exit_code}"
    policy = vp.policy
    limit = why  # a refusal names the server already
    if not proc.refused:
        limit += f"; restart limit reached ({policy.max_restarts} within "
        limit += f"{policy.restart_window:g}s) on {me}"
    target = vp.next_untried(effective, me)
    if target is None:
        others = [s for s in effective.servers() if s != me]
        tried = ", ".join(vp.unfit(effective, s) or f"failed on {s}" for s in others)
        return f"{limit}; no other server can take the stack of {effective.tag}: {tried or 'none'}"
    if vp.flapping(effective):
        return f"{limit}; {vp.flap_reason(effective.tag, me)}"
    text = f"handoff to {target}: {tag} in the stack of {effective.tag}: {limit}"
    root_proc = vp.proc(effective.tag)
    if running(root_proc) or paused(root_proc):
        return [Unload(effective.tag, text), *vp.set_state(effective, UNLOADING)]
    if not stopped(root_proc):
        return []  # still stopping: released once it has ended
    failed_here = vp.failed_on(effective) | {me}
    state = handed_off(s for s in effective.servers() if s in failed_here)
    release = Release(effective.tag, target, me, text, state)
    return [release, *announce(EventKind.HANDOFF, effective.tag, text)]


def _broken(vp: Viewpoint, app: App, problem: str) -> list[Action]:
    """A member of a set that cannot run: it does not run, and its state says why."""
    out: list[Action] = []
    proc = vp.proc(app.tag)
    if running(proc) or paused(proc):
        out.append(Unload(app.tag, problem))
    writer = app.host if app.host is not None and vp.alive(app.host) else vp.speaker(app)
    if writer == vp.me:
        out += vp.set_state(app, StateValue(AppState.ERROR, problem), EventKind.ERROR)
    return out


def _follow(
    vp: Viewpoint, stack: Stack, app: App, root: App, leaving: bool, given_up: str | None
) -> list[Action]:
    """A member that is not the root: it goes where the root is."""
    me = vp.me
    proc = vp.proc(app.tag)
    forward = _forward(vp, app, root)
    if forward is not None:
        return forward
    if root.host == me and not leaving:
        return _join(vp, stack, app, proc, given_up)
    if running(proc) or paused(proc):
        if app.host == me and root.host == me:
            return []  # the set is leaving: stopped in order (Plan._stack)
        if app.host == me:
            # The root is elsewhere (a double claim resolved apart, an operator's write):
            # a server runs members of a set only while it holds the root.
            where = root.host or "no server"
            return [Unload(app.tag, f"its stack's root {root.tag} is on {where}")]
        if app.host is None:
            return [Unload(app.tag, "host removed")]
        text = f"{app.host} hosts it; stopping the copy on {me}"
        return [Unload(app.tag, f"double claim: {app.host} hosts it")] + announce(
            EventKind.DOUBLE_CLAIM, app.tag, text
        )
    if not stopped(proc) or (leaving and root.host == me):
        return []
    if app.host == me:
        # The root has moved (or was unloaded): hand this member after it.
        to = root.host
        state = STOPPED if to is None else LOADING
        text = f"follows {root.tag} to {to}" if to else f"{root.tag} was unloaded"
        return [Release(app.tag, to, me, text, state)]
    dead_host = app.host is not None and app.host != root.host and not vp.alive(app.host)
    if dead_host and root.host is None and vp.speaker(app) == me and app.host is not None:
        text = f"{root.tag} was unloaded; host {app.host} is dead"
        return [Release(app.tag, None, app.host, text, STOPPED)]
    if app.host is None and root.host is None and vp.speaker(app) == me:
        return vp.set_state(app, STOPPED)
    return []


def _join(
    vp: Viewpoint, stack: Stack, app: App, proc: ProcInfo | None, given_up: str | None
) -> list[Action]:
    """This server hosts the root: the member comes here and starts after its needs."""
    me = vp.me
    if app.host != me:
        if app.host is not None and vp.alive(app.host):
            if running(proc):
                text = f"{app.host} hosts it; stopping the copy on {me}"
                return [Unload(app.tag, f"double claim: {app.host} hosts it")] + announce(
                    EventKind.DOUBLE_CLAIM, app.tag, text
                )
            return []  # the holder stops its copy and releases it to this server
        text = f"follows {stack.root} to {me}"
        return [Claim(app.tag, app.host, text, LOADING), *announce(EventKind.STACK, app.tag, text)]
    if stopping(proc):
        return []
    if any(not _up(vp, vp.view.apps[r]) for r in _needs(vp, stack, app)):
        return []  # starts after what it requires
    if proc is None or paused(proc) or (proc.state is ProcState.EXITED and proc.stop_requested):
        return [Load(app.tag), *vp.set_state(app, vp.kept(app, AppState.LOADING))]
    if proc.failed:
        if not proc.refused and _restarts_left(vp, stack, proc) > 0:
            text = f"{proc.reason or f'exit code {proc.exit_code}'}; restarting in its stack"
            return [Restart(app.tag), *announce(EventKind.RESTART, app.tag, text)]
        # Past its limit: the set is handed off (``_hand_off``) unless no server can take it.
        reason = f"{given_up or 'restart limit reached'}; fix the cause, then: ndsclust cleanup {stack.root}"
        return vp.set_state(app, StateValue(AppState.FAILED, reason), EventKind.FAILED)
    if proc.state is ProcState.RUNNING:
        return vp.set_state(app, vp.kept(app, AppState.RUNNING))
    return []


def _needs(vp: Viewpoint, stack: Stack, app: App) -> list[Tag]:
    by_key = {_key(t): t for t in stack.members}
    return [by_key[_key(r)] for r in app.requires if _key(r) in by_key]


def _up(vp: Viewpoint, app: App) -> bool:
    """``app`` runs here, its service addresses up (``address.local_resources``)."""
    proc = vp.proc(app.tag)
    if proc is None or proc.state is not ProcState.RUNNING or proc.paused:
        return False
    return all(f"addr:{ip}" in vp.view.resources for ip in address_ips(app.addresses))


def _forward(vp: Viewpoint, app: App, root: App) -> list[Action] | None:
    """A request written on a member is the set's: it moves to the root, whose host (or,
    with none alive, whose speaker) decides it for the whole set."""
    request: Request | None = app.request
    if request is None:
        return None
    answerer = root.host if root.host is not None and vp.alive(root.host) else vp.speaker(root)
    if answerer != vp.me or root.request is not None:
        return []
    text = f"{request} on {app.tag} moves the whole stack: passed to {root.tag}"
    return [ForwardRequest(app.tag, root.tag, request), *announce(EventKind.STACK, app.tag, text)]


def address_ips(addresses: tuple[str, ...]) -> list[str]:
    return [str(parse_service_address(a)[0].ip) for a in addresses]

"""What the decision core reads: one frozen ``View`` per cycle, and the questions it asks of it.

The shell builds a ``View`` each cycle from the directory snapshot (complete: built only
after the watch's refresh is done), the failure detector's ``Liveness``, the supervisor's
process table and a little bookkeeping of its own (``History``, ``said``). ``Policy`` holds
the tunables. ``Viewpoint`` is the view seen from one server at one instant: the helpers
every figure needs (is a server alive, may it run this application, and if not, why).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ndsclust.model import (
    App,
    AppState,
    Request,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
    address_needs,
)
from ndsclust.sentinel.actions import (
    FAILURE_MOVES,
    PINNING,
    Action,
    EventKind,
    SetState,
    announce,
    placed,
    placed_by,
)
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.procs import ProcInfo, ProcState


@dataclass(frozen=True, slots=True)
class Policy:
    """Tunables of the decision core; times in seconds."""

    max_restarts: int = 3  # claim 57: restarts in place within restart_window
    restart_window: float = 900.0
    flap_max_failovers: int = 3  # failovers + hand-offs allowed within flap_window
    flap_window: float = 3600.0
    failback_hold: float = 900.0  # no automatic failback this soon after a hand-off
    repeat_after: float = 300.0  # a standing condition is recorded again after this


@dataclass(frozen=True, slots=True)
class History:
    """An application's recent failure moves, anywhere in the cluster, from the audit trail.

    Built by ``histories`` from the failover and hand-off events (wall times converted to
    this server's monotonic clock), so every server counts the same moves: flap damping
    counts both within its window, the failback hold looks at hand-offs (older ones may be
    left out). Where the application is, and why, is on its entry (``actions.placed_by``):
    no decision waits for an event to arrive.
    """

    failovers: tuple[float, ...] = ()
    handoffs: tuple[float, ...] = ()


def histories(
    moves: Iterable[tuple[Tag, str, float]], now: float, wall: float
) -> dict[Tag, History]:
    """``History`` per tag from audit-trail moves (tag, event kind, wall time of the event),
    on the monotonic clock where ``now`` is the wall time ``wall``."""
    times: dict[Tag, dict[str, list[float]]] = {}
    for tag, kind, at in moves:
        if kind in FAILURE_MOVES:
            times.setdefault(tag, {}).setdefault(kind, []).append(now - (wall - at))
    return {
        tag: History(
            failovers=tuple(sorted(k.get(EventKind.FAILOVER.value, []))),
            handoffs=tuple(sorted(k.get(EventKind.HANDOFF.value, []))),
        )
        for tag, k in times.items()
    }


# A standing condition this server recorded: (tag, kind, text).
Said = tuple[Tag, EventKind, str]


@dataclass(frozen=True)
class View:
    """Everything one decision cycle knows.

    ``apps`` and ``servers`` are the directory snapshot; ``liveness`` says which peers are
    alive (``liveness.me`` is this server); ``procs`` is this server's process table;
    ``resources`` is what this server offers (its own word beats its server entry);
    ``replication_caught_up`` is FIG. 6 step 614: the local provider has caught up with its
    peers; ``fenced``: this server is cut off and must stop everything (docs/design.md section 4);
    ``registering``: this sentinel has not yet had a cycle with replication caught up, the
    FIG. 6 registration check is due; ``starts_held``: this sentinel has just started, or
    rejoined after a fence or a stall, and a claim a peer decided before it heard this server
    again may still land: no program it hosts is started until that grace is over; ``history``: recent moves per tag; ``said``:
    when this server last recorded each standing condition (``decide`` returns
    ``RecordEvent`` of kinds ``resource_missing`` and ``maintenance_blocked`` at most once
    per ``Policy.repeat_after``; the shell stores the time it recorded them).
    """

    apps: Mapping[Tag, App]
    servers: Mapping[ServerName, Server]
    liveness: Liveness
    procs: Mapping[Tag, ProcInfo] = field(default_factory=dict, hash=False)
    resources: frozenset[str] = frozenset()
    replication_caught_up: bool = True
    fenced: bool = False
    registering: bool = False
    starts_held: bool = False
    history: Mapping[Tag, History] = field(default_factory=dict, hash=False)
    said: Mapping[Said, float] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Move:
    """A decision to hand the application this server hosts to ``to`` (None: unload it).

    Carried out by ``failback.depart``: unload, then swap the host once the program ended.
    ``kind``/``text`` are the event recorded with the swap; ``request`` is the operator's
    request the swap honours, consumed with it.
    """

    to: ServerName | None
    kind: EventKind
    text: str
    request: Request | None = None


# The states of the local copy, as the figures need them. A paused copy (FIG. 7B) is
# STARTING with ``paused`` set: it holds no pid and runs nothing until resumed.


def running(proc: ProcInfo | None) -> bool:
    """The local copy runs or is being started: this server is running the application."""
    return (
        proc is not None
        and proc.state in (ProcState.STARTING, ProcState.RUNNING)
        and not proc.paused
    )


def paused(proc: ProcInfo | None) -> bool:
    return proc is not None and proc.state is ProcState.STARTING and proc.paused


def stopping(proc: ProcInfo | None) -> bool:
    return proc is not None and proc.state is ProcState.STOPPING


def stopped(proc: ProcInfo | None) -> bool:
    """Nothing runs locally: no row, or the program has exited (asked to or not)."""
    return proc is None or proc.state is ProcState.EXITED


@dataclass(frozen=True, slots=True)
class Viewpoint:
    """The view from server ``me`` at monotonic time ``now``."""

    view: View
    me: ServerName
    now: float
    policy: Policy

    def proc(self, tag: Tag) -> ProcInfo | None:
        return self.view.procs.get(tag)

    def alive(self, server: ServerName) -> bool:
        # Any live channel means alive (FIG. 8, 806 -> 808); this server is always alive.
        return server == self.me or self.view.liveness.alive(server)

    def in_maintenance(self, server: ServerName) -> bool:
        entry = self.view.servers.get(server)
        return entry is not None and entry.state is ServerState.MAINTENANCE

    def missing(self, app: App, server: ServerName) -> frozenset[str]:
        """The resources ``app`` needs that ``server`` does not offer (claim 57)."""
        if server == self.me:
            # Stacks: a service address needs an interface on its network here.
            return (app.resources | address_needs(app.addresses)) - self.view.resources
        entry = self.view.servers.get(server)
        return app.resources - (entry.resources if entry is not None else frozenset())

    def unfit(self, app: App, server: ServerName) -> str | None:
        """Why ``server`` may not take ``app`` now, or None when it may."""
        if server != self.me and server not in self.view.servers:
            return f"{server} is not a known server"
        if not self.alive(server):
            return f"{server} is dead"
        if self.in_maintenance(server):
            return f"{server} is in maintenance"
        missing = self.missing(app, server)
        if missing:
            return f"{server} lacks {', '.join(sorted(missing))}"
        return None

    def first_fit(self, app: App, leaving: ServerName | None) -> ServerName | None:
        """Where ``app`` goes when it leaves ``leaving``: the first fit server in its order."""
        for server in app.servers():
            if server != leaving and self.unfit(app, server) is None:
                return server
        return None

    def why_none_fit(self, app: App, leaving: ServerName | None) -> str:
        reasons = [self.unfit(app, s) for s in app.servers() if s != leaving]
        return ", ".join(r for r in reasons if r) or "it has no other server"

    def speaker(self, app: App) -> ServerName | None:
        """The first live server in ``app``'s order: it writes what no single host can.

        Used where nobody hosts the application (or its host is dead): one server, the same
        one on every server that sees the same liveness, records its state and answers its
        requests, so they are written once and not by every server at once.
        """
        for server in app.servers():
            known = server == self.me or server in self.view.servers
            if server != app.host and known and self.alive(server):
                return server
        return None

    def flapping(self, tag: Tag) -> bool:
        """Another failover or hand-off would make more than ``flap_max_failovers`` of them
        within ``flap_window``: the application stays put."""
        h = self.history(tag)
        horizon = self.now - self.policy.flap_window
        moves = sum(1 for t in (*h.failovers, *h.handoffs) if t > horizon)
        return moves >= self.policy.flap_max_failovers

    def flap_reason(self, host: ServerName) -> str:
        return (
            f"flapping: {self.policy.flap_max_failovers} failovers within "
            f"{self.policy.flap_window:g}s; staying on {host}"
        )

    def history(self, tag: Tag) -> History:
        return self.view.history.get(tag, History())

    def handed_off_recently(self, tag: Tag) -> bool:
        h = self.history(tag)
        return any(t > self.now - self.policy.failback_hold for t in h.handoffs)

    def restarts_left(self, proc: ProcInfo) -> int:
        horizon = self.now - self.policy.restart_window
        return self.policy.max_restarts - sum(1 for t in proc.restarts if t > horizon)

    def say(self, tag: Tag, kind: EventKind, text: str) -> list[Action]:
        """A standing condition: recorded once, and again only after ``repeat_after``."""
        last = self.view.said.get((tag, kind, text))
        if last is not None and self.now - last < self.policy.repeat_after:
            return []
        return announce(kind, tag, text)

    def kept(self, app: App, state: AppState) -> StateValue:
        """``state`` as the host writes it while the application stays: it keeps the move
        that pinned it here (``running(migrate)``), so the pin outlives the loading state."""
        pin = placed_by(app.state)
        return placed(state, pin if pin in PINNING else None)

    def set_state(
        self, app: App, value: StateValue, kind: EventKind | None = None, text: str = ""
    ) -> list[Action]:
        """Write ``value`` unless the entry already holds it; announce with the change only,
        so a standing state is announced once."""
        if app.state == value:
            return []
        out: list[Action] = [SetState(app.tag, value)]
        if kind is not None:
            out += announce(kind, app.tag, text or str(value))
        return out

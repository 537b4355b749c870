"""Every server's real decision core over simulated time, on a simulated directory.

``Sim`` plays the shells of a whole cluster. Each step of ``Timing.step`` seconds (one
loop interval):

1. replication delivers what each server's copy of the directory is due (``lag``);
2. every live server builds its ``View`` (its copy of the directory, its own writes shown
   at once as the sentinel's cache does, liveness from what its channels heard, its process
   table) and calls ``decide``;
3. the servers' actions run, one server after another, against the one write provider:
   compare-and-swaps checked there, a failed one drops the rest of that application's
   actions (docs/design.md section 3), a write whose answer is lost applies there but
   the server sees a failure (``answers``);
4. programs advance (STARTING -> RUNNING, STOPPING -> EXITED).

The invariant is checked after every action: no two live servers run (or are still
stopping) one program (``DoubleRun``).

Liveness follows docs/design.md section 4 per channel: a peer is dead when every channel
has been silent for ``failover``; a server fences itself when it sees fewer than a majority
within ``fence`` on the channels that prove the way out (lan and disk); a sentinel that
starts counts its peers alive until it had time to hear them and starts nothing it hosts
for one failover timeout (``Timing.hold``), and its peers hand nothing over to it before
they have heard it for that long (``Policy.start_hold``, set to the same hold). Nothing
here touches a real directory or process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ndsclust.model import (
    App,
    AppState,
    Request,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
)
from ndsclust.sentinel.actions import (
    KEPT_MOVES,
    Action,
    Claim,
    ConsumeRequest,
    EventKind,
    ForwardRequest,
    Load,
    LoadPaused,
    Notify,
    RecordEvent,
    Release,
    Restart,
    SetState,
    Unload,
)
from ndsclust.sentinel.decide import decide
from ndsclust.sentinel.detector import Liveness, heard_since, isolated
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.view import History, Policy, View, histories, running, stopping

CHANNELS = frozenset({"lan", "disk", "directory"})
# What a write's answer was: applied and seen, applied but the answer lost, or refused.
Answer = Literal["ok", "lost", "refused"]


class DoubleRun(AssertionError):
    """Two live servers ran one program at the same instant (invariant 1)."""


@dataclass(frozen=True, slots=True)
class Timing:
    """The timeouts the simulation applies, in seconds (a sentinel's ``timeouts``)."""

    step: float = 1.0  # loop_interval: every server decides once per step
    failover: float = 3.0  # every channel silent this long: the peer is dead
    fence: float = 1.0  # fence detection (timeouts.fence minus the kill allowance)
    channels: frozenset[str] = CHANNELS
    start_hold: float | None = None  # no start of a hosted program after a start; None: failover

    @property
    def hold(self) -> float:
        return self.failover if self.start_hold is None else self.start_hold

    def fence_channels(self) -> frozenset[str]:
        # Fencing counts what proves the way out: lan acknowledgements and the disk; the
        # directory pulse only when nothing else is configured (docs/design.md section 4).
        out = self.channels & {"lan", "disk"}
        return out or self.channels


@dataclass(frozen=True, slots=True)
class SimEvent:
    """An event a server would record: the audit trail's ``RecordEvent``."""

    time: float
    server: ServerName
    kind: EventKind
    tag: Tag
    text: str

    def json(self) -> dict[str, Any]:
        return {
            "time": round(self.time, 3),
            "server": self.server,
            "kind": self.kind.value,
            "tag": self.tag,
            "text": self.text,
        }


@dataclass
class _Copy:
    """One server's copy of the applications: replicated values and its own writes."""

    apps: dict[Tag, tuple[int, App | None]] = field(default_factory=dict)
    local: dict[Tag, tuple[int, App]] = field(default_factory=dict)

    def view(self) -> dict[Tag, App]:
        out: dict[Tag, App] = {}
        for tag in {*self.apps, *self.local}:
            version, app = self.apps.get(tag, (-1, None))
            mine = self.local.get(tag)
            if mine is not None and mine[0] > version:
                app = mine[1]
            if app is not None:
                out[tag] = app
        return out


class Sim:
    """A simulated cluster; see the module docstring.

    ``servers`` and ``apps`` are the directory; ``up`` the servers whose sentinel runs;
    ``history`` the audit trail's moves known at the start as (tag, kind, sim time, server
    that recorded it).
    ``lag`` gives each server's replication delay (seconds, default 0); ``answers``
    decides how each directory write of a server is answered (default: ``ok``).
    """

    def __init__(
        self,
        servers: Iterable[Server],
        apps: Iterable[App],
        *,
        timing: Timing = Timing(),
        policy: Policy = Policy(),
        up: Iterable[ServerName] | None = None,
        procs: Mapping[ServerName, Iterable[ProcInfo]] | None = None,
        history: Iterable[tuple[Tag, str, float, ServerName | None]] = (),
        resources: Mapping[ServerName, frozenset[str]] | None = None,
        paused: bool = False,
        lag: Mapping[ServerName, float] | None = None,
        answers: Callable[[ServerName, Action], Answer] | None = None,
    ) -> None:
        self.servers: dict[ServerName, Server] = {s.name: s for s in servers}
        self.names = sorted(self.servers)
        self.master: dict[Tag, tuple[int, App]] = {a.tag: (0, a) for a in apps}
        self.timing = timing
        # The peers' side of the start hold: a failback waits as long as a start is held.
        self.policy = replace(policy, start_hold=timing.hold)
        self.now = 0.0
        self.up = {s: True for s in self.names} if up is None else dict.fromkeys(self.names, False)
        for s in up or ():
            self.up[s] = True
        self.resources = dict(resources or {})
        self.paused = paused
        self.lag = dict(lag or {})
        self.answers = answers
        self.copies = {s: _Copy(apps={t: v for t, v in self.master.items()}) for s in self.names}
        self._deliveries: list[tuple[float, ServerName, Tag, int, App | None]] = []
        self._version = 0
        # When server ``me`` last heard ``peer`` on ``channel``: all heard at the start.
        self.heard = {
            (me, p, ch): 0.0 for me in self.names for p in self.names for ch in timing.channels
        }
        for s in self.names:
            if not self.up[s]:
                self._silence(s)
        self.cut: set[ServerName] = set()  # cut off on every channel
        self.lan_cut: set[ServerName] = set()
        # Servers where a program cannot start (a missing working directory, say): it
        # exits as it starts, as the supervisor reports a failed start.
        self.broken: set[ServerName] = set()
        self.procs: dict[ServerName, dict[Tag, ProcInfo]] = {s: {} for s in self.names}
        for s, rows in (procs or {}).items():
            self.procs[s] = {p.tag: p for p in rows}
        self.caught_up = {s: True for s in self.names}
        self.registering = {s: False for s in self.names}
        self.hold_until = {s: -1.0 for s in self.names}
        # Since when each server has heard each peer without a break (Liveness.since): at the
        # start, as the heard times and holds say, the cluster has been up for long.
        self.since: dict[ServerName, Mapping[ServerName, float]] = {
            me: {p: -1e9 for p in self.names if p != me} for me in self.names
        }
        self.fenced: set[ServerName] = set()  # fenced in its last view: rejoins when it ends
        self.said: dict[ServerName, dict[tuple[Tag, EventKind, str], float]] = {
            s: {} for s in self.names
        }
        self.moves: list[tuple[Tag, str, float, ServerName | None]] = list(history)
        self.events: list[SimEvent] = []
        self.notes: list[tuple[ServerName, EventKind, Tag]] = []
        self.checking = True  # off only while a test sets up a double run on purpose
        self.changed = False  # something happened in the last step

    # -- the directory ----------------------------------------------------------------

    @property
    def apps(self) -> dict[Tag, App]:
        """What the write provider holds."""
        return {t: a for t, (_, a) in self.master.items()}

    def app(self, tag: str) -> App:
        return self.master[Tag(tag)][1]

    def write_app(self, app: App, by: ServerName | None = None, seen: bool = True) -> None:
        """A write reaching the write provider; ``by`` sees it at once when ``seen``."""
        self._version += 1
        self.master[app.tag] = (self._version, app)
        for s in self.names:
            if s == by and seen:
                self.copies[s].local[app.tag] = (self._version, app)
            lag = self.lag.get(s, 0.0)
            if lag <= 0:
                self.copies[s].apps[app.tag] = (self._version, app)
            else:
                self._deliveries.append((self.now + lag, s, app.tag, self._version, app))

    def set_app(self, tag: str, **changes: Any) -> None:
        """An operator's (or a test's) write of ``tag``'s attributes."""
        self.write_app(replace(self.app(tag), **changes))

    def _deliver(self) -> None:
        due = [d for d in self._deliveries if d[0] <= self.now]
        self._deliveries = [d for d in self._deliveries if d[0] > self.now]
        for _, s, tag, version, app in due:
            self.copies[s].apps[tag] = (version, app)
            self.changed = True

    # -- what each server sees ----------------------------------------------------------

    def hears(self, me: ServerName, peer: ServerName, channel: str) -> bool:
        if not (self.up[me] and self.up[peer]) or me in self.cut or peer in self.cut:
            return False
        return not (channel == "lan" and (me in self.lan_cut or peer in self.lan_cut))

    def liveness(self, me: ServerName, timeout: float, channels: frozenset[str]) -> Liveness:
        seen = {
            p: frozenset(
                ch for ch in channels if self.now - self.heard[(me, p, ch)] < timeout - 1e-9
            )
            for p in self.names
            if p != me
        }
        return Liveness(me=me, configured=channels, seen=seen)

    def history_now(self) -> dict[Tag, History]:
        # The shell's way: moves of the audit trail through the core's ``histories`` (the
        # simulation's clock is wall and monotonic at once).
        return histories(self.moves, self.now, self.now)

    def view(self, me: ServerName) -> View:
        t = self.timing
        fence = isolated(self.liveness(me, t.fence, t.fence_channels()), None, len(self.names))
        return View(
            apps=self.copies[me].view(),
            servers=dict(self.servers),
            liveness=replace(self.liveness(me, t.failover, t.channels), since=self.since[me]),
            procs=dict(self.procs[me]),
            resources=self.resources.get(me, self.servers[me].resources),
            replication_caught_up=self.caught_up[me],
            fenced=fence,
            registering=self.registering[me],
            starts_held=self.now < self.hold_until[me],
            history=self.history_now(),
            said=dict(self.said[me]),
            paused=self.paused,
        )

    # -- one step -------------------------------------------------------------------------

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.changed = False
            self.now += self.timing.step
            self._deliver()
            for me, p, ch in self.heard:
                if self.hears(me, p, ch):
                    self.heard[(me, p, ch)] = self.now
            live = [s for s in self.names if self.up[s]]
            for s in live:  # the shell's bookkeeping, once per cycle (detector.heard_since)
                heard = self.liveness(s, self.timing.failover, self.timing.channels)
                self.since[s] = heard_since(heard, self.since[s], self.now).since
            decisions = {s: self._decide(s) for s in live}
            for s in live:
                self.execute(s, decisions[s])
            for s in live:
                self.advance(s)
                if self.caught_up[s]:
                    self.registering[s] = False
                self.caught_up[s] = True
            self.check()

    def _decide(self, me: ServerName) -> list[Action]:
        view = self.view(me)
        if view.fenced:
            self.fenced.add(me)
        elif me in self.fenced:
            # Out of fencing: the rejoin (docs/design.md section 4) decides nothing until
            # this server's copy is current, then starts nothing it hosts for a grace.
            if any(d[1] == me for d in self._deliveries):
                return []
            self.fenced.discard(me)
            self.hold_until[me] = self.now + self.timing.hold
            view = replace(view, starts_held=True)
        return decide(view, me, self.now, self.policy)

    def execute(self, me: ServerName, actions: list[Action]) -> None:
        dropped: set[Tag] = set()
        for action in actions:
            if action.tag in dropped:
                continue
            self.changed = True
            if not self.apply(me, action):
                dropped.add(action.tag)
            self.check()

    def _answer(self, me: ServerName, action: Action) -> Answer:
        return "ok" if self.answers is None else self.answers(me, action)

    def apply(self, me: ServerName, action: Action) -> bool:
        """Run one action as server ``me``'s shell; False when the rest of its group drops."""
        procs = self.procs[me]
        match action:
            case Claim(tag, expect, _, state, consumes):
                return self.swap(me, action, tag, (expect, me), consumes, state)
            case Release(tag, to, expect, _, state, consumes):
                return self.swap(me, action, tag, (expect, to), consumes, state)
            case ConsumeRequest(tag, request, state):
                return self.swap(me, action, tag, None, request, state)
            case ForwardRequest(tag, to, request):
                # Stacks: the root's request is added only while it holds none, then the
                # member's is removed by compare-and-swap (the executor's two writes).
                root = self.master.get(to)
                if root is None or root[1].request is not None or not self.reachable(me):
                    return False
                self.write_app(replace(root[1], request=request), by=me)
                return self.swap(me, action, tag, None, request, None)
            case Load(tag):
                old = procs.get(tag)
                if old is not None and old.paused:
                    procs[tag] = ProcInfo(
                        tag, ProcState.STARTING, None, self.now, restarts=old.restarts
                    )
                else:
                    assert old is None or old.state is ProcState.EXITED, (me, old)
                    procs[tag] = ProcInfo(tag, ProcState.STARTING, None, self.now)
            case LoadPaused(tag):
                assert tag not in procs or procs[tag].state is ProcState.EXITED
                procs[tag] = ProcInfo(tag, ProcState.STARTING, None, self.now, paused=True)
            case Restart(tag):
                old = procs[tag]
                assert old.state is ProcState.EXITED
                procs[tag] = ProcInfo(
                    tag, ProcState.STARTING, None, self.now, restarts=(*old.restarts, self.now)
                )
            case Unload(tag, _):
                old = procs[tag]
                assert old.state in (ProcState.STARTING, ProcState.RUNNING), (me, old)
                procs[tag] = replace(old, state=ProcState.STOPPING, stop_requested=True)
            case SetState(tag, value):
                return self.swap(me, action, tag, None, None, value)
            case RecordEvent(kind, tag, text):
                self.events.append(SimEvent(self.now, me, kind, tag, text))
                self.said[me][(tag, kind, text)] = self.now
                if kind in KEPT_MOVES:
                    self.moves.append((tag, kind.value, self.now, me))
            case Notify(kind, tag, _):
                self.notes.append((me, kind, tag))
        return True

    def swap(
        self,
        me: ServerName,
        action: Action,
        tag: Tag,
        host: tuple[ServerName | None, ServerName | None] | None,
        consumes: Request | None,
        state: StateValue | None,
    ) -> bool:
        """The store's one modify, checked on the write provider: every part applies, or
        none. A lost answer applies it but reports a failure; a refusal applies nothing."""
        if tag not in self.master:
            return False
        answer = self._answer(me, action)
        if answer == "refused" or not self.reachable(me):
            return False
        app = self.master[tag][1]
        if host is not None and app.host != host[0]:
            return False
        if consumes is not None and app.request != consumes:
            return False
        changes: dict[str, Any] = {}
        if host is not None:
            changes["host"] = host[1]
        if consumes is not None:
            changes["request"] = None
        if state is not None:
            changes["state"] = state
        self.write_app(replace(app, **changes), by=me, seen=answer == "ok")
        return answer == "ok"

    def reachable(self, me: ServerName) -> bool:
        """Whether ``me`` reaches a write provider: not when it is cut off from every peer."""
        return me not in self.cut or len(self.names) == 1

    def advance(self, me: ServerName) -> None:
        procs = self.procs[me]
        for tag, p in list(procs.items()):
            if p.state is ProcState.STARTING and not p.paused and me in self.broken:
                procs[tag] = replace(
                    p, state=ProcState.EXITED, pid=None, reason="could not start: simulated"
                )
                self.changed = True
            elif p.state is ProcState.STARTING and not p.paused:
                procs[tag] = replace(p, state=ProcState.RUNNING, pid=200)
                self.changed = True
            elif p.state is ProcState.STOPPING:
                procs[tag] = replace(
                    p, state=ProcState.EXITED, pid=None, exit_code=0, stop_requested=True
                )
                self.changed = True

    def settle(self, *, quiet: float | None = None, limit: float = 7200.0) -> float:
        """Step until nothing has changed for ``quiet`` seconds (default: long enough for
        every timeout to have passed); returns the simulated time it took. Raises
        ``RuntimeError`` when the cluster is still changing after ``limit`` seconds."""
        t = self.timing
        quiet = quiet if quiet is not None else t.failover + t.fence + t.hold + 2 * t.step
        began = self.now
        calm_since = self.now
        while self.now - calm_since < quiet - 1e-9:
            if self.now - began > limit:
                raise RuntimeError(f"still changing after {limit:g}s of simulated time")
            self.step()
            if self.changed or self._deliveries:
                calm_since = self.now
        return self.now - began

    # -- faults and operators ------------------------------------------------------------

    def _silence(self, s: ServerName) -> None:
        for key in self.heard:
            if s in key[:2]:
                self.heard[key] = -1e9

    def kill(self, s: str) -> None:
        """The server dies: sentinel, programs (their lease guard) and provider."""
        name = ServerName(s)
        self.up[name] = False
        self.procs[name] = {}
        self.fenced.discard(name)

    def revive(self, s: str) -> None:
        name = ServerName(s)
        if self.up[name]:
            return
        self.up[name] = True
        self.registering[name] = True
        self.caught_up[name] = False  # the first cycle after start: replication catching up
        self.hold_until[name] = self.now + self.timing.hold
        self.since[name] = {}
        self.copies[name] = _Copy(apps={t: v for t, v in self.master.items()})
        self.grace(name)

    def grace(self, s: ServerName) -> None:
        # The detector's grace after a start or the end of a fence: silence this server
        # suffered while down or cut off says nothing about its peers.
        for key in self.heard:
            if key[0] == s:
                self.heard[key] = self.now

    def isolate(self, s: str) -> None:
        self.cut.add(ServerName(s))

    def cut_lan(self, s: str) -> None:
        self.lan_cut.add(ServerName(s))

    def heal(self) -> None:
        for s in self.cut | self.lan_cut:
            self.grace(s)
        self.cut = set()
        self.lan_cut = set()

    def crash(self, tag: str) -> None:
        """The program exits on its own wherever it runs."""
        for s in self.names:
            p = self.procs[s].get(Tag(tag))
            if p is not None and p.state is ProcState.RUNNING and not p.paused:
                self.procs[s][Tag(tag)] = replace(
                    p, state=ProcState.EXITED, pid=None, exit_code=-9, reason="exited"
                )

    def request(self, tag: str, value: str) -> None:
        self.set_app(tag, request=Request.parse(value))

    def maintenance(self, s: str, on: bool = True) -> None:
        old = self.servers[ServerName(s)]
        self.servers[old.name] = replace(
            old, state=ServerState.MAINTENANCE if on else ServerState.UP
        )

    # -- what is true ----------------------------------------------------------------------

    def runners(self, tag: str) -> list[ServerName]:
        """Servers where the program runs or is still stopping (a paused copy never ran)."""
        out = []
        for s in self.names:
            p = self.procs[s].get(Tag(tag))
            if self.up[s] and (running(p) or (stopping(p) and p is not None and not p.paused)):
                out.append(s)
        return out

    def running_on(self, tag: str) -> list[ServerName]:
        return [
            s
            for s in self.names
            if self.up[s]
            and (p := self.procs[s].get(Tag(tag))) is not None
            and p.state is ProcState.RUNNING
        ]

    def check(self) -> None:
        if not self.checking:
            return
        for tag in self.master:
            found = self.runners(tag)
            if len(found) > 1:
                raise DoubleRun(f"t={self.now:g}s {tag} runs on {', '.join(found)}")

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]

    def placement(self) -> dict[str, dict[str, str | None]]:
        """Host and state of every application, as the write provider holds them."""
        return {
            tag: {"host": app.host, "state": str(app.state)}
            for tag, app in sorted(self.apps.items())
        }


def running_state(app: App) -> bool:
    """Whether the application's state says its program runs on its host."""
    return app.state.state in (
        AppState.RUNNING,
        AppState.LOADING,
        AppState.AWAITING_FAILBACK,
        AppState.UNLOADING,
    )

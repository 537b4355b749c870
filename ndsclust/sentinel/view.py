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
    check_tag,
)
from ndsclust.sentinel.actions import (
    FAILBACK_HELD_REASON,
    PINNING,
    Action,
    EventKind,
    SetState,
    announce,
    handed_off_from,
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
    flap_max_failovers: int = 3  # hand-offs (program failures) allowed within flap_window
    flap_window: float = 3600.0  # how long a failure on a server counts (pcs failure-timeout)
    repeat_after: float = 300.0  # a standing condition is recorded again after this
    # A server holds its starts this long after it starts or rejoins (timeouts.failover): a
    # failback or migrate to a server heard for less waits (failback.target_held); 0: none.
    start_hold: float = 0.0


@dataclass(frozen=True, slots=True)
class History:
    """An application's recent program failures, anywhere in the cluster, from the audit trail.

    Built by ``histories`` from the hand-off and cleanup events (wall times converted to this
    server's monotonic clock), so every server counts the same failures. ``failures``: when,
    and on which server, the program kept failing (exited past the restart limit or could not
    start) so that server handed it on; ``cleaned``: the last ``ndsclust cleanup``, before
    which nothing counts (restarts in place included). Only real failures are here: a
    failover from a dead host, a migrate, a maintenance move, a failback or a graceful stop
    never counts. Where the application is, and why, is on its entry
    (``actions.placed_by``): no decision waits for an event to arrive.
    """

    failures: tuple[tuple[float, ServerName], ...] = ()
    cleaned: float | None = None
    seen: frozenset[ServerName] = frozenset()  # servers with any hand-off event, cleaned or not
    failovers: tuple[float, ...] = ()  # takeovers from a dead host: reported, never counted


def histories(
    moves: Iterable[tuple[Tag, str, float, ServerName | None]], now: float, wall: float
) -> dict[Tag, History]:
    """``History`` per tag from audit-trail events (tag, event kind, wall time of the event,
    the server that recorded it), on the monotonic clock where ``now`` is the wall time
    ``wall``."""
    failures: dict[Tag, list[tuple[float, ServerName]]] = {}
    cleaned: dict[Tag, float] = {}
    failovers: dict[Tag, list[float]] = {}
    for tag, kind, at, server in moves:
        t = now - (wall - at)
        if kind == EventKind.FAILOVER.value:
            failovers.setdefault(tag, []).append(t)
        elif kind == EventKind.CLEANUP.value:
            cleaned[tag] = max(t, cleaned.get(tag, t))
        elif kind == EventKind.HANDOFF.value and server is not None:
            failures.setdefault(tag, []).append((t, server))
    out: dict[Tag, History] = {}
    for tag in {*failures, *cleaned, *failovers}:
        since = cleaned.get(tag)
        kept = sorted(f for f in failures.get(tag, []) if since is None or f[0] > since)
        seen = frozenset(s for _, s in failures.get(tag, []))
        took = tuple(sorted(failovers.get(tag, [])))
        out[tag] = History(failures=tuple(kept), cleaned=since, seen=seen, failovers=took)
    return out


# A standing condition this server recorded: (tag, kind, text).
Said = tuple[Tag, EventKind, str]


@dataclass(frozen=True)
class View:
    """Everything one decision cycle knows.

    ``apps`` and ``servers`` are the directory snapshot; ``liveness`` says which peers are
    alive (``liveness.me`` is this server); ``procs`` is this server's process table;
    ``resources`` is what this server offers (its own word beats its server entry);
    ``networks``: what each peer's sentinel published of its interfaces (``net:`` and
    ``iface:`` values on its pulse entry, ``pulse.py``), judged against service addresses;
    a peer missing from it published nothing (not yet, or an older sentinel) and counts as
    offering them, its own check deciding;
    ``replication_caught_up`` is FIG. 6 step 614: the local provider has caught up with its
    peers; ``fenced``: this server is cut off and must stop everything (docs/design.md section 4);
    ``registering``: this sentinel has not yet had a cycle with replication caught up, the
    FIG. 6 registration check is due; ``starts_held``: this sentinel has just started, or
    rejoined after a fence or a stall, and a claim a peer decided before it heard this server
    again may still land: no program it hosts is started until that grace is over; ``history``: recent moves per tag; ``said``:
    when this server last recorded each standing condition (``decide`` returns
    ``RecordEvent`` of kinds ``resource_missing`` and ``maintenance_blocked`` at most once
    per ``Policy.repeat_after``; the shell stores the time it recorded them); ``invalid``:
    the application entries every sentinel ignores, by tag, with what is wrong (an entry
    that was valid before keeps its last valid copy in ``apps``, see ``last_valid``); ``paused``: an
    operator paused the cluster (docs/operating.md, "Pause"): automatic actions wait
    (``pause_hold``).
    """

    apps: Mapping[Tag, App]
    servers: Mapping[ServerName, Server]
    liveness: Liveness
    procs: Mapping[Tag, ProcInfo] = field(default_factory=dict, hash=False)
    resources: frozenset[str] = frozenset()
    networks: Mapping[ServerName, frozenset[str]] = field(default_factory=dict, hash=False)
    replication_caught_up: bool = True
    fenced: bool = False
    registering: bool = False
    starts_held: bool = False
    history: Mapping[Tag, History] = field(default_factory=dict, hash=False)
    said: Mapping[Said, float] = field(default_factory=dict, hash=False)
    invalid: Mapping[Tag, str] = field(default_factory=dict, hash=False)
    paused: bool = False
    # Servers shown in maintenance because their sentinel is stopping (SIGTERM), this one
    # included: what the texts say instead of "in maintenance".
    stopping: frozenset[ServerName] = frozenset()


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
        """The resources ``app`` needs that ``server`` does not offer (claim 57). Stacks: a
        service address needs an interface on its network (or the one named), as this
        server sees its own and as a peer published its own (``View.networks``); a peer
        that published nothing is taken to have them, and refuses by itself if not."""
        if server == self.me:
            return (app.resources | address_needs(app.addresses)) - self.view.resources
        entry = self.view.servers.get(server)
        offered = entry.resources if entry is not None else frozenset()
        published = self.view.networks.get(server) if app.addresses else None
        if published is None:
            return app.resources - offered
        return (app.resources | address_needs(app.addresses)) - (offered | published)

    def out_of_service(self, server: ServerName) -> str:
        """Why a server in maintenance is: its sentinel stopping, or an operator."""
        return "stopping" if server in self.view.stopping else "in maintenance"

    def unfit(self, app: App, server: ServerName) -> str | None:
        """Why ``server`` may not take ``app`` now, or None when it may."""
        if server != self.me and server not in self.view.servers:
            return f"{server} is not a known server"
        if not self.alive(server):
            return f"{server} is dead"
        if self.in_maintenance(server):
            return f"{server} is {self.out_of_service(server)}"
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

    def history(self, tag: Tag) -> History:
        return self.view.history.get(tag, History())

    def failed_on(self, app: App) -> frozenset[ServerName]:
        """The servers where the program kept failing within ``flap_window`` (and since the
        last cleanup): it is not handed back to them, nor failed back to them.

        The hand-off events say so; so does the entry itself, since the events follow the
        write and a program refused at once is handed on before they can arrive: the
        servers ``loading(handoff: alpha beta)`` names (written with the hand-off's swap,
        until the program runs or a cleanup), and the primary while the state is
        ``running(failback held: ...)`` and no event about it has arrived yet."""
        h = self.history(app.tag)
        horizon = self.now - self.policy.flap_window
        recent = {s for t, s in h.failures if t > horizon}
        # The hand-off's state lasts until the program runs (a cleanup clears it too).
        recent.update(handed_off_from(app.state))
        held = app.state.state is AppState.RUNNING and app.state.reason.startswith(
            FAILBACK_HELD_REASON
        )
        if held and app.primary not in h.seen:
            recent.add(app.primary)  # the hold outlives its events only until they arrive
        return frozenset(recent)

    def flapping(self, app: App) -> bool:
        """Another hand-off would make more than ``flap_max_failovers`` of them within
        ``flap_window``: the program is given up where it is. Only program failures count."""
        horizon = self.now - self.policy.flap_window
        moves = sum(1 for t, _ in self.history(app.tag).failures if t > horizon)
        moves = max(moves, len(handed_off_from(app.state)))
        return moves >= self.policy.flap_max_failovers

    def flap_reason(self, tag: Tag, host: ServerName) -> str:
        return (
            f"flapping: {self.policy.flap_max_failovers} hand-offs after program failures "
            f"within {self.policy.flap_window:g}s; given up on {host}; "
            f"fix the program, then: ndsclust cleanup {tag}"
        )

    def ordered(self, app: App, leaving: ServerName | None) -> tuple[ServerName, ...]:
        """``app``'s servers without ``leaving``, in its order, the servers where it failed
        recently last: a failover prefers a server where the program did not just fail, and
        still takes one of those rather than leave it on a dead host."""
        bad = self.failed_on(app)
        rest = [s for s in app.servers() if s != leaving]
        return tuple([s for s in rest if s not in bad] + [s for s in rest if s in bad])

    def next_untried(self, app: App, leaving: ServerName) -> ServerName | None:
        """Where a program that kept failing on ``leaving`` goes: the first fit server in the
        application's order where it has not failed recently (primary, then each backup)."""
        bad = self.failed_on(app) | {leaving}
        for server in app.servers():
            if server not in bad and self.unfit(app, server) is None:
                return server
        return None

    def restarts_left(self, proc: ProcInfo) -> int:
        horizon = self.now - self.policy.restart_window
        cleaned = self.history(proc.tag).cleaned
        if cleaned is not None:
            horizon = max(horizon, cleaned)
        return self.policy.max_restarts - sum(1 for t in proc.restarts if t > horizon)

    def say(self, tag: Tag, kind: EventKind, text: str, *, again: bool = True) -> list[Action]:
        """A standing condition: recorded once, and again only after ``repeat_after`` (never
        again, by this sentinel, when not ``again``)."""
        last = self.view.said.get((tag, kind, text))
        if last is not None and (not again or self.now - last < self.policy.repeat_after):
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


def tag_of_dn(dn: str) -> Tag | None:
    """The tag an application entry's DN names (``ndsclustTag=<tag>,...``), or None."""
    first = dn.split(",", 1)[0]
    name, _, value = first.partition("=")
    if name.strip().lower() != "ndsclusttag":
        return None
    try:
        return check_tag(value.strip())
    except ValueError:
        return None


def last_valid(
    apps: Mapping[Tag, App], invalid: Iterable[tuple[str, str]], last: Mapping[Tag, App]
) -> tuple[dict[Tag, App], dict[Tag, str]]:
    """The applications the core decides on, and the invalid entries by tag.

    ``invalid`` holds (DN, what is wrong) of the entries the directory snapshot leaves out;
    ``last`` is what this function returned the cycle before. An entry that was valid and
    became invalid (a typo in a running application's command or backups) keeps its last
    valid copy: its program keeps running on it and the host reports the error, instead of
    taking it for an entry removed from the directory. The caller keeps the returned
    applications as the next ``last``."""
    out = dict(apps)
    bad: dict[Tag, str] = {}
    for dn, problem in invalid:
        tag = tag_of_dn(dn)
        if tag is None or tag in apps:
            continue
        bad[tag] = problem
        if tag in last:
            out[tag] = last[tag]
    return out, bad

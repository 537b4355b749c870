"""The loop's ``View``, kept from cycle to cycle and updated from what changed.

Each part of the view is made again only when what it comes from changed: the
applications, invalid entries and servers when the cache's version moved (``last_valid``
over the new snapshot), the histories when its moves did, ``said`` when an executor group
ended. Each cycle also says what changed (``ondemand.Marks``): the tags the cache marked
(``ClusterCache.take_marks``), the tags whose process-table row is a new object (the
supervisor gives an unchanged program the same row), whose history or standing conditions
differ; and ``everything`` when a part every decision reads differs from the last cycle's
(servers, which servers are alive or past their start hold, resources, the networks the
peers published, the flags). Nothing here is per application in a cycle
where nothing changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from ndsclust.ldapstore.cache import ClusterCache
from ndsclust.model import App, Server, ServerName, ServerState, Tag
from ndsclust.pause import Pause
from ndsclust.sentinel import address
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.ondemand import Marks
from ndsclust.sentinel.procs import ProcInfo
from ndsclust.sentinel.view import History, Said, View, histories, last_valid


@dataclass(frozen=True, slots=True)
class Flags:
    """The parts of the view the shell works out each cycle (see ``View``)."""

    replication_caught_up: bool
    fenced: bool
    registering: bool
    starts_held: bool
    leaving: bool
    stopping: frozenset[ServerName]  # peers whose sentinel says it is stopping
    # peers heard without a break for a start hold (Liveness.settled): a hand-over that
    # waits for its target (failback.target_held) goes once the target is in it
    settled: frozenset[ServerName] = frozenset()


def _changed(old: Mapping[Tag, object], new: Mapping[Tag, object]) -> set[Tag]:
    """Tags whose value is not the same object (or is gone, or new)."""
    out = {t for t, v in new.items() if old.get(t) is not v}
    out.update(t for t in old if t not in new)
    return out


def _differ(old: Mapping[Tag, object], new: Mapping[Tag, object]) -> set[Tag]:
    out = {t for t, v in new.items() if old.get(t) != v}
    out.update(t for t in old if t not in new)
    return out


class Gather:
    """Builds the loop's view; not thread-safe (the loop's)."""

    def __init__(
        self,
        me: ServerName,
        cache: ClusterCache,
        resources: Callable[[], frozenset[str]],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.me = me
        self._cache = cache
        self._resources = resources  # the configuration's
        self._wall = wall
        self._version = -1
        self._moves_version = -1
        self.apps: dict[Tag, App] = {}  # the last cycle's applications (last_valid)
        self._invalid: dict[Tag, str] = {}
        self._snap_servers: Mapping[ServerName, Server] = {}
        self._servers: dict[ServerName, Server] = {}
        self._servers_of: object = None
        self._addresses = False
        self._pause: Pause | None = None
        self._stopping: frozenset[ServerName] = frozenset()
        self._history: dict[Tag, History] = {}
        self._said: Mapping[Said, float] = {}
        self._procs: Mapping[Tag, ProcInfo] = {}
        self._networks: dict[ServerName, frozenset[str]] = {}  # View.networks
        self._shared: object = None
        self._marked: set[Tag] = set()  # what the cache marked, not yet handed on
        self._everything = False
        self.view: View | None = None

    def servers(self, leaving: bool, stopping: Iterable[ServerName]) -> dict[ServerName, Server]:
        """The servers as the view shows them: a stopping sentinel's server (this one while
        ``leaving``, a peer whose sentinel stops) in maintenance (docs/design.md section 3)."""
        self._directory()
        stopping = frozenset(stopping) & self._snap_servers.keys()
        key = (self._snap_servers, leaving, stopping)
        if key != self._servers_of:
            self._servers_of = key
            servers = dict(self._snap_servers)
            out = stopping | ({self.me} if leaving and self.me in servers else set())
            for name in out:
                servers[name] = replace(servers[name], state=ServerState.MAINTENANCE)
            self._servers = servers
        self._stopping = stopping
        return self._servers

    def _directory(self) -> None:
        """Take over the cache's snapshot when it changed. The marks are taken first: a
        change that lands in between is in the snapshot and marked again next cycle."""
        tags, everything = self._cache.take_marks()
        self._marked |= tags
        self._everything = self._everything or everything
        version = self._cache.version
        if version == self._version:
            return
        self._version = version
        snap = self._cache.snapshot()
        self._snap_servers = snap.servers
        problems = ((e.dn, f"{e.attribute}: {e.problem}") for e in snap.invalid)
        self.apps, self._invalid = last_valid(snap.apps, problems, self.apps)
        self._addresses = any(a.addresses for a in snap.apps.values())
        self._pause = snap.pause

    def update(
        self,
        now: float,
        *,
        liveness: Liveness,
        procs: Mapping[Tag, ProcInfo],
        said: Mapping[Said, float] | None,
        flags: Flags,
        networks: Mapping[ServerName, frozenset[str]] | None = None,
    ) -> tuple[View, Marks]:
        """This cycle's view and what changed since the last one. ``said`` is None when
        no executor group ended since (the standing conditions are as they were)."""
        servers = self.servers(flags.leaving, flags.stopping)
        marked, everything = self._marked, self._everything
        self._marked, self._everything = set(), False
        moves = self._cache.moves_version
        if moves != self._moves_version:
            self._moves_version = moves
            history = histories(
                ((m.tag, m.kind, m.wall, m.server) for m in self._cache.moves()),
                now,
                self._wall(),
            )
            marked |= _differ(self._history, history)
            self._history = history
        if said is not None and said != self._said:
            marked |= {t for t, _, _ in {*said.keys() ^ self._said.keys()}}
            marked |= {k[0] for k, v in said.items() if self._said.get(k) != v}
            self._said = said
        marked |= _changed(self._procs, procs)
        self._procs = procs
        offered = address.local_resources() if self._addresses else frozenset()
        pause = self._pause
        if networks is not None and networks != self._networks:
            self._networks = dict(networks)
        view = View(
            apps=self.apps,
            invalid=self._invalid,
            servers=servers,
            liveness=liveness,
            procs=procs,
            # Stacks: interfaces on a service address's network (ndsclust/sentinel/address.py).
            resources=self._resources() | offered,
            replication_caught_up=flags.replication_caught_up,
            fenced=flags.fenced,
            registering=flags.registering,
            starts_held=flags.starts_held,
            history=self._history,
            said=self._said,
            paused=pause is not None and pause.active(self._wall()),
            stopping=self._stopping | ({self.me} if flags.leaving else set()),
            networks=self._networks,
        )
        # The core reads liveness through alive() alone (and a dead server's silent
        # channels, which are then all of them): a channel coming and going on a live peer
        # changes no decision.
        alive = frozenset(p for p, chans in liveness.seen.items() if chans) | liveness.grace
        shared = (
            servers,
            alive,
            liveness.configured,
            view.resources,
            view.replication_caught_up,
            view.fenced,
            view.registering,
            view.starts_held,
            view.paused,
            view.stopping,
            flags.settled,
            self._networks,
        )
        everything = everything or shared != self._shared
        self._shared = shared
        self.view = view
        return view, Marks(frozenset(marked), everything)

"""The sentinel's imperative shell: gather a View, call ``decide``, carry out the actions.

Threads, and why each exists:

- main loop (``run``): every ``loop_interval`` folds the watch's events into the cache,
  builds the ``View`` and executes what ``decide`` returns. Its directory writes may block
  while the store fails over to another provider; nothing safety-critical waits for it.
- keeper: every ``loop_interval`` renews the programs' lease and checks isolation. It
  renews only while the main loop has made progress within ``HANG_LIMIT`` (a hung loop
  lets the lease expire), and when this server is cut off (no peer on any channel within
  ``fence - KILL_ALLOWANCE`` and no witness, or no majority) it kills every program at once
  and marks the sentinel fenced (docs/design.md section 4). A SIGSTOPped or killed sentinel
  stops renewing altogether: the guard kills the programs when the lease runs out.
- pulse writer: advances this server's directory pulse (claim 44) through its own
  connection, so a slow provider never delays the main loop and vice versa.
- recorder: writes events to ``ou=events`` and runs the notify command, off the main loop.
- replication check: at start, until the local provider has caught up (FIG. 6 step 614).
- the two watches (cluster subtree, pulse database) and the channels run their own threads.
- the control socket (``control.py``) serves cluster-aware programs on its own threads,
  with its own connection to the write provider; the loop admits each aware program it
  starts, grants a paused copy its start on ``Load`` and asks for the unload on ``Unload``.

Coming back. A sentinel that was not running for a while (SIGSTOP, a hung host, a long
scheduling stall: a loop cycle or keeper round later than ``stall_limit``) or that leaves
fencing decides nothing until it has *rejoined* (``rejoin.py``; docs/operating.md,
"Rejoin"): its view proved current against every provider it reaches, then a barrier
written through the write provider and echoed by its watch, then a grace in which it
starts nothing.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import ldap3

from ndsclust import logfmt
from ndsclust.config import KILL_ALLOWANCE, Config
from ndsclust.errors import (
    ConfigError,
    NdsclustError,
    StoreError,
    SupervisorError,
    SwapConflict,
    Withdrawn,
)
from ndsclust.ldapstore.cache import ClusterCache
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.replication import caught_up
from ndsclust.ldapstore.store import APP_ATTRS, Store
from ndsclust.ldapstore.watch import Changed, Deleted, RefreshDone, Watch
from ndsclust.model import App, AppType, ServerName, ServerState, Tag
from ndsclust.sentinel.actions import (
    FAILURE_MOVES,
    Action,
    Claim,
    ConsumeRequest,
    EventKind,
    Load,
    LoadPaused,
    Notify,
    RecordEvent,
    Release,
    Restart,
    SetState,
    Unload,
)
from ndsclust.sentinel.channels import Channel
from ndsclust.sentinel.channels.directory import DirectoryChannel
from ndsclust.sentinel.channels.disk import DiskChannel
from ndsclust.sentinel.channels.lan import LanChannel
from ndsclust.sentinel.channels.witness import WitnessChannel
from ndsclust.sentinel.control import ControlServer
from ndsclust.sentinel.decide import decide
from ndsclust.sentinel.detector import Detector, Liveness, must_fence
from ndsclust.sentinel.procs import ProcInfo
from ndsclust.sentinel.rejoin import CheckView, Rejoin, WriteBarrier
from ndsclust.sentinel.supervisor import Supervisor
from ndsclust.sentinel.view import Policy, Said, View, histories

log = logging.getLogger("ndsclust.sentinel")

# The keeper stops renewing leases when the main loop has not finished a cycle for this long:
# longer than a store failover (its operation deadline), so a provider dying does not kill
# programs, short enough that a wedged sentinel does not keep them forever.
HANG_LIMIT = 30.0
NOTIFY_TIMEOUT = 10.0
REPLICATION_CHECK_INTERVAL = 0.5
# A sentinel stopped with SIGTERM hands its programs on; it gives up waiting after this.
HANDOFF_DEADLINE_EXTRA = 10.0
# A cycle in which nothing changed decides again only after this long.
RECHECK_INTERVAL = 1.0
# Seconds a rejoin waits for its barrier event to come back before it writes another.
BARRIER_RETRY = 5.0
# How long a rejoin's view check waits for one provider's contextCSN.
VIEW_PROBE_TIMEOUT = 1.0
# How often channel counters (dropped heartbeats, disk errors) are compared and logged.
STATS_INTERVAL = 10.0
PROBLEM_PREFIXES = ("dropped_", "bad_", "wrong_")
# Connections that carry out independent applications' actions side by side.
WRITERS = 8


def log_event(level: int, event: str, **fields: object) -> None:
    """One line per event: ``event=failover tag=web server=beta from=alpha``."""
    log.log(level, logfmt.encode(event, fields))


def policy_of(cfg: Config) -> Policy:
    """The decision core's tunables from the supervision section of the configuration."""
    sv = cfg.supervision
    return Policy(
        max_restarts=sv.max_restarts,
        restart_window=sv.restart_window,
        flap_max_failovers=sv.flap_max_failovers,
        flap_window=sv.flap_window,
    )


@dataclass(frozen=True, slots=True)
class _Record:
    kind: EventKind
    tag: Tag
    text: str
    notify: bool


class Sentinel:
    """One server's sentinel. ``run()`` blocks until ``stop()``; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        ready: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.me = cfg.server
        self.clock = clock
        self._ready_hook = ready
        d = cfg.directory
        self.providers = Providers(d.uris, d.credentials, servers=d.provider_servers)
        self.store = Store(
            self.providers,
            d.suffix,
            base=d.base,
            pulse_base=d.pulse_suffix,
            event_limit=cfg.event_limit,
        )
        # Reads and watches prefer this server's own provider when it is configured.
        read_uris = list(d.uris)
        if d.local_uri:
            read_uris = [d.local_uri] + [u for u in d.uris if u != d.local_uri]
        self.read_providers = Providers(read_uris, d.credentials)
        self.cache = ClusterCache(move_kinds=frozenset(k.value for k in FAILURE_MOVES))
        self.watch = Watch(self.read_providers, d.base, attributes=APP_ATTRS, name="cluster")
        self.pulse_watch = Watch(
            self.read_providers,
            d.pulse_suffix,
            filter="(objectClass=ndsclustPulseEntry)",
            attributes=("cn", "ndsclustPulse"),
            name="pulse",
        )
        self.channels: dict[str, Channel] = {}
        self.directory_channel: DirectoryChannel | None = None
        self.lan: LanChannel | None = None
        self.witness: WitnessChannel | None = None
        self._build_channels()
        started = clock()
        # A peer's claim decided while this server was down may still be on its way: for one
        # failover timeout after start, as after a rejoin, no program is started here.
        self._hold_starts_until = started + cfg.timeouts.failover
        timeouts = {name: ch.timeout for name, ch in self.channels.items()}
        self.detector = Detector(timeouts, self.me, started, cfg.timeouts.startup_grace)
        fence_detect = cfg.timeouts.fence - KILL_ALLOWANCE
        self.fence_detector = Detector(
            {n: fence_detect for n in self._fence_channels()},
            self.me,
            started,
            cfg.timeouts.startup_grace,
        )
        self.policy = policy_of(cfg)
        self.supervisor = Supervisor(
            self.me,
            logger=logging.getLogger("ndsclust.programs"),
            control_socket=cfg.control_socket,
            lease_timeout=cfg.timeouts.lease,
        )
        # The cluster-aware API (ndsclust.aware) talks to this server through the control
        # socket; its own connection keeps programs' marker writes out of the loop's way.
        self.control: ControlServer | None = None
        if cfg.control_socket:
            self.control = ControlServer(
                cfg.control_socket,
                self.me,
                Store(
                    Providers(d.uris, d.credentials),
                    d.suffix,
                    base=d.base,
                    pulse_base=d.pulse_suffix,
                    event_limit=cfg.event_limit,
                ),
                user=cfg.programs.user,
            )
        self._sup_lock = threading.RLock()
        self._stop = threading.Event()
        self._leaving = False
        self._fenced = threading.Event()
        self._caught_up = threading.Event()
        self._registering = True
        self._refreshed = False
        self._progress = clock()
        # A cycle or keeper round later than this means this process was not running: the
        # smallest silence after which a channel, or the fence detector, would call a peer
        # dead (see "Coming back" above).
        self._stall_limit = min([fence_detect, *timeouts.values()])
        self._rejoin_wanted = threading.Event()  # the keeper asks the loop to rejoin ...
        self._rejoin_why = ""  # ... for this reason
        self.rejoin = Rejoin(barrier_retry=BARRIER_RETRY, recheck=REPLICATION_CHECK_INTERVAL)
        # Answers of the rejoin's probes and barrier writes, from pool threads to the loop.
        self._rejoin_answers: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._write_provider = self.providers.order()[0]
        self._said: dict[Said, float] = {}
        self._records: queue.Queue[_Record | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._peers_version = -1
        self._health_due: dict[Tag, float] = {}
        self._local = threading.local()
        self._last_key: object = None
        self._stats_due = 0.0
        self._stats_seen: dict[str, dict[str, int]] = {}
        self._last_decide = 0.0
        self._writers: list[Store] = []
        self._writers_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="sentinel-writer")
        self.cycles = 0

    # -- setup ----------------------------------------------------------------------------

    def _build_channels(self) -> None:
        cfg = self.cfg
        if cfg.lan:
            self.lan = LanChannel(
                me=self.me,
                cluster=cfg.cluster,
                bind=list(cfg.lan.addresses),
                keys=dict(cfg.lan.keys),
                send_key_id=cfg.lan.send_key,
                interval=cfg.lan.interval,
                timeout=cfg.lan.timeout,
            )
            self.channels["lan"] = self.lan
        if cfg.directory_channel:
            self.directory_channel = DirectoryChannel(
                me=self.me, timeout=cfg.directory_channel.timeout
            )
            self.channels["directory"] = self.directory_channel
        if cfg.disk:
            self.channels["disk"] = DiskChannel(
                me=self.me,
                cluster=cfg.cluster,
                path=cfg.disk.path,
                servers=list(cfg.disk.servers),
                interval=cfg.disk.interval,
                timeout=cfg.disk.timeout,
                direct=cfg.disk.direct,
                sync=cfg.disk.sync,
            )
        if cfg.witness:
            self.witness = WitnessChannel(
                address=cfg.witness.address,
                interval=cfg.witness.interval,
                timeout=cfg.witness.timeout,
            )

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=f"sentinel-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    # -- run / stop -----------------------------------------------------------------------

    def run(self) -> int:
        """Run until ``stop()``; returns the process exit status."""
        log_event(
            logging.INFO,
            "sentinel_start",
            server=self.me,
            pid=os.getpid(),
            channels=",".join(self.channels) or "-",
            witness=self.cfg.witness.address if self.cfg.witness else "-",
        )
        if self.control:
            try:
                self.control.start()
            except ConfigError as e:
                log_event(
                    logging.ERROR,
                    "control_socket_failed",
                    server=self.me,
                    error=str(e).replace("\n", ";"),
                )
                return 2
        for ch in self.channels.values():
            ch.start()
        if self.witness:
            self.witness.start()
        self.watch.start()
        self.pulse_watch.start()
        self._spawn("keeper", self._keeper)
        self._spawn("recorder", self._recorder)
        if self.directory_channel:
            self._spawn("pulse", self._pulse_writer)
        self._spawn("replication", self._replication_check)
        leave_deadline: float | None = None
        try:
            while True:
                now = self.clock()
                if self._stop.is_set() and not self._leaving:
                    self._leaving = True
                    leave_deadline = now + self.cfg.timeouts.stop_grace + HANDOFF_DEADLINE_EXTRA
                    log_event(
                        logging.INFO,
                        "sentinel_stopping",
                        server=self.me,
                        action="unload and hand programs to backups",
                    )
                if self._leaving and (
                    self._nothing_left() or (leave_deadline is not None and now > leave_deadline)
                ):
                    break
                self.cycle(now)
                self._progress = self.clock()
                self._wait_for_work(self.cfg.timeouts.loop_interval)
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        """Ask the sentinel to unload its programs, hand them on and return from ``run()``."""
        self._stop.set()

    def reload(self, new: Config) -> None:
        """Take over what can change while running: resources, supervision, notify, events."""
        self.cfg = replace(
            self.cfg,
            resources=new.resources,
            supervision=new.supervision,
            notify_command=new.notify_command,
            event_limit=new.event_limit,
            log_level=new.log_level,
        )
        self.store.event_limit = new.event_limit
        self.policy = policy_of(new)

    def _wait_for_work(self, timeout: float) -> None:
        time.sleep(timeout)

    def _nothing_left(self) -> bool:
        with self._sup_lock:
            procs = self.supervisor.table()
        if any(p.state.value != "exited" for p in procs.values()):
            return False
        snap = self.cache.snapshot()
        return not any(a.host == self.me for a in snap.apps.values()) or not self._refreshed

    def _shutdown(self) -> None:
        with self._sup_lock:
            self.supervisor.stop_all(0.0)
            self.supervisor.close()
        if self.control:
            self.control.stop()
        self._stop.set()
        self._records.put(None)
        self._pool.shutdown(wait=True)
        with self._writers_lock:
            for w in self._writers:
                w.close()
        self.watch.stop()
        self.pulse_watch.stop()
        for ch in self.channels.values():
            ch.stop()
        if self.witness:
            self.witness.stop()
        self.providers.close()
        self.read_providers.close()
        for t in self._threads:
            t.join(timeout=5)
        self.store.close()
        log_event(logging.INFO, "sentinel_stop", server=self.me)

    # -- one cycle --------------------------------------------------------------------------

    def _drain_watches(self, now: float) -> None:
        while (ev := self.watch.get(0)) is not None:
            if isinstance(ev, Changed):
                self.cache.put(ev.entry.uuid, ev.entry.dn, ev.entry.attributes)
                if (
                    self.rejoin.pending
                    and _is_rejoin_of(ev.entry.attributes, self.me)
                    and self.rejoin.echoed(ev.entry.dn)
                ):
                    self._rejoined()
            elif isinstance(ev, Deleted):
                self.cache.delete(ev.uuid)
            elif isinstance(ev, RefreshDone) and not self._refreshed:
                self._refreshed = True
                log_event(
                    logging.INFO,
                    "directory_ready",
                    server=self.me,
                    provider=self.watch.provider or "-",
                )
                if self._ready_hook:
                    self._ready_hook()
        while (ev := self.pulse_watch.get(0)) is not None:
            if isinstance(ev, Changed) and self.directory_channel:
                attrs = {k.lower(): v for k, v in ev.entry.attributes.items()}
                try:
                    server = ServerName(attrs["cn"][0])
                    counter = int(attrs["ndsclustpulse"][0])
                except (KeyError, IndexError, ValueError):
                    continue
                if server != self.me:
                    self.directory_channel.pulse_seen(server, counter, now)

    def _observations(self) -> dict[str, Mapping[ServerName, float]]:
        now = self.clock()
        return {name: ch.observe(now) for name, ch in self.channels.items()}

    def _fence_channels(self) -> list[str]:
        """Channels that prove this server's own signals reach its peers (fencing asks "do
        they hear me?", not "do I hear them?"): LAN acknowledgements and the shared disk.
        Seeing peers' directory pulses proves only the way in; it counts only when nothing
        else is configured."""
        proof: list[str] = [n for n in ("lan", "disk") if n in self.channels]
        return proof or list(self.channels)

    def _fence_observations(self, now: float) -> dict[str, Mapping[ServerName, float]]:
        out = {n: self.channels[n].observe(now) for n in self._fence_channels()}
        if "lan" in out and self.lan is not None:
            out["lan"] = self.lan.acknowledged(now)
        return out

    def view(self, now: float) -> View:
        snap = self.cache.snapshot()
        history = histories(((m.tag, m.kind, m.wall) for m in self.cache.moves()), now, time.time())
        servers = dict(snap.servers)
        if self._leaving and self.me in servers:
            # A stopping sentinel behaves as a server in maintenance: it unloads its
            # programs and hands them to the next eligible server (docs/design.md section 3).
            servers[self.me] = replace(servers[self.me], state=ServerState.MAINTENANCE)
        if self.lan and self.cache.version != self._peers_version:
            self._peers_version = self.cache.version
            self.lan.set_peers({s.name: s.addresses for s in servers.values() if s.name != self.me})
        liveness = self.detector.liveness(
            self._observations(), now, list(servers), blind=self._blind()
        )
        self._follow_write_provider(now, liveness)
        if self.rejoin.in_grace(now):
            # Just out of fencing: a peer not heard since may be a live host; count every
            # peer alive until a full failover timeout has passed (as at start-up).
            liveness = replace(liveness, grace=frozenset(s for s in servers if s != self.me))
        with self._sup_lock:
            procs = dict(self.supervisor.table())
        return View(
            apps=snap.apps,
            servers=servers,
            liveness=liveness,
            procs=procs,
            resources=self.cfg.resources,
            replication_caught_up=self._caught_up.is_set(),
            fenced=self._fenced.is_set() or self._cut_off(now, list(servers)),
            registering=self._registering,
            starts_held=self.rejoin.in_grace(now) or now < self._hold_starts_until,
            history=history,
            said=dict(self._said),
        )

    def cycle(self, now: float) -> list[Action]:
        """One decision cycle (the patroni-style run_cycle, with the decision made pure)."""
        self._drain_watches(now)
        with self._sup_lock:
            for info in self.supervisor.poll():
                self._log_exit(info)
                if self.control:
                    self.control.ended(info.tag)
                if info.stop_requested:
                    # An unload that finished is no failure: a later load is a fresh start,
                    # not a restart that counts against claim 57's budget.
                    self.supervisor.forget(info.tag)
        if not self._refreshed:
            return []
        # The loop sleeps loop_interval between cycles (run() sets _progress after each):
        # waking much later means the whole process was stopped, not that a cycle was slow.
        gap = now - self._progress - self.cfg.timeouts.loop_interval
        if gap > self._stall_limit:
            self._begin_rejoin(now, f"this sentinel did not run for {gap:.1f}s")
        if self._rejoin_wanted.is_set():
            self._rejoin_wanted.clear()
            self._begin_rejoin(now, self._rejoin_why)
        view = self.view(now)
        if self.rejoin.pending:
            self._advance_rejoin(now, view)
            if self.rejoin.pending:
                return []
        key = (
            self.cache.version,
            view.fenced,
            view.replication_caught_up,
            view.registering,
            self._leaving,
            tuple(sorted(view.liveness.seen.items())),
            view.liveness.grace,
            tuple(sorted((t, p.state, p.paused, p.pid) for t, p in view.procs.items())),
        )
        if key == self._last_key and now - self._last_decide < RECHECK_INTERVAL:
            # Nothing the decision depends on has changed: skip the work (a thousand
            # applications make a decision cycle cost milliseconds). Time-based rules
            # (restart windows, flap damping, repeats) are looked at every RECHECK_INTERVAL.
            return []
        self._last_key, self._last_decide = key, now
        actions = decide(view, self.me, now, self.policy)
        if view.replication_caught_up:
            self._registering = False
        self._execute(actions, view, now)
        self._health_checks(view, now)
        self._report_channels(now)
        self.cycles += 1
        return actions

    def _report_channels(self, now: float) -> None:
        """Every STATS_INTERVAL, one line per channel whose drop or error counters grew
        (forged, replayed or malformed heartbeats; an unwritable disk slot)."""
        if now < self._stats_due:
            return
        self._stats_due = now + STATS_INTERVAL
        for name, ch in self.channels.items():
            stats = dict(ch.stats())
            before = self._stats_seen.get(name, {})
            grew = {
                k: v - before.get(k, 0)
                for k, v in stats.items()
                if (k.startswith(PROBLEM_PREFIXES) or k.endswith("_errors"))
                and v > before.get(k, 0)
            }
            self._stats_seen[name] = stats
            if grew or stats.get("degraded"):
                log_event(
                    logging.WARNING,
                    "channel_counters",
                    server=self.me,
                    channel=name,
                    degraded=stats.get("degraded", 0),
                    **{k: f"+{v}" for k, v in sorted(grew.items())},
                )

    def _log_exit(self, info: ProcInfo) -> None:
        level = logging.INFO if info.stop_requested else logging.WARNING
        log_event(
            level,
            "program_exit",
            tag=info.tag,
            server=self.me,
            code=info.exit_code if info.exit_code is not None else "-",
            reason=info.reason or ("unloaded" if info.stop_requested else "exited"),
        )

    # -- executing actions ------------------------------------------------------------------

    def _execute(self, actions: list[Action], view: View, now: float) -> None:
        """Run the actions, one group per application; groups are independent (decide's
        contract), so when there are several they run side by side on WRITERS connections
        to the write provider: a thousand applications failing over at once is a thousand
        swaps, not a queue of them."""
        groups: dict[Tag, list[Action]] = {}
        for action in actions:
            groups.setdefault(action.tag, []).append(action)
        if len(groups) <= 1:
            for group in groups.values():
                self._run_group(group, view, now)
            return
        list(self._pool.map(lambda g: self._run_group(g, view, now), groups.values()))

    def _run_group(self, group: list[Action], view: View, now: float) -> None:
        tag = group[0].tag
        for action in group:
            try:
                self._do(action, view, now)
            except Withdrawn as e:
                log_event(logging.INFO, "claim_withdrawn", tag=tag, server=self.me, why=e.why)
                return
            except SwapConflict as e:
                # Someone changed the entry first: re-read and decide again next cycle.
                log_event(
                    logging.INFO,
                    "swap_conflict",
                    tag=tag,
                    server=self.me,
                    attribute=e.attribute,
                    expected=e.expected or "-",
                    wanted=e.new or "-",
                )
                self._read_back(tag)
                return
            except SupervisorError as e:
                said = (tag, EventKind.ERROR, str(e))
                if now - self._said.get(said, -1e18) >= self.policy.repeat_after:
                    self._said[said] = now
                    log_event(
                        logging.ERROR, "supervisor_error", tag=tag, server=self.me, error=str(e)
                    )
                    self._records.put(_Record(EventKind.ERROR, tag, str(e), False))
                    self._records.put(_Record(EventKind.ERROR, tag, str(e), True))
                return
            except StoreError as e:
                # Provider trouble: leave the group; nothing in a group is unsafe to leave.
                log_event(logging.WARNING, "store_error", tag=tag, server=self.me, error=str(e))
                return

    def _ask_rejoin(self, why: str) -> None:
        """From the keeper: have the loop rejoin before its next decision."""
        self._rejoin_why = why
        self._rejoin_wanted.set()

    def _begin_rejoin(self, now: float, why: str) -> None:
        """Start (or restart) a rejoin (``rejoin.py``): every peer gets a failover timeout's
        grace, and nothing is decided until the view is proved current and the barrier
        has come back."""
        self._last_key = None
        if self.rejoin.begin(now, why, grace=self.cfg.timeouts.failover):
            log_event(logging.WARNING, "rejoin", server=self.me, reason=why)

    def _follow_write_provider(self, now: float, liveness: Liveness) -> None:
        """Tell the provider list which providers' servers the channels find dead or hear,
        so the next write skips a dead server's provider without a socket timeout.

        No rejoin follows a change of write provider: what this view may lack of the new
        write provider's writes can only make a compare-and-swap fail (re-read, decide
        again), never succeed on an old value, and a failover must not wait for a barrier."""
        heard = {s for s, chans in liveness.seen.items() if chans} | {self.me}
        self.providers.set_liveness(liveness.dead(), heard)
        first = self.providers.order()[0]
        if first != self._write_provider:
            was, self._write_provider = self._write_provider, first
            log_event(
                logging.INFO,
                "write_provider",
                server=self.me,
                provider=self.providers.uris[first],
                was=self.providers.uris[was],
                reason=(
                    "its server is dead on every channel"
                    if self.providers.dead(was)
                    else "its server is heard again"
                ),
            )

    def _advance_rejoin(self, now: float, view: View) -> None:
        """Take in the answers of the rejoin's probes and writes; start its next step."""
        while True:
            try:
                self._rejoin_answers.get_nowait()()
            except queue.Empty:
                break
        if not self.rejoin.pending:
            return
        if self.rejoin.overdue(now):
            log_event(
                logging.WARNING,
                "rejoin_barrier_overdue",
                server=self.me,
                waited_s=BARRIER_RETRY,
                provider=self.watch.provider or "-",
            )
        step = self.rejoin.next_step(now)
        if isinstance(step, CheckView):
            self._pool.submit(self._check_view, step.generation, *self._view_rule(view))
        elif isinstance(step, WriteBarrier):
            self._pool.submit(self._write_barrier, step.generation)

    def _view_rule(self, view: View) -> tuple[list[str], set[str], int]:
        """For a rejoin's view check: the providers to compare with (not those of servers
        the channels find dead), those that must answer (providers of the peers they hear,
        or in grace), and how many must answer at least (without the provider-to-server
        map, a majority, or every live server's share of it)."""
        peers = [u for i, u in enumerate(self.providers.uris) if not self.providers.dead(i)]
        servers = self.providers.servers
        required = {
            self.providers.uris[i]
            for i, s in servers.items()
            if s is not None and s != self.me and view.liveness.alive(ServerName(s))
        }
        if any(servers.values()):
            return peers, required, 1
        alive = 1 + sum(1 for s in view.servers if s != self.me and view.liveness.alive(s))
        return peers, required, min(len(self.providers.uris) // 2 + 1, alive)

    def _check_view(
        self, generation: int, peers: list[str], required: set[str], quorum: int
    ) -> None:
        uri = self.watch.provider
        if uri is None:
            ok, why = False, "the watch is reconnecting"
        else:
            try:
                ok, why = caught_up(
                    uri,
                    peers,
                    self.cfg.directory.credentials,
                    [self.cfg.directory.suffix],
                    required=required,
                    quorum=quorum,
                    timeout=VIEW_PROBE_TIMEOUT,
                )
            except Exception as e:  # a pool thread's exception would vanish with its future
                ok, why = False, f"view check failed: {e}"

        def answer() -> None:
            if self.rejoin.view_checked(generation, self.clock(), ok, why):
                log_event(
                    logging.WARNING, "rejoin_waits", server=self.me, provider=uri or "-", why=why
                )

        self._rejoin_answers.put(answer)

    def _write_barrier(self, generation: int) -> None:
        dn: str | None = None
        try:
            event = self._writer.record_event(
                EventKind.REJOIN.value,
                server=self.me,
                text=f"{self.me} rejoins: waits for its watch to deliver this event",
            )
            dn = event.dn
        except NdsclustError as e:
            # Written again at the next step: until then nothing is decided.
            log_event(logging.WARNING, "rejoin_barrier_failed", server=self.me, error=str(e))
        except Exception:
            # A pool thread's exception would vanish with its future: say it.
            log.exception("event=rejoin_barrier_failed server=%s", self.me)

        def answer() -> None:
            if self.rejoin.barrier_written(generation, self.clock(), dn):
                self._rejoined()

        self._rejoin_answers.put(answer)

    def _rejoined(self) -> None:
        self._last_key = None
        log_event(
            logging.INFO,
            "rejoined",
            server=self.me,
            provider=self.watch.provider or "-",
            write_provider=self.providers.uris[self._write_provider],
        )

    @property
    def _writer(self) -> Store:
        """This thread's connection to the write provider (one per executor thread)."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            d = self.cfg.directory
            store = Store(
                self.providers,
                d.suffix,
                base=d.base,
                pulse_base=d.pulse_suffix,
                event_limit=self.cfg.event_limit,
            )
            self._local.store = store
            with self._writers_lock:
                self._writers.append(store)
        return store

    def _seen_write(self, tag: Tag, entry: Mapping[str, object] | None) -> None:
        """Show our own write in the cache at once: the entry as the modify left it (post-read
        control, with its entryUUID and entryCSN), else read it back."""
        uuid = entry.get("entryUUID") if entry else None
        if entry and isinstance(uuid, list) and uuid:
            raw = uuid[0]
            self.cache.put(
                raw.decode() if isinstance(raw, bytes) else str(raw),
                self._writer.app_dn(tag),
                entry,  # type: ignore[arg-type]
                local=True,
            )
        else:
            self._read_back(tag)

    def _read_back(self, tag: Tag) -> None:
        """Put the entry as the write provider has it now into the cache (see cache.py)."""
        found = self._writer.search(
            self._writer.app_dn(tag), "(objectClass=*)", scope=ldap3.BASE, attributes=APP_ATTRS
        )
        for dn, attrs in found:
            uuid = attrs.get("entryUUID", [b""])[0]
            self.cache.put(
                uuid.decode() if isinstance(uuid, bytes) else str(uuid), dn, attrs, local=True
            )

    def _app(self, view: View, tag: Tag) -> App:
        app = view.apps.get(tag)
        if app is None:
            raise SupervisorError(f"application {tag} is no longer in the directory")
        return app

    def _do(self, action: Action, view: View, now: float) -> None:
        tag = action.tag
        w = self._writer
        if isinstance(action, Claim):
            host = action.expect_host
            # Decided while the host was silent: if it is heard again by the time the swap
            # leaves (a connect held up by a provider change or a partition), the claim is
            # withdrawn, so a claim never lands long after its host came back.
            self._seen_write(
                tag,
                w.swap_app(
                    tag,
                    host=(host, self.me),
                    consume=action.consumes,
                    state=action.state,
                    post_read=APP_ATTRS,
                    unless=None
                    if host is None or host == self.me
                    else lambda: "the host is heard again" if self._heard_now(host) else None,
                ),
            )
            log_event(
                logging.INFO,
                "claim",
                tag=tag,
                server=self.me,
                **{"from": action.expect_host or "-"},
                state=str(action.state),
                reason=action.reason,
            )
        elif isinstance(action, Release):
            self._seen_write(
                tag,
                w.swap_app(
                    tag,
                    host=(action.expect_host, action.to),
                    consume=action.consumes,
                    state=action.state,
                    post_read=APP_ATTRS,
                ),
            )
            log_event(
                logging.INFO,
                "release",
                tag=tag,
                server=self.me,
                to=action.to or "-",
                state=str(action.state),
                reason=action.reason,
            )
        elif isinstance(action, ConsumeRequest):
            self._seen_write(
                tag,
                w.swap_app(tag, consume=action.request, state=action.state, post_read=APP_ATTRS),
            )
            log_event(
                logging.INFO, "request_done", tag=tag, server=self.me, request=str(action.request)
            )
        elif isinstance(action, SetState):
            self._seen_write(tag, w.set_state(tag, action.value, post_read=APP_ATTRS))
        elif isinstance(action, (Load, Restart, LoadPaused)):
            self._start(view, tag, paused=isinstance(action, LoadPaused))
        elif isinstance(action, Unload):
            if self.control:
                # A cluster-aware program hears it on its socket (and, like any, by SIGTERM).
                self.control.request_stop(tag, action.reason)
            with self._sup_lock:
                self.supervisor.stop(tag, self.cfg.timeouts.stop_grace)
            log_event(logging.INFO, "unload", tag=tag, server=self.me, reason=action.reason)
        elif isinstance(action, RecordEvent):
            self._said[(tag, action.kind, action.text)] = now
            log_event(
                logging.WARNING
                if action.kind in (EventKind.FAILED, EventKind.ERROR, EventKind.RESOURCE_MISSING)
                else logging.INFO,
                action.kind.value,
                tag=tag,
                server=self.me,
                text=action.text,
            )
            self._records.put(_Record(action.kind, tag, action.text, False))
        elif isinstance(action, Notify):
            self._records.put(_Record(action.kind, tag, action.text, True))

    def _heard_now(self, server: ServerName) -> bool:
        """Whether any channel hears ``server`` at this instant."""
        now = self.clock()
        return bool(
            self.detector.liveness(
                self._observations(), now, [server], blind=self._blind()
            ).channels(server)
        )

    def _blind(self) -> frozenset[str]:
        """Channels that report themselves degraded: failing at this server's end."""
        return frozenset(n for n, ch in self.channels.items() if ch.stats().get("degraded"))

    def _start(self, view: View, tag: Tag, *, paused: bool) -> None:
        app = self._app(view, tag)
        proc = view.procs.get(tag)
        with self._sup_lock:
            if proc is not None and proc.paused and not paused:
                self.supervisor.resume(tag)
                if self.control:
                    # FIG. 7B: the host names this server; the paused copy, loaded and
                    # blocked in wait_until_host, continues now.
                    self.control.grant(tag)
                log_event(logging.INFO, "resume", tag=tag, server=self.me)
                return
            allowed = self.cfg.programs.allowed_commands
            if allowed and app.command[0] not in allowed:
                raise SupervisorError(
                    f"{app.command[0]} is not in programs.allowed_commands "
                    f"of server {self.me}; refusing to run it"
                )
            env = dict(self.cfg.programs.env)
            aware = app.type is AppType.AWARE
            if aware:
                if self.control is None:
                    raise SupervisorError(
                        f"{tag} is cluster-aware and needs the control socket; "
                        "set control_socket in the sentinel configuration"
                    )
                # A cluster-aware program loads at once, paused or not; a paused one waits in
                # wait_until_host until grant() (claims 17-24: paused in the program itself).
                env["NDSCLUST_TOKEN"] = self.control.admit(tag, granted=not paused)
            try:
                self.supervisor.start(
                    tag,
                    app.command,
                    paused=paused,
                    gated=aware,
                    user=self.cfg.programs.user,
                    cwd=self.cfg.programs.cwd,
                    env=env,
                    unload_argv=app.unload_command,
                )
            except SupervisorError:
                if self.control:
                    self.control.ended(tag)
                raise

    def _health_checks(self, view: View, now: float) -> None:
        for tag, app in view.apps.items():
            proc = view.procs.get(tag)
            if (
                app.health_command is None
                or app.host != self.me
                or proc is None
                or proc.state.value != "running"
            ):
                continue
            if now < self._health_due.get(tag, 0.0):
                continue
            self._health_due[tag] = now + self.cfg.supervision.health_interval
            with self._sup_lock:
                self.supervisor.check_health(
                    tag, app.health_command, self.cfg.supervision.health_timeout
                )

    # -- helper threads -----------------------------------------------------------------------

    def _keeper(self) -> None:
        """Lease renewal and self-fencing (docs/design.md section 4)."""
        interval = self.cfg.timeouts.loop_interval
        last = self.clock()
        while not self._stop.wait(interval):
            now = self.clock()
            gap, last = now - last, now
            if gap > self._stall_limit + interval:
                # This process was not running: every peer looks silent because nobody
                # listened, not because they are gone. The lease guard has already dealt
                # with our programs if the stall outlasted the lease; the main loop
                # rejoins before deciding anything (see "Coming back").
                self._ask_rejoin(f"this sentinel did not run for {gap - interval:.1f}s")
                if now - self._progress < HANG_LIMIT:
                    with self._sup_lock:
                        self.supervisor.renew_leases()
                continue
            servers = list(self.cache.snapshot().servers)
            cut_off = self._cut_off(now, servers)
            if cut_off and not self._fenced.is_set():
                self._fenced.set()
                with self._sup_lock:
                    self.supervisor.stop_all(0.0)
                log_event(
                    logging.ERROR,
                    "fenced",
                    server=self.me,
                    reason="no majority of peers on any channel"
                    + (
                        ""
                        if self.witness is None or self.witness.reachable(now)
                        else ", witness unreachable"
                    ),
                )
                self._records.put(
                    _Record(
                        EventKind.FENCED,
                        Tag("-"),
                        f"{self.me} is cut off and stopped its programs",
                        True,
                    )
                )
            elif not cut_off and self._fenced.is_set():
                self._fenced.clear()
                self._ask_rejoin("it was cut off and hears its peers again")
                log_event(logging.WARNING, "unfenced", server=self.me)
            if now - self._progress < HANG_LIMIT:
                with self._sup_lock:
                    self.supervisor.renew_leases()
            else:
                log_event(
                    logging.ERROR,
                    "loop_hung",
                    server=self.me,
                    seconds=round(now - self._progress, 1),
                )

    def _cut_off(self, now: float, servers: list[ServerName]) -> bool:
        """Whether this server must fence itself now (``detector.must_fence``). The keeper
        acts on it; the loop's view asks too, so a claim is never decided in the moment
        between becoming a minority and the keeper's next round."""
        fence_view = self.fence_detector.liveness(self._fence_observations(now), now, servers)
        reachable = self.witness.reachable(now) if self.witness else None
        return must_fence(fence_view, reachable, len(servers))

    def _pulse_writer(self) -> None:
        assert self.directory_channel is not None and self.cfg.directory_channel is not None
        store = Store(
            Providers(self.cfg.directory.uris, self.cfg.directory.credentials, timeout=1.0),
            self.cfg.directory.suffix,
            base=self.cfg.directory.base,
            pulse_base=self.cfg.directory.pulse_suffix,
            op_deadline=2.0,
        )
        interval = self.cfg.directory_channel.interval
        try:
            while not self._stop.wait(interval):
                try:
                    store.write_pulse(self.me, self.directory_channel.next_pulse())
                except NdsclustError as e:
                    log.debug("event=pulse_failed server=%s error=%s", self.me, e)
        finally:
            store.close()

    def _recorder(self) -> None:
        while True:
            rec = self._records.get()
            if rec is None:
                return
            if rec.notify:
                self._notify(rec)
                continue
            try:
                self.store.record_event(
                    rec.kind.value,
                    server=self.me,
                    tag=None if rec.tag == "-" else rec.tag,
                    text=rec.text,
                )
            except NdsclustError as e:
                log_event(
                    logging.WARNING,
                    "event_not_recorded",
                    tag=rec.tag,
                    server=self.me,
                    kind=rec.kind.value,
                    error=str(e),
                )

    def _notify(self, rec: _Record) -> None:
        cmd = self.cfg.notify_command
        if not cmd:
            return
        env = {
            "PATH": os.defpath,
            "NDSCLUST_EVENT": rec.kind.value,
            "NDSCLUST_TAG": rec.tag,
            "NDSCLUST_SERVER": self.me,
            "NDSCLUST_TEXT": rec.text,
        }
        try:
            done = subprocess.run(
                list(cmd),
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=NOTIFY_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                log_event(
                    logging.WARNING,
                    "notify_failed",
                    tag=rec.tag,
                    server=self.me,
                    code=done.returncode,
                    stderr=done.stderr.decode(errors="replace").strip()[:200],
                )
        except (OSError, subprocess.TimeoutExpired) as e:
            log_event(logging.WARNING, "notify_failed", tag=rec.tag, server=self.me, error=str(e))

    def _replication_check(self) -> None:
        """FIG. 6 step 614: run nothing until the local provider has caught up."""
        d = self.cfg.directory
        if not d.local_uri:
            self._caught_up.set()
            return
        last_reason = ""
        while not self._stop.is_set():
            ok, why = caught_up(d.local_uri, list(d.uris), d.credentials, [d.suffix])
            if ok:
                self._caught_up.set()
                log_event(logging.INFO, "replication_caught_up", server=self.me)
                return
            if why != last_reason:
                log_event(logging.WARNING, "replication_pending", server=self.me, why=why)
                last_reason = why
            self._stop.wait(REPLICATION_CHECK_INTERVAL)


def _is_rejoin_of(attrs: Mapping[str, Sequence[str]], me: ServerName) -> bool:
    """Whether an entry from the watch is a rejoin event written by server ``me``."""
    low = {k.lower(): v for k, v in attrs.items()}
    return tuple(low.get("ndsclusteventkind", ())) == (EventKind.REJOIN.value,) and tuple(
        low.get("ndsclusteventserver", ())
    ) == (me,)

"""The sentinel's imperative shell: gather a View, call ``decide``, carry out the actions.

``Sentinel`` is the main loop and the wiring of the shell's small named parts, each in its
own module with its collaborators typed by ``Protocol``:

- executor (``executor.py``): carries out ``decide``'s actions, one ``match`` case each;
- keeper (``keeper.py``): lease renewal and self-fencing, on its own thread;
- recorder (``recorder.py``): events to ``ou=events`` and the notifier, off the loop;
- replication check (``catchup.py``): at start, until the local provider has caught up
  (FIG. 6 step 614);
- rejoin runner (``rejoin_runner.py``): the rejoin's steps (``rejoin.py``);
- local programs (``programs.py``): the supervisor, its lease guard and the control
  socket behind one lock;
- pulse writer (``pulse.py``): the directory channel's pulse, through its own connection.

``build.build_sentinel(config)`` makes the connections, watches, channels and supervisor.

The main loop (``run``) blocks on the watch's queue for at most ``loop_interval`` (a change
wakes it at once unless it decided less than an interval ago), folds what arrived into the
cache, updates the ``View`` (``gather.py``), decides for what changed or came due
(``ondemand.py``: exactly what ``decide`` gives on the whole view) and hands the actions
to the executor, which does not hold the loop up. Its directory writes may block while the store fails over to
another provider; nothing safety-critical waits for them. The two watches and the
channels run their own threads; the control socket (``control.py``) serves cluster-aware
programs on its own threads.

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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from ndsclust.config import KILL_ALLOWANCE, Config
from ndsclust.errors import ConfigError
from ndsclust.ldapstore.replication import caught_up
from ndsclust.ldapstore.store import APP_ATTRS
from ndsclust.ldapstore.watch import Changed, Deleted, Reconnected, RefreshDone, WatchEvent
from ndsclust.model import App, SentinelState, ServerName, Tag
from ndsclust.sentinel.actions import Action, EventKind
from ndsclust.sentinel.catchup import ReplicationCheck
from ndsclust.sentinel.channel_report import ChannelReport
from ndsclust.sentinel.detector import Detector, Liveness, heard_since
from ndsclust.sentinel.executor import Executor
from ndsclust.sentinel.gather import Flags, Gather
from ndsclust.sentinel.http_status import Publisher
from ndsclust.sentinel.keeper import Fence, Keeper, fence_channels
from ndsclust.sentinel.logline import log_event
from ndsclust.sentinel.ondemand import Decisions, Marks
from ndsclust.sentinel.programs import LocalPrograms
from ndsclust.sentinel.pulse import pulse_writer
from ndsclust.sentinel.recorder import Recorder
from ndsclust.sentinel.rejoin import Rejoin
from ndsclust.sentinel.rejoin_runner import RejoinRunner, is_rejoin_of
from ndsclust.sentinel.serverwatch import ServerWatch
from ndsclust.sentinel.view import Policy, View
from ndsclust.sentinel.write_provider import WriteProvider
from ndsclust.sentinel.writers import Writers

if TYPE_CHECKING:
    from ndsclust.sentinel.build import Parts

__all__ = ["HANDOFF_DEADLINE_EXTRA", "Sentinel", "log_event", "policy_of"]

# The keeper stops renewing leases when the main loop has not finished a cycle for this long:
# longer than a store failover (its operation deadline), so a provider dying does not kill
# programs, short enough that a wedged sentinel does not keep them forever.
HANG_LIMIT = 30.0
REPLICATION_CHECK_INTERVAL = 0.5
# A sentinel stopped with SIGTERM hands its programs on; it gives up waiting after this.
HANDOFF_DEADLINE_EXTRA = 10.0
# Actions that stand (a write that failed) are carried out again after this long, and the
# health commands looked at this often.
RECHECK_INTERVAL = 1.0
# Seconds a rejoin waits for its barrier event to come back before it writes another.
BARRIER_RETRY = 5.0
# How long a rejoin's view check waits for one provider's contextCSN.
VIEW_PROBE_TIMEOUT = 1.0
# Connections that carry out independent applications' actions side by side.
WRITERS = 8


def policy_of(cfg: Config) -> Policy:
    """The decision core's tunables from the supervision section of the configuration."""
    sv = cfg.supervision
    return Policy(
        max_restarts=sv.max_restarts,
        restart_window=sv.restart_window,
        flap_max_failovers=sv.flap_max_failovers,
        flap_window=sv.flap_window,
        start_hold=cfg.timeouts.failover,
    )


class Sentinel:
    """One server's sentinel. ``run()`` blocks until ``stop()``; see the module docstring."""

    def __init__(
        self,
        parts: Parts,
        *,
        clock: Callable[[], float] = time.monotonic,
        ready: Callable[[], None] | None = None,
    ) -> None:
        cfg = parts.cfg
        self.cfg = cfg
        self.me = cfg.server
        self.clock = clock
        self.parts = parts
        self._ready_hook = ready
        self.providers = parts.providers
        self.store = parts.store_for()
        self.cache = parts.cache
        self.watch = parts.watch
        self.pulse_watch = parts.pulse_watch
        self.channels = parts.channels
        self.control = parts.control
        self.policy = policy_of(cfg)
        self._stop = threading.Event()
        # Set once the programs are gone: the keeper (leases, fencing) and the pulse go on
        # through the hand-over of a stop, which a lapsed lease would cut short.
        self._gone = threading.Event()
        self._leaving = False
        self._registering = True
        self._refreshed = False
        started = clock()
        self._progress = started
        # A peer's claim decided while this server was down may still be on its way: for one
        # failover timeout after start, as after a rejoin, no program is started here.
        self._hold_starts_until = started + cfg.timeouts.failover
        timeouts = {name: ch.timeout for name, ch in self.channels.items()}
        self.detector = Detector(timeouts, self.me, started, cfg.timeouts.startup_grace)
        self._since: Mapping[ServerName, float] = {}  # Liveness.since of the last cycle
        fence_detect = cfg.timeouts.fence - KILL_ALLOWANCE
        fence_detector = Detector(
            {n: fence_detect for n in fence_channels(list(self.channels))},
            self.me,
            started,
            cfg.timeouts.startup_grace,
        )
        self.fence = Fence(fence_detector, self.channels, parts.lan, parts.witness)
        # A cycle or keeper round later than this means this process was not running: the
        # smallest silence after which a channel, or the fence detector, would call a peer
        # dead (see "Coming back" above).
        self._stall_limit = min([fence_detect, *timeouts.values()])
        self.programs = LocalPrograms(
            self.me,
            parts.supervisor,
            self.control,
            programs=lambda: self.cfg.programs,
            supervision=lambda: self.cfg.supervision,
            stop_grace=cfg.timeouts.stop_grace,
        )
        self.recorder = Recorder(self.me, self.store, lambda: self.cfg.notify_command)
        # What this sentinel hears of its peers, published on its pulse entry; server events.
        self.serverwatch = ServerWatch(
            self.me, list(self.channels), self.recorder, pulses=parts.directory_channel
        )
        self._servers: list[ServerName] = []
        self._servers_of: object = None
        self.gather = Gather(self.me, self.cache, lambda: self.cfg.resources)
        self.decisions = Decisions()
        self._marks = Marks(everything=True)  # what changed since the last decision
        self._before: Mapping[Tag, App] | None = None  # the applications it decided on
        self._heard: Liveness | None = None
        self._rejoin_wanted = threading.Event()  # the keeper asks the loop to rejoin ...
        self._rejoin_why = ""  # ... for this reason
        self.keeper = Keeper(
            self.me,
            fence=self.fence,
            leases=self.programs,
            records=self.recorder,
            clock=clock,
            interval=cfg.timeouts.loop_interval,
            stall_limit=self._stall_limit,
            hang_limit=HANG_LIMIT,
            progress=lambda: self._progress,
            servers=lambda: self._servers,
            ask_rejoin=self._ask_rejoin,
            stop=self._gone,
        )
        d = cfg.directory
        local = d.local_uri
        self.replication = ReplicationCheck(
            self.me,
            None
            if not local
            else lambda: caught_up(local, list(d.uris), d.credentials, [d.suffix]),
            self._stop,
            REPLICATION_CHECK_INTERVAL,
        )
        self._threads: list[threading.Thread] = []
        self.writers = Writers(WRITERS, parts.store_for)
        self.rejoin = RejoinRunner(
            self.me,
            Rejoin(barrier_retry=BARRIER_RETRY, recheck=REPLICATION_CHECK_INTERVAL),
            providers=self.providers,
            probe=lambda uri, peers, *, required, quorum: caught_up(
                uri,
                peers,
                d.credentials,
                [d.suffix],
                required=required,
                quorum=quorum,
                timeout=VIEW_PROBE_TIMEOUT,
            ),
            write_barrier=lambda text: (
                self.writers.store()
                .record_event(EventKind.REJOIN.value, server=self.me, text=text)
                .dn
            ),
            watch_provider=lambda: self.watch.provider,
            submit=self.writers.pool.submit,
            clock=clock,
            on_rejoined=self._rejoined,
            grace=cfg.timeouts.failover,
        )
        self.executor = Executor(
            self.me,
            writer=self.writers.store,
            cache=self.cache,
            programs=self.programs,
            records=self.recorder,
            heard_now=self._heard_now,
            policy=lambda: self.policy,
            post_read=APP_ATTRS,
            pool=self.writers.pool,
        )
        self.write_provider = WriteProvider(self.me, self.providers)
        self._peers_version = -1
        self._finished = -1
        self._said_at = -1
        self._health_due = 0.0
        self.channel_report = ChannelReport(self.me, self.channels)
        self._last_decide = 0.0
        self._woken_by: WatchEvent | None = None
        self._was_paused = False
        self.cycles = 0
        self._view: View | None = None
        # The HTTP face (httpd.py) reads what the loop publishes after each cycle.
        stale = max(5.0, 20 * cfg.timeouts.loop_interval)
        self.status = Publisher(
            self.me, cfg.http, self.channels, self.watch, started=started, stale_after=stale
        )

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=f"sentinel-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    # -- run / stop -----------------------------------------------------------------------

    def run(self) -> int:
        """Run until ``stop()``; returns the process exit status."""
        witness = self.parts.witness
        log_event(
            logging.INFO,
            "sentinel_start",
            server=self.me,
            pid=os.getpid(),
            channels=",".join(self.channels) or "-",
            witness=self.cfg.witness.address if self.cfg.witness else "-",
        )
        if not self.status.start():
            return 2
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
        if witness:
            witness.start()
        self.watch.start()
        self.pulse_watch.start()
        self._spawn("keeper", self.keeper.run)
        self.recorder.start()
        pulse = pulse_writer(self.parts, lambda: self.serverwatch.report, self._gone)
        if pulse is not None:
            self._spawn("pulse", pulse)
        self._spawn("replication", self.replication.run)
        if self.parts.sweeper is not None:
            self.parts.sweeper.start()
        leave_deadline: float | None = None
        try:
            while True:
                now = self.clock()
                if self._stop.is_set() and not self._leaving:
                    self._leaving = True
                    self.serverwatch.sentinel = SentinelState.STOPPING
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
                decided = self.cycles
                self.cycle(now)
                self._progress = self.clock()
                self._publish(now, self._progress - now if self.cycles != decided else None)
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
        """Block on the watch for at most ``timeout``. A change wakes the loop at once when
        it has not decided for a whole interval; otherwise the loop waits out the interval,
        so a flood of changes (a mass takeover echoing a thousand writes) costs one
        decision per interval, not one per change."""
        start = self.clock()
        if self._woken_by is None:
            self._woken_by = self.watch.get(timeout)
        if self._woken_by is not None:
            rest = min(self._last_decide, start) + timeout - self.clock()
            if rest > 0:
                self._stop.wait(rest)

    def _nothing_left(self) -> bool:
        if any(p.state.value != "exited" for p in self.programs.table().values()):
            return False
        snap = self.cache.snapshot()
        return not any(a.host == self.me for a in snap.apps.values()) or not self._refreshed

    def _publish(self, now: float, took: float | None) -> None:
        self.status.publish(
            now,
            view=self._view if self._refreshed else None,
            took=took,
            fenced=self._view.fenced if self._view else self.keeper.fenced.is_set(),
            rejoin_pending=self.rejoin.pending,
            rejoin_grace=self.rejoin.in_grace(now),
            leaving=self._leaving,
            write_provider=self.write_provider.uri,
        )

    def _shutdown(self) -> None:
        if self.parts.sweeper is not None:
            self.parts.sweeper.stop()
        self.status.stop()
        self.programs.close()
        # Its programs are gone: the last pulse tells the peers this sentinel stopped.
        if self.serverwatch.report is not None:
            self.serverwatch.report = replace(
                self.serverwatch.report, sentinel=SentinelState.STOPPED
            )
        self._gone.set()
        if self.control:
            self.control.stop()
        self._stop.set()
        self.recorder.stop()
        self.writers.close()
        self.watch.stop()
        self.pulse_watch.stop()
        for ch in self.channels.values():
            ch.stop()
        if self.parts.witness:
            self.parts.witness.stop()
        self.providers.close()
        self.parts.read_providers.close()
        for t in self._threads:
            t.join(timeout=5)
        self.store.close()
        log_event(logging.INFO, "sentinel_stop", server=self.me)

    # -- one cycle --------------------------------------------------------------------------

    def _watch_events(self) -> list[WatchEvent]:
        first, self._woken_by = self._woken_by, None
        out = [first] if first is not None else []
        while (ev := self.watch.get(0)) is not None:
            out.append(ev)
        return out

    def _drain_watches(self, now: float) -> None:
        for ev in self._watch_events():
            if isinstance(ev, Changed):
                self.cache.put(ev.entry.uuid, ev.entry.dn, ev.entry.attributes)
                if self.rejoin.pending and is_rejoin_of(ev.entry.attributes, self.me):
                    self.rejoin.echo(ev.entry.dn)
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
            elif isinstance(ev, Reconnected):
                self._poke("provider_restart")
        while (pulse := self.pulse_watch.get(0)) is not None:
            if isinstance(pulse, Changed):
                self.serverwatch.pulse_entry(pulse.entry.dn, pulse.entry.attributes, now)

    def _observations(self) -> dict[str, Mapping[ServerName, float]]:
        now = self.clock()
        return {name: ch.observe(now) for name, ch in self.channels.items()}

    def view(self, now: float) -> View:
        """This cycle's view (kept and updated by ``gather.py``); what changed since the
        last decision accumulates for the next one."""
        stopping = self.serverwatch.stopping()
        servers = self.gather.servers(self._leaving, stopping)
        lan = self.parts.lan
        if lan and self.cache.version != self._peers_version:
            self._peers_version = self.cache.version
            lan.set_peers({s.name: s.addresses for s in servers.values() if s.name != self.me})
        if servers is not self._servers_of:
            self._servers_of, self._servers = servers, list(servers)
        observations = self._observations()
        # What the channels hear is one liveness for the server watch and the view alike;
        # only a degraded channel (counted as hearing every peer here) makes them differ.
        self._heard = heard = self.detector.liveness(observations, now, self._servers)
        blind = self._blind()
        liveness = (
            self.detector.liveness(observations, now, self._servers, blind=blind)
            if blind
            else heard
        )
        # FIG. 8: how long each peer has been heard without a break (failback.target_held).
        liveness = heard_since(liveness, self._since, now)
        self._since = liveness.since
        self.write_provider.follow(liveness)
        grace = self.rejoin.in_grace(now)
        if grace:
            # Just out of fencing: a peer not heard since may be a live host; count every
            # peer alive until a full failover timeout has passed (as at start-up).
            liveness = replace(liveness, grace=frozenset(s for s in servers if s != self.me))
        finished = self.executor.finished
        said = None
        if finished != self._said_at:
            self._said_at, said = finished, dict(self.executor.said)
        flags = Flags(
            replication_caught_up=self.replication.done.is_set(),
            fenced=self.keeper.fenced.is_set() or self.fence.cut_off(now, self._servers),
            registering=self._registering,
            starts_held=grace or now < self._hold_starts_until,
            leaving=self._leaving,
            stopping=stopping,
            # a peer past its start hold: a hand-over held for it goes now
            settled=liveness.settled(now, self.policy.start_hold),
        )
        view, marks = self.gather.update(
            now,
            liveness=liveness,
            procs=self.programs.table(),
            said=said,
            flags=flags,
            networks=self.serverwatch.networks,  # what the peers published (pulse.py)
        )
        self._marks = Marks(
            self._marks.tags | marks.tags, self._marks.everything or marks.everything
        )
        return view

    def cycle(self, now: float) -> list[Action]:
        """One decision cycle (the patroni-style run_cycle, with the decision made pure)."""
        self._drain_watches(now)
        self.programs.poll()
        if not self._refreshed:
            return []
        # The loop waits at most loop_interval between cycles (run() sets _progress after
        # each): waking much later means the whole process was stopped, not a slow cycle.
        gap = now - self._progress - self.cfg.timeouts.loop_interval
        if gap > self._stall_limit:
            self._begin_rejoin(now, f"this sentinel did not run for {gap:.1f}s")
        if self._rejoin_wanted.is_set():
            self._rejoin_wanted.clear()
            self._begin_rejoin(now, self._rejoin_why)
        view = self._view = self.view(now)
        if view.paused != self._was_paused:  # docs/operating.md, "Pause"
            self._was_paused = view.paused
            log_event(
                logging.WARNING if view.paused else logging.INFO,
                "paused" if view.paused else "resumed",
                server=self.me,
            )
        self._watch_servers(now, view)
        self.channel_report.tick(now)
        if self.rejoin.pending:
            self.rejoin.advance(now, view)
            if self.rejoin.pending:
                return []
        marks, finished = self._marks, self.executor.finished
        # Decide on change (ondemand.py): for what changed, what came due, and every
        # RECHECK_INTERVAL while some actions stand (a write that failed is tried again).
        if not (
            marks.tags
            or marks.everything
            or finished != self._finished
            or now >= self.decisions.next_due
            or (self.decisions.standing and now - self._last_decide >= RECHECK_INTERVAL)
        ):
            self._check_health(view, now, decided=False)
            return []
        self._marks, self._finished, self._last_decide = Marks(), finished, now
        actions = self.decisions.decide(view, self.me, now, self.policy, marks, self._before)
        self._before = view.apps
        if view.replication_caught_up:
            self._registering = False
        self.executor.run(actions, view, now)
        self._check_health(view, now, decided=True)
        self.cycles += 1
        return actions

    def _check_health(self, view: View, now: float, *, decided: bool) -> None:
        """Start the health commands that are due: after a decision, else once a second."""
        if decided or now >= self._health_due:
            self._health_due = now + RECHECK_INTERVAL
            self.programs.check_health(view.apps, view.procs, now)

    # -- liveness, write provider, rejoin -----------------------------------------------------

    def _watch_servers(self, now: float, view: View) -> None:
        """Publish what the channels hear (degraded ones counting as silent, unlike the
        view's liveness) and record server changes while this view can be trusted."""
        judging = not (view.fenced or self.rejoin.pending or self.rejoin.in_grace(now))
        if self._heard is not None:  # set by view()
            self.serverwatch.cycle(now, self._heard, view.servers, judging)

    def _heard_now(self, server: ServerName) -> bool:
        """Whether any channel hears ``server`` at this instant."""
        now = self.clock()
        liveness = self.detector.liveness(self._observations(), now, [server], blind=self._blind())
        return bool(liveness.channels(server))

    def _blind(self) -> frozenset[str]:
        """Channels that report themselves degraded: failing at this server's end."""
        return frozenset(n for n, ch in self.channels.items() if ch.stats().get("degraded"))

    def _ask_rejoin(self, why: str) -> None:
        """From the keeper: have the loop rejoin before its next decision."""
        self._rejoin_why = why
        self._rejoin_wanted.set()

    def _begin_rejoin(self, now: float, why: str) -> None:
        self._before = None  # decide everything again afterwards
        self.rejoin.begin(now, why)

    def _poke(self, why: str) -> None:  # anti-entropy: sweep soon (sentinel/antientropy.py)
        if self.parts.sweeper is not None:
            self.parts.sweeper.poke(why)

    def _rejoined(self) -> None:
        self._before = None
        self._poke("heal")
        log_event(
            logging.INFO,
            "rejoined",
            server=self.me,
            provider=self.watch.provider or "-",
            write_provider=self.write_provider.uri,
        )

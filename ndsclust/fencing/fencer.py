"""The fencing shell: fence records in the directory, agents run level by level, and the
gate the executor asks before it starts a program (docs/design.md section 4, "Fencing
other servers").

Fence records (``record.py``) are read and compare-and-swapped as typed values
(``FenceRecord``) through the store, which alone knows their entries
(``ndsclust/ldapstore/fence_records.py``). ``attempt`` takes the lock on a server's record,
runs its levels in order until one reports success, and writes the outcome: the one
procedure the sentinel and ``ndsclust fence`` share. ``Gate`` is what the sentinel's executor calls:

- ``claiming(host)`` before the swap of a takeover from ``host``: its record says a fence
  is owed (``plan.owe``), written first, so a sentinel that dies right after the swap
  leaves the debt in the directory; ``claim_failed`` takes it back when the swap did not
  happen;
- ``before_start(app)`` before a program starts here: when the record of any other server
  of the application is unsettled (``plan.blocks``), it fences that server (or waits for
  the server fencing it) and raises ``FencePending``, with the state to show when an
  attempt failed;
- ``cycle()`` every loop cycle: once per process, a record about this server is cleared
  (``plan.back_from_start``).

Attempts run on threads of their own, one per fenced server, never on the loop's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from ndsclust.errors import NdsclustError, StoreError, SwapConflict
from ndsclust.fencing import agent, plan
from ndsclust.fencing.config import Device, Fencing
from ndsclust.fencing.record import FenceState, Phase
from ndsclust.ldapstore.fence_records import FenceRecord
from ndsclust.model import App, AppState, ServerName, StateValue
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.logline import log_event
from ndsclust.sentinel.recorder import NO_TAG, Record

# How an agent is run: ``agent.run``; tests pass a fake.
AgentRun = Callable[[str, str, Mapping[str, str], float], agent.Result]


class FencePending(NdsclustError):
    """A start waits for a fence. ``state``: what the application's entry should show."""

    def __init__(self, why: str, state: StateValue | None = None) -> None:
        super().__init__(why)
        self.state = state


class FenceStore(Protocol):
    """The fence records of ``ldapstore.store.Store`` (``ldapstore/fence_records.py``)."""

    def fence_record(self, server: str) -> FenceRecord: ...

    def swap_fence_record(
        self, server: str, found: FenceRecord, new: FenceState, text: str | None = None
    ) -> FenceRecord: ...


class Records(Protocol):
    def put(self, record: Record) -> None: ...


def run_levels(
    by: str, server: str, devices: Sequence[Device], run: AgentRun | None = None
) -> list[agent.Result]:
    """Each level of ``server`` in order until one reports success; every call logged
    (``by``: who fences)."""
    call = run or agent.run
    results = []
    for i, d in enumerate(devices):
        r = call(d.agent, d.action, d.stdin_options(), d.timeout)
        log_event(
            logging.INFO if r.ok else logging.WARNING,
            "fence_agent",
            server=by,
            target=server,
            device=i + 1,
            agent=d.agent,
            action=d.action,
            code="-" if r.code is None else r.code,
            seconds=f"{r.seconds:.2f}",
            said=r.summary(),
        )
        results.append(r)
        if r.ok:
            break
    return results


def attempt(
    store: FenceStore,
    server: str,
    found: FenceRecord,
    by: str,
    devices: Sequence[Device],
    *,
    wall: Callable[[], float] = time.time,
    run: AgentRun | None = None,
) -> plan.Outcome | None:
    """Take the lock on ``server``'s record (as read in ``found``), run its levels, write
    the outcome. SwapConflict when another server took the lock first; None when the
    record changed while the agents ran (the outcome was not written)."""
    base = found.state or FenceState(Phase.OWED, by, wall())
    locked = store.swap_fence_record(server, found, base.moved(Phase.FENCING, by, wall()))
    assert locked.state is not None
    log_event(logging.WARNING, "fence_start", server=by, target=server, levels=len(devices))
    done = plan.outcome(server, run_levels(by, server, devices, run))
    attempts = locked.state.attempts + 1
    if done.confirmed:
        final = locked.state.moved(Phase.CONFIRMED, by, wall(), attempts=attempts, via=done.via)
    else:
        final = locked.state.moved(Phase.FAILED, by, wall(), attempts=attempts, via="")
    try:
        store.swap_fence_record(server, locked, final, done.text)
    except SwapConflict:
        # The record changed under the lock: the fenced server came back and cleared it
        # (plan.back_from_start), or an operator confirmed it off. Its word stands, and
        # this attempt's outcome is no longer news.
        log_event(logging.INFO, "fence_record_changed", server=by, target=server)
        return None
    return done


class Gate:
    """The executor's questions about fencing; see the module docstring."""

    def __init__(
        self,
        me: ServerName,
        settings: Fencing,
        *,
        store: Callable[[], FenceStore],
        heard_now: Callable[[ServerName], bool],
        records: Records,
        wall: Callable[[], float] = time.time,
        run: AgentRun | None = None,
    ) -> None:
        self.me = me
        self.settings = settings
        self._store = store
        self._heard_now = heard_now
        self._records = records
        self._wall = wall
        self._run = run
        self._lock = threading.Lock()
        self._running: set[ServerName] = set()
        self._failed: dict[ServerName, str] = {}  # last failure text, shown in states
        self._cleared = False
        self._clearing = False
        self.threads: list[threading.Thread] = []

    # -- a takeover ----------------------------------------------------------------------

    def claiming(self, host: ServerName) -> FenceRecord | None:
        """Before the swap of a takeover from ``host``: write that a fence is owed. Returns
        what it replaced (for ``claim_failed``), None when nothing was written."""
        if not self.settings.levels(host) and not self.settings.required:
            return None
        store = self._store()
        for _ in range(3):
            found = store.fence_record(host)
            new = plan.owe(found.state, self.me, self._wall())
            if new is None:
                return None
            try:
                store.swap_fence_record(host, found, new)
            except SwapConflict:
                continue
            log_event(logging.WARNING, "fence_owed", server=self.me, target=host)
            return found
        raise StoreError(f"fence record of {host} keeps changing; deciding again")

    def claim_failed(self, host: ServerName, before: FenceRecord) -> None:
        """The swap did not happen: put back what ``claiming`` replaced, unless the record
        moved on meanwhile (then it is someone else's)."""
        store = self._store()
        now = store.fence_record(host)
        if now.state is None or now.state.phase is not Phase.OWED or now.state.by != self.me:
            return
        if before.state is None:
            restore = FenceState(Phase.CLEAR, self.me, self._wall())
        else:
            restore = before.state
        try:
            store.swap_fence_record(host, now, restore)
        except SwapConflict:
            pass

    # -- a start -------------------------------------------------------------------------

    def before_start(self, app: App) -> None:
        """Raise FencePending unless every other server of ``app`` is settled."""
        if not self._cleared:
            raise FencePending(f"{self.me} has not yet cleared its own fence record")
        store = self._store()
        waits: list[str] = []
        failures: list[str] = []
        for peer in app.servers():
            if peer == self.me:
                continue
            found = store.fence_record(peer)
            if not plan.blocks(found.state):
                continue
            waiting, failure = self._advance(peer, found)
            waits.append(waiting)
            if failure:
                failures.append(failure)
        if not waits:
            return
        state = StateValue(AppState.FAILED, "; ".join(failures)) if failures else None
        raise FencePending("; ".join(waits), None if state == app.state else state)

    def _advance(self, peer: ServerName, found: FenceRecord) -> tuple[str, str]:
        """Fence ``peer`` now if it is this server's turn. Returns what the start waits
        for, and the failure the application's state shows ("" while none): stable from
        one attempt to the next, so the state is written once per attempt."""
        assert found.state is not None
        devices = self.settings.levels(peer)
        if not devices:
            why = (
                f"{peer} must be fenced and no fence device is configured for it: "
                f"once it is off, run: ndsclust fence --confirm-off {peer}"
            )
            return why, why
        by = found.state.by
        with self._lock:
            running = peer in self._running
            step = plan.next_step(
                found.state,
                self.me,
                self._wall(),
                running_here=running,
                holder_heard=self._holder_heard(by),
                longest=self.settings.longest(peer),
                retry=(self.settings.retry_min, self.settings.retry_max),
            )
            if step.take and not running:
                self._running.add(peer)
                t = threading.Thread(
                    target=self._attempt,
                    args=(peer, found),
                    name=f"sentinel-fence-{peer}",
                    daemon=True,
                )
                self._keep(t)
                t.start()
            last = self._failed.get(peer, "")
        if not last and found.state.phase is Phase.FAILED:
            last = found.text or f"fencing {peer} failed"
        failure = f"{last}; retried with a backoff" if last else ""
        return f"waiting for the fence of {peer} ({step.why})", failure

    def _keep(self, t: threading.Thread) -> None:
        """Remember ``t`` (tests join them); ended ones are let go. Under ``_lock``."""
        self.threads = [x for x in self.threads if x.is_alive()] + [t]

    def _holder_heard(self, by: str) -> bool:
        if by in ("", "?", self.me) or by.startswith("operator:"):
            return False
        try:
            return self._heard_now(ServerName(by))
        except NdsclustError:
            return False

    def _attempt(self, peer: ServerName, found: FenceRecord) -> None:
        try:
            done = attempt(
                self._store(),
                peer,
                found,
                self.me,
                self.settings.levels(peer),
                wall=self._wall,
                run=self._run,
            )
        except SwapConflict:
            return  # another server took the lock first: it fences, we wait
        except NdsclustError as e:
            log_event(logging.WARNING, "fence_error", server=self.me, target=peer, error=str(e))
            return
        finally:
            with self._lock:
                self._running.discard(peer)
        if done is None:
            return
        kind = EventKind.FENCE if done.confirmed else EventKind.FENCE_FAILED
        with self._lock:
            if done.confirmed:
                self._failed.pop(peer, None)
            else:
                self._failed[peer] = done.text
        log_event(
            logging.WARNING if done.confirmed else logging.ERROR,
            kind.value,
            server=self.me,
            target=peer,
            text=done.text,
        )
        self._records.put(Record(kind, NO_TAG, done.text))
        self._records.put(Record(kind, NO_TAG, done.text, notify=True))

    # -- this server ---------------------------------------------------------------------

    def cycle(self) -> None:
        """Once per process: clear a record about this server (``plan.back_from_start``),
        on a thread of its own; tried again each cycle until it succeeds."""
        with self._lock:
            if self._cleared or self._clearing:
                return
            self._clearing = True
        t = threading.Thread(target=self._clear_own, name="sentinel-fence-self", daemon=True)
        with self._lock:
            self._keep(t)
        t.start()

    def _clear_own(self) -> None:
        try:
            store = self._store()
            for _ in range(3):
                found = store.fence_record(self.me)
                new = plan.back_from_start(found.state, self.me, self._wall())
                if new is None:
                    break
                try:
                    store.swap_fence_record(self.me, found, new, f"{self.me} started again")
                except SwapConflict:
                    continue
                log_event(logging.INFO, "fence_cleared", server=self.me, was=found.raw or "-")
                break
            else:
                return
            with self._lock:
                self._cleared = True
        except NdsclustError as e:
            log_event(logging.WARNING, "fence_error", server=self.me, target=self.me, error=str(e))
        finally:
            with self._lock:
                self._clearing = False

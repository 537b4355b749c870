"""The executor: carries out what ``decide`` returns (its contract is in ``decide``).

Actions are grouped by application; groups are independent, so they run side by side on
the pool's connections to the write provider (a thousand applications failing over at once
is a thousand swaps, not a queue of them), and the loop does not wait for them. Within a
group the actions run in order, and a failed compare-and-swap (``SwapConflict``), a
withdrawn claim, a supervisor error or provider trouble drops the rest of the group: the
next view decides again (docs/style.md section 5). Each action is one ``match`` case; a
move (``Claim``, ``Release``) is one atomic modify with everything the core decided.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ndsclust.errors import StoreError, SupervisorError, SwapConflict, Withdrawn
from ndsclust.fencing.fencer import FencePending
from ndsclust.model import App, Request, ServerName, StateValue, Tag
from ndsclust.sentinel.actions import (
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
from ndsclust.sentinel.logline import log, log_event
from ndsclust.sentinel.procs import ProcInfo
from ndsclust.sentinel.recorder import Record
from ndsclust.sentinel.view import Policy, Said, View

Entry = Mapping[str, Sequence[Any]]
WARN_KINDS = frozenset({EventKind.FAILED, EventKind.ERROR, EventKind.RESOURCE_MISSING})


class AppWriter(Protocol):
    """One connection's writes of application entries (``ldapstore.store.Store``)."""

    def swap_app(
        self,
        tag: str,
        *,
        host: tuple[ServerName | None, ServerName | None] | None = None,
        consume: Request | None = None,
        state: StateValue | None = None,
        post_read: Sequence[str] | None = None,
        unless: Callable[[], str | None] | None = None,
    ) -> dict[str, list[Any]] | None: ...

    def set_state(
        self, tag: str, state: StateValue, *, post_read: Sequence[str] | None = None
    ) -> dict[str, list[Any]] | None: ...

    def app_entry(self, tag: str) -> tuple[str, str, Entry] | None: ...

    def app_dn(self, tag: str) -> str: ...

    def add_request(
        self, tag: str, request: Request, *, post_read: Sequence[str] | None = None
    ) -> dict[str, list[Any]] | None: ...


class LocalCache(Protocol):
    """Where the executor shows its own writes at once (``ClusterCache.put(local=True)``)."""

    def put(self, uuid: str, dn: str, attrs: Entry, *, local: bool = False) -> None: ...


class Programs(Protocol):
    def start(self, app: App, proc: ProcInfo | None, *, paused: bool) -> None: ...

    def unload(self, tag: Tag, reason: str) -> None: ...


class Records(Protocol):
    def put(self, record: Record) -> None: ...


class FenceGate(Protocol):
    """Fencing other servers before a takeover starts anything (``fencing.fencer.Gate``)."""

    def claiming(self, host: ServerName) -> object | None: ...

    def claim_failed(self, host: ServerName, before: Any) -> None: ...

    def before_start(self, app: App) -> None: ...

    def cycle(self) -> None: ...


class Pool(Protocol):
    """Where groups run (``concurrent.futures.ThreadPoolExecutor``)."""

    def submit(self, fn: Callable[..., None], /, *args: Any, **kwargs: Any) -> object: ...


class Executor:
    """Runs action lists; ``said`` holds when each standing condition was last recorded."""

    def __init__(
        self,
        me: ServerName,
        *,
        writer: Callable[[], AppWriter],
        cache: LocalCache,
        programs: Programs,
        records: Records,
        heard_now: Callable[[ServerName], bool],
        policy: Callable[[], Policy],
        post_read: Sequence[str],
        pool: Pool | None = None,
    ) -> None:
        self.me = me
        self.said: dict[Said, float] = {}
        self._writer = writer
        self._cache = cache
        self._programs = programs
        self._records = records
        self._heard_now = heard_now
        self._policy = policy
        self._post_read = list(post_read)
        self._pool = pool
        self._lock = threading.Lock()
        self._in_flight: set[Tag] = set()
        self._finished = 0
        self._store_errors: dict[Tag, str] = {}  # the provider trouble last logged, per tag
        self.fence_gate: FenceGate | None = None  # set by build.py when fencing is configured

    def run(self, actions: Sequence[Action], view: View, now: float) -> None:
        """Start every group; with a pool this returns at once, without waiting for them.

        At most one group per application is in flight: a group whose application still
        has one under way is dropped (decided again from a later view, once the earlier
        group's writes show in the cache). So the loop goes on reading program reports and
        writing what follows from them while a thousand claims are answered."""
        if self.fence_gate is not None:
            self.fence_gate.cycle()
        groups: dict[Tag, list[Action]] = {}
        for action in actions:
            groups.setdefault(action.tag, []).append(action)
        for tag, group in groups.items():
            if self._pool is None:
                self.run_group(group, view, now)
                continue
            with self._lock:
                if tag in self._in_flight:
                    continue
                self._in_flight.add(tag)
            self._pool.submit(self._run_tracked, tag, group, view, now)

    def heard_now(self, server: ServerName) -> bool:
        """Whether any channel hears ``server`` at this instant."""
        return self._heard_now(server)

    @property
    def finished(self) -> int:
        """Grows each time a group ends: the loop decides again after one did."""
        return self._finished

    def busy(self, tag: Tag) -> bool:
        with self._lock:
            return tag in self._in_flight

    def _run_tracked(self, tag: Tag, group: Sequence[Action], view: View, now: float) -> None:
        try:
            self.run_group(group, view, now)
        except Exception:  # a pool thread's exception would vanish with its future
            log.exception("event=executor_failed tag=%s server=%s", tag, self.me)
        finally:
            with self._lock:
                self._in_flight.discard(tag)
                self._finished += 1

    def run_group(self, group: Sequence[Action], view: View, now: float) -> None:
        tag = group[0].tag
        error = self._run_group(tag, group, view, now)
        self._store_error(tag, error)

    def _store_error(self, tag: Tag, error: str | None) -> None:
        """Provider trouble is logged when it begins or changes, and once when it clears:
        a write that keeps failing is decided again every cycle, not logged every cycle."""
        with self._lock:
            was = self._store_errors.get(tag)
            if error == was:
                return
            if error is None:
                del self._store_errors[tag]
            else:
                self._store_errors[tag] = error
        if error is not None:
            log_event(logging.WARNING, "store_error", tag=tag, server=self.me, error=error)
        else:
            log_event(logging.INFO, "store_error_cleared", tag=tag, server=self.me, was=was)

    def _run_group(self, tag: Tag, group: Sequence[Action], view: View, now: float) -> str | None:
        """The group's actions in order; returns the provider trouble that ended it."""
        for action in group:
            try:
                self.do(action, view, now)
            except Withdrawn as e:
                log_event(logging.INFO, "claim_withdrawn", tag=tag, server=self.me, why=e.why)
                return None
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
                return None
            except SupervisorError as e:
                self._supervisor_error(tag, str(e), now)
                return None
            except FencePending as e:
                # No start before another server is fenced (docs/design.md section 4).
                if e.state is not None:
                    self._seen(
                        tag, self._writer().set_state(tag, e.state, post_read=self._post_read)
                    )
                return None
            except StoreError as e:
                # Provider trouble: leave the group; nothing in a group is unsafe to leave.
                return str(e)
        return None

    def do(self, action: Action, view: View, now: float) -> None:
        match action:
            case Claim(tag, host, reason, state, consumes):
                # Decided while the host was silent: if it is heard again by the time the
                # swap leaves (a connect held up by a provider change or a partition), the
                # claim is withdrawn, so a claim never lands long after its host came back.
                unless = None
                if host is not None and host != self.me:
                    silent = host

                    def unless() -> str | None:
                        return "the host is heard again" if self._heard_now(silent) else None

                self._move(tag, host, self.me, consumes, state, unless)
                log_event(
                    logging.INFO,
                    "claim",
                    tag=tag,
                    server=self.me,
                    **{"from": host or "-"},
                    state=str(state),
                    reason=reason,
                )
            case Release(tag, to, host, reason, state, consumes):
                self._move(tag, host, to, consumes, state)
                log_event(
                    logging.INFO,
                    "release",
                    tag=tag,
                    server=self.me,
                    to=to or "-",
                    state=str(state),
                    reason=reason,
                )
            case ConsumeRequest(tag, request, state):
                self._swap(tag, None, request, state)
                log_event(
                    logging.INFO, "request_done", tag=tag, server=self.me, request=str(request)
                )
            case SetState(tag, value):
                self._seen(tag, self._writer().set_state(tag, value, post_read=self._post_read))
            case Load(tag) | Restart(tag):
                app = _app(view, tag)
                if self.fence_gate is not None:
                    self.fence_gate.before_start(app)
                self._programs.start(app, view.procs.get(tag), paused=False)
            case LoadPaused(tag):
                self._programs.start(_app(view, tag), view.procs.get(tag), paused=True)
            case Unload(tag, reason):
                self._programs.unload(tag, reason)
            case RecordEvent(kind, tag, text):
                self.said[(tag, kind, text)] = now
                text = requester_noted(text, view.apps.get(tag))
                level = logging.WARNING if kind in WARN_KINDS else logging.INFO
                log_event(level, kind.value, tag=tag, server=self.me, text=text)
                self._records.put(Record(kind, tag, text))
            case Notify(kind, tag, text):
                self._records.put(Record(kind, tag, text, notify=True))
            case ForwardRequest(tag, to, request):
                # Stacks (ndsclust/sentinel/stacks.py): the root's request first, so a
                # request is never lost between the two writes; a repeat finds it there.
                self._seen(to, self._writer().add_request(to, request, post_read=self._post_read))
                self._swap(tag, None, request, None)

    def _move(
        self,
        tag: Tag,
        host: ServerName | None,
        to: ServerName | None,
        consume: Request | None,
        state: StateValue | None,
        unless: Callable[[], str | None] | None = None,
    ) -> None:
        """The host swap of a move. One that takes the application from another server
        (a takeover, a dead host's unload) first records that server's fence as owed, when
        fencing is configured (docs/design.md section 4, "Fencing other servers"); a swap
        that does not happen takes the debt back."""
        gate = self.fence_gate
        owed = None
        if gate is not None and host is not None and host != self.me:
            owed = gate.claiming(host)
        try:
            self._swap(tag, (host, to), consume, state, unless)
        except (SwapConflict, Withdrawn):
            if gate is not None and host is not None and owed is not None:
                gate.claim_failed(host, owed)
            raise

    def _swap(
        self,
        tag: Tag,
        host: tuple[ServerName | None, ServerName | None] | None,
        consume: Request | None,
        state: StateValue | None,
        unless: Callable[[], str | None] | None = None,
    ) -> None:
        entry = self._writer().swap_app(
            tag, host=host, consume=consume, state=state, post_read=self._post_read, unless=unless
        )
        self._seen(tag, entry)

    def _supervisor_error(self, tag: Tag, error: str, now: float) -> None:
        said = (tag, EventKind.ERROR, error)
        if now - self.said.get(said, -1e18) < self._policy().repeat_after:
            return
        self.said[said] = now
        log_event(logging.ERROR, "supervisor_error", tag=tag, server=self.me, error=error)
        self._records.put(Record(EventKind.ERROR, tag, error))
        self._records.put(Record(EventKind.ERROR, tag, error, notify=True))

    def _seen(self, tag: Tag, entry: Entry | None) -> None:
        """Show our own write in the cache at once: the entry as the modify left it
        (post-read control, with its entryUUID and entryCSN), else read it back."""
        uuid = _first(entry, "entryUUID") if entry else None
        if entry and uuid:
            self._cache.put(uuid, self._writer().app_dn(tag), entry, local=True)
        else:
            self._read_back(tag)

    def _read_back(self, tag: Tag) -> None:
        """Put the entry as the write provider has it now into the cache (see cache.py)."""
        found = self._writer().app_entry(tag)
        if found is not None:
            uuid, dn, attrs = found
            self._cache.put(uuid, dn, attrs, local=True)


def _first(entry: Entry, name: str) -> str | None:
    values = entry.get(name)
    if not values:
        return None
    raw = values[0]
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _app(view: View, tag: Tag) -> App:
    app = view.apps.get(tag)
    if app is None:
        raise SupervisorError(f"application {tag} is no longer in the directory")
    return app


def requester_noted(text: str, app: App | None) -> str:
    """An event about a pending request names who wrote it (the entry's modifiersName):
    the audit trail holds the bind identity, whether the CLI or ldapmodify wrote it."""
    if app is None or app.request is None or not app.requested_by:
        return text
    return f"{text} (request {app.request} by {app.requested_by})"

"""The change watch: RFC 4533 refreshAndPersist over ldap3, resumed by cookie on failover.

A ``Watch`` follows one subtree of the directory (the cluster base, or the pulse database)
and hands the consumer typed events: ``Changed`` (an entry added or modified, with all its
attributes), ``Deleted`` (by entryUUID), ``RefreshDone`` (the consumer now holds a complete
view) and ``Reconnected``. The sentinel folds them into its snapshot and sees peers' pulses
through them (patent claim 44).

Three threads take part. ldap3's receiver thread decodes each message and calls our hook,
which updates the ``SyncSession`` (pure RFC 4533 consumer state) and puts events on a
queue; it never blocks. The supervisor thread connects, watches the connection and
reconnects. The consumer calls ``get()``.

What ldap3 does not do for us (docs/platform.md facts 12 and 13):

- It hands RFC 4533 messages over only through its per-message hook
  ``strategy.accumulate_stream``, and keeps every message of a search in memory unless
  the hook removes it: the hook pops each sync message from ``strategy._responses``.
- A stream connection whose provider dies reports nothing: its receiver thread just ends.
  The supervisor checks that thread and ``connection.closed`` every ``POLL`` seconds.
- A frozen (SIGSTOPped) or black-holed provider keeps the TCP connection open and the
  kernel still answers TCP keepalives, so only the provider itself can prove it is alive:
  after ``keepalive`` seconds without any message the supervisor sends a WhoAmI extended
  request; after ``2 * keepalive`` seconds without any message the provider is declared
  dead. Time this process itself did not run (the supervisor woke up more than
  ``keepalive`` late) does not count as the provider's silence. Bound: a frozen provider is left at most ``2 * keepalive + POLL`` seconds after its
  last message (4.05 s with the default 2 s).
- ``open_connection`` leaves the socket's connect timeout in place, and ldap3's receiver
  treats a receive timeout on a stream connection as the end of the connection: an idle
  watch would drop every few seconds. The watch makes the socket blocking; the keepalive
  above replaces the timeout.

Resuming: each event carries the cookie that was current when it was received, and
``Watch.cookie`` is the cookie of the last event the consumer took out, so a consumer that
saves it after applying a batch replays, never loses (docs/style.md section 8). Reconnections
within the watch resume from the last cookie received; a provider that answers
e-syncRefreshRequired gets a new search without a cookie.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import ldap3
from ldap3.core.exceptions import LDAPException

from ndsclust.errors import NdsclustError, StoreError
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.syncproto import (
    E_SYNC_REFRESH_REQUIRED,
    SYNC_DONE_OID,
    SYNC_INFO_OID,
    SYNC_STATE_OID,
    SyncProtocolError,
    decode_sync_done,
    decode_sync_info,
    decode_sync_state,
    parse_openldap_cookie,
    sync_request_control,
)
from ndsclust.ldapstore.syncsession import (
    Changed,
    ChangeKind,
    Deleted,
    Emitted,
    Reconnected,
    RefreshDone,
    SyncEntry,
    SyncSession,
    WatchEvent,
    WatchStats,
)
from ndsclust.logfmt import line as logline

# The events and the consumer state live in syncsession.py; importing them from here works.
__all__ = [
    "ChangeKind",
    "Changed",
    "Deleted",
    "Reconnected",
    "RefreshDone",
    "SyncEntry",
    "SyncSession",
    "Watch",
    "WatchEvent",
    "WatchStats",
]

log = logging.getLogger("ndsclust.ldapstore.watch")

POLL = 0.05  # supervisor tick, seconds
WHOAMI_OID = "1.3.6.1.4.1.4203.1.11.3"  # RFC 4532: the cheapest request slapd answers
RECEIVER_JOIN = 1.0  # seconds to wait for ldap3's thread to end
_SYNC_MESSAGES = frozenset(
    {"searchResEntry", "searchResRef", "intermediateResponse", "searchResDone"}
)


# ---- the watch -----------------------------------------------------------------------


class _End(Enum):
    STOPPED = "stopped"
    LOST = "lost"  # connection gone or provider silent: reconnect elsewhere
    FAILED = "failed"  # the provider ended the search: back off, then reconnect


@dataclass(frozen=True, slots=True)
class _Done:
    result: int
    description: str
    message: str


class Watch:
    """Follow ``base`` on the providers of ``providers``; see the module docstring.

    The event queue is unbounded so that ldap3's receiver never waits on the consumer
    (a stalled receiver would look like a silent provider): take events out promptly.
    """

    def __init__(
        self,
        providers: Providers,
        base: str,
        *,
        filter: str = "(objectClass=*)",
        attributes: Sequence[str] = ("*", "+"),
        prefer: int = 0,
        cookie: bytes | None = None,
        known: Mapping[str, str | None] | None = None,
        keepalive: float = 2.0,
        name: str = "watch",
        notify: Callable[[], None] | None = None,
    ) -> None:
        """``cookie`` and ``known`` (entryUUID -> DN of what the consumer already holds)
        resume from a saved state; ``known`` lets a full refresh report what vanished.
        ``notify`` is called, from the watch's threads and without blocking, whenever an
        event is queued: a consumer of several watches waits for it instead of polling."""
        if keepalive <= 0:
            raise ValueError(f"keepalive must be positive, not {keepalive}")
        if not 0 <= prefer < len(providers.uris):
            raise ValueError(
                f"prefer={prefer} is not an index of the {len(providers.uris)} provider URIs"
            )
        if cookie is not None:
            try:
                parse_openldap_cookie(cookie)
            except SyncProtocolError as e:
                log.warning(
                    logline(
                        "watch_cookie_invalid", watch=name, reason=str(e), action="full_refresh"
                    )
                )
                cookie = None
        self._providers = providers
        self._base = base
        self._filter = filter
        self._attributes = list(attributes)
        self._prefer = prefer
        self._keepalive = keepalive
        self._name = name
        self._notify = notify
        self._queue: queue.Queue[Emitted] = queue.Queue()
        self._lock = threading.Lock()
        self._session = SyncSession(cookie, known)
        self._taken = cookie
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._provider: str | None = None
        self._entries = 0
        self._reconnects = 0
        self._full_refreshes = 0
        # Per connection, written by ldap3's receiver thread under _lock.
        self._generation = 0
        self._heard = 0.0
        self._done: _Done | None = None
        self._answered: list[int] = []
        self._refreshed = False

    # -- consumer side ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise StoreError(f"watch {self._name} was already started")
        self._thread = threading.Thread(
            target=self._run, name=f"{self._name}-supervisor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 25.0) -> None:
        """Close the connection and end every thread the watch started. Returns within
        about 0.1 s, unless a connection attempt is waiting for a frozen provider's bind
        answer (ldap3 waits up to 20 s for it); idempotent."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(logline("watch_stop_slow", watch=self._name, waited_s=f"{timeout:.1f}"))

    def __enter__(self) -> Watch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, timeout: float) -> WatchEvent | None:
        """The next event, or None when none arrives within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event, cookie = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            with self._lock:
                self._taken = cookie
            if event is not None:
                return event

    def events(self, timeout: float) -> Iterator[WatchEvent]:
        """Yield events until none arrives for ``timeout`` seconds."""
        while (event := self.get(timeout)) is not None:
            yield event

    @property
    def cookie(self) -> bytes | None:
        """Cookie of the last event taken out: resuming from it replays, never loses."""
        with self._lock:
            return self._taken

    @property
    def known(self) -> Mapping[str, str | None]:
        """entryUUID -> DN of every entry delivered so far and not deleted."""
        with self._lock:
            return dict(self._session.known)

    @property
    def provider(self) -> str | None:
        """URI of the provider followed now; None while (re)connecting."""
        return self._provider

    @property
    def heard(self) -> float:
        """Monotonic time the watch last heard its provider (a message or a keepalive's
        answer); 0.0 before the first connection. What ``/metrics`` shows as watch lag."""
        return self._heard

    @property
    def stats(self) -> WatchStats:
        with self._lock:
            return WatchStats(self._entries, self._reconnects, self._full_refreshes)

    # -- receiver side (ldap3's thread) -------------------------------------------------

    def _on_message(
        self, generation: int, conn: ldap3.Connection, message_id: int, response: dict[str, object]
    ) -> None:
        kind = response.get("type")
        if kind in _SYNC_MESSAGES:
            # ldap3 appended it to strategy._responses for a get_response() that a
            # persistent search never makes: drop it, or memory grows with every change.
            with conn.strategy.async_lock:
                conn.strategy._responses.pop(message_id, None)
        now = time.monotonic()
        with self._lock:
            if generation != self._generation:
                return
            self._heard = now
            try:
                if kind == "extendedResp":
                    self._answered.append(message_id)
                elif kind == "searchResEntry":
                    self._put(self._on_entry(response))
                elif kind == "intermediateResponse":
                    self._put(self._on_intermediate(response))
                elif kind == "searchResDone":
                    self._put(self._on_search_done(response))
                    self._wake.set()
            except SyncProtocolError as e:
                # One malformed message must not stop the watch (invariant 4).
                log.warning(
                    logline(
                        "watch_bad_message",
                        watch=self._name,
                        provider=self._provider,
                        dn=response.get("dn"),
                        reason=str(e),
                    )
                )

    def _put(self, items: list[Emitted]) -> None:
        for item in items:
            if isinstance(item[0], RefreshDone):
                self._refreshed = True
            self._queue.put(item)
        if items and self._notify is not None:
            self._notify()

    def _on_entry(self, response: Mapping[str, object]) -> list[Emitted]:
        dn = str(response.get("dn") or "")
        value = _control_value(response, SYNC_STATE_OID)
        if value is None:
            raise SyncProtocolError(f"{dn}: entry without a Sync State control")
        state = decode_sync_state(value)
        self._entries += 1
        raw = response.get("raw_attributes")  # ldap3's CaseInsensitiveDict
        attributes: dict[str, Sequence[bytes]] = {}
        if isinstance(raw, Mapping):
            attributes = {
                str(k): [v for v in vs if isinstance(v, bytes)]
                for k, vs in raw.items()
                if isinstance(vs, Sequence)
            }
        return self._session.on_entry(dn, attributes, state)

    def _on_intermediate(self, response: Mapping[str, object]) -> list[Emitted]:
        value = response.get("responseValue")
        if response.get("responseName") != SYNC_INFO_OID or not isinstance(value, bytes):
            return []
        return self._session.on_info(decode_sync_info(value))

    def _on_search_done(self, response: Mapping[str, object]) -> list[Emitted]:
        result = response.get("result")
        self._done = _Done(
            result if isinstance(result, int) else -1,
            str(response.get("description") or ""),
            str(response.get("message") or ""),
        )
        if result != 0:
            return []
        value = _control_value(response, SYNC_DONE_OID)
        return self._session.on_done(decode_sync_done(value) if value is not None else None)

    # -- supervisor thread --------------------------------------------------------------

    def _run(self) -> None:
        prefer = self._prefer
        delay = self._providers.backoff_initial
        first = True
        while not self._stopping.is_set():
            got = self._connect(prefer)
            if got is None:
                return
            index, conn = got
            try:
                end = self._follow(conn, self._providers.uris[index], first)
            except (LDAPException, OSError) as e:
                log.warning(
                    logline(
                        "watch_connection_lost",
                        watch=self._name,
                        provider=self._providers.uris[index],
                        reason=str(e),
                    )
                )
                end = _End.LOST
            except Exception:
                # The supervisor must outlive any surprise, or the watch would go silent.
                log.exception(
                    "event=watch_error watch=%s provider=%s",
                    self._name,
                    self._providers.uris[index],
                )
                end = _End.FAILED
            finally:
                self._close(conn)
            first = False
            if end is _End.STOPPED:
                return
            # Another provider next time (the list wraps): this one just failed us.
            prefer = (index + 1) % len(self._providers.uris)
            if self._refreshed and end is _End.LOST:
                delay = self._providers.backoff_initial
                continue
            # The provider refused the search or died before a refresh completed: back
            # off, so that a provider in a crash loop is not hammered.
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self._providers.backoff_max)

    def _connect(self, prefer: int) -> tuple[int, ldap3.Connection] | None:
        delay = self._providers.backoff_initial
        failures = 0
        while not self._stopping.is_set():
            try:
                return self._providers.connect(stream=True, prefer=prefer)
            except NdsclustError as e:
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    logline(
                        "watch_unreachable",
                        watch=self._name,
                        attempts=failures,
                        retry_in=f"{delay:.2f}",
                        reason=str(e),
                    ),
                )
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, self._providers.backoff_max)
        return None

    def _follow(self, conn: ldap3.Connection, uri: str, first: bool) -> _End:
        sock = conn.socket
        if sock is None:  # the provider hung up right after the bind
            return _End.LOST
        sock.settimeout(None)
        receiver = conn.strategy.receiver
        receiver.name = f"{self._name}-receiver"
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._heard = time.monotonic()
            self._done = None
            self._answered.clear()
            self._refreshed = False
            self._provider = uri
            resumed = self._session.cookie is not None
            if not first:
                self._reconnects += 1
                self._put([(Reconnected(uri, resumed), self._session.cookie)])
        conn.strategy.accumulate_stream = lambda message_id, response: self._on_message(
            generation, conn, message_id, response
        )
        log.info(
            logline(
                "watch_connected",
                watch=self._name,
                provider=uri,
                base=self._base,
                resumed=str(resumed).lower(),
            )
        )
        self._search(conn)
        probe: int | None = None
        tick = time.monotonic()
        while True:
            if self._wake.wait(POLL):
                self._wake.clear()
            last_tick, tick = tick, time.monotonic()
            if tick - last_tick > self._keepalive:
                # This process was not running (SIGSTOP, a stalled host): the provider's
                # silence over that time proves nothing. Judge it from now on.
                with self._lock:
                    self._heard = max(self._heard, tick)
            if self._stopping.is_set():
                return _End.STOPPED
            with self._lock:
                done, self._done = self._done, None
                answered, self._answered = self._answered, []
                heard = self._heard
            if done is not None:
                if done.result != E_SYNC_REFRESH_REQUIRED:
                    log.warning(
                        logline(
                            "watch_search_ended",
                            watch=self._name,
                            provider=uri,
                            result=done.result,
                            description=done.description,
                            message=done.message,
                        )
                    )
                    return _End.FAILED
                log.warning(
                    logline(
                        "watch_refresh_required",
                        watch=self._name,
                        provider=uri,
                        message=done.message,
                        action="full_refresh",
                    )
                )
                with self._lock:
                    self._session.drop_cookie()
                self._search(conn)
            if conn.closed or not receiver.is_alive():
                log.warning(
                    logline(
                        "watch_connection_lost", watch=self._name, provider=uri, reason="closed"
                    )
                )
                return _End.LOST
            for message_id in answered:
                # The reply is already there; taking it frees ldap3's records of the request.
                conn.get_response(message_id, timeout=POLL)
                if message_id == probe:
                    probe = None
            silent = time.monotonic() - heard
            if silent >= 2 * self._keepalive:
                log.warning(
                    logline(
                        "watch_provider_silent",
                        watch=self._name,
                        provider=uri,
                        silent_s=f"{silent:.1f}",
                    )
                )
                return _End.LOST
            if silent >= self._keepalive and probe is None:
                probe = conn.extended(WHOAMI_OID)

    def _search(self, conn: ldap3.Connection) -> None:
        with self._lock:
            cookie = self._session.begin()
            if cookie is None:
                self._full_refreshes += 1
        conn.search(
            self._base,
            self._filter,
            ldap3.SUBTREE,
            # ldap3's default (always) is refused by syncprov with protocolError.
            dereference_aliases=ldap3.DEREF_NEVER,
            attributes=self._attributes,
            controls=[sync_request_control(cookie)],
        )

    def _close(self, conn: ldap3.Connection) -> None:
        with self._lock:
            self._generation += 1  # late messages of this connection are ignored
            self._provider = None
        receiver = conn.strategy.receiver
        try:
            conn.unbind()
        except (LDAPException, OSError) as e:
            log.debug(logline("watch_unbind_failed", watch=self._name, reason=str(e)))
        if receiver is not None:
            receiver.join(RECEIVER_JOIN)


def _control_value(response: Mapping[str, object], oid: str) -> bytes | None:
    controls = response.get("controls")
    if not isinstance(controls, dict):
        return None
    control = controls.get(oid)
    if not isinstance(control, dict):
        return None
    value = control.get("value")
    return value if isinstance(value, bytes) else None

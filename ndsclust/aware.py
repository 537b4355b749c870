"""The cluster-aware application API: register, wait until hosted, keep a marker, unload on request.

A cluster-aware program (the patent's claims 17-24, 29-35, 45-50; docs/design.md section 3)
registers its own entry when it starts (FIG. 6 step 604), waits loaded but paused until
this server hosts it (FIG. 6 step 612, FIG. 7B), continues from the marker the previous
host left (the "ASI pointer", claims 34-35) and unloads itself when its sentinel asks::

    from ndsclust import aware

    with aware.connect() as cluster:
        cluster.register(command=[sys.executable, "-m", "myapp"], primary="alpha",
                         backups=["beta"])
        if not cluster.supervised:
            sys.exit(0)               # started by hand: the sentinel runs it from now on
        cluster.wait_until_host()     # paused here until this server hosts it
        done = int(cluster.marker or 0)
        while not cluster.should_stop(timeout=0.02):
            process(done + 1)         # first the work ...
            done += 1
            cluster.marker = str(done)   # ... then the marker (compare-and-swap)

The module talks only to the local sentinel, over its control socket (the protocol is in
``ndsclust.control_protocol``); the sentinel writes to the directory with its own identity,
so a program holds no directory credentials. The sentinel starts its programs with
``NDSCLUST_SOCKET`` (the socket), ``NDSCLUST_TAG`` and ``NDSCLUST_TOKEN`` (this start of this
program) in their environment; ``connect()`` reads them.

First start (FIG. 6). A new program is started once by hand (or by any unit) on a server
running a sentinel, normally its primary, with ``NDSCLUST_SOCKET`` naming that sentinel's
socket. ``register`` creates the entry with the host set to the primary: the program was
started to run (steps 604, 618). The sentinel does not supervise a copy it did not start
(``supervised`` is False: no token), so that copy may register and read its marker but
never gets the start; it exits, and the primary's sentinel loads the program from the
command it registered, under its lease guard. Every later start is the sentinel's, and
``register`` writes only what changed (or nothing). An entry whose host is absent was
unloaded by an operator and stays so (``ndsclust load TAG`` starts it again).

Pausing. ``wait_until_host`` blocks until the sentinel grants the start, which it does
only while this server hosts the application: at once after a failover or a load; on a
primary that returned, only once the backup has unloaded and the host names this server
(the sentinel starts the primary's copy early, and it waits here, loaded). A copy that
has not been granted the start gets nothing done through this API (``set_marker`` is
refused) and must do no work.

Unloading. The sentinel asks over the socket and, as for any program, with SIGTERM (the
session turns SIGTERM into the same request unless ``handle_sigterm=False``). Both show
in ``should_stop()`` and call the ``on_stop`` callbacks; the program finishes the item in
hand, saves its marker and exits 0 within the sentinel's ``stop_grace``, after which it is
SIGKILLed. A lost control socket (the sentinel is gone) is a stop request too. The
SIGTERM may land only while the program is already exiting: from interpreter exit on the
session ignores it, so that it cannot turn the clean exit into death by a signal.

Markers. ``marker`` reads the value from the write provider; assigning it swaps the value
this session last read or wrote for the new one in one compare-and-swap, so two writers
can never interleave: the loser gets ``MarkerConflict`` (with the value it found) and
must re-read and decide again; ``update_marker`` does that loop for a pure function.
Values are non-empty strings of at most ``MAX_MARKER`` characters.

Errors (all ``ndsclust.errors.NdsclustError``)::

    AwareError               the sentinel refused a request or answered nonsense
    ├── ControlUnavailable   no control socket, or the sentinel went away
    ├── RegistrationRefused  a malformed attribute, or the tag belongs to another type
    ├── NotSupervised        this copy was not started by the sentinel (no token)
    ├── NotGranted           the call needs the start this copy has not been granted
    ├── MarkerConflict       the marker is no longer what this session expected
    ├── StopRequested        the sentinel asked the program to unload itself
    └── WaitTimeout          wait_until_host's timeout passed
"""

from __future__ import annotations

import atexit
import logging
import os
import selectors
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

from ndsclust.control_protocol import (
    DEFAULT_SOCKET,
    ERROR_CODES,
    MAX_LINE,
    PROTOCOL,
    AwareError,
    ControlUnavailable,
    MarkerConflict,
    NotGranted,
    NotSupervised,
    ProtocolError,
    RegistrationRefused,
    StopRequested,
    WaitTimeout,
    check_marker,
    decode,
    encode,
    error_from_reply,
    registration,
)
from ndsclust.framing import LineFramer, receive
from ndsclust.logfmt import line as logline
from ndsclust.model import ServerName, Tag, check_tag

# What a program needs of the protocol comes with the API: the errors it catches.
__all__ = [
    "DEFAULT_SOCKET",
    "ERROR_CODES",
    "AwareError",
    "ControlUnavailable",
    "MarkerConflict",
    "NotGranted",
    "NotSupervised",
    "Registered",
    "RegistrationRefused",
    "Session",
    "StopRequested",
    "WaitTimeout",
    "cas_update",
    "connect",
]

CONNECT_TIMEOUT = 10.0  # seconds to connect and say hello
CALL_TIMEOUT = 30.0  # seconds any request but ``wait`` may take
UPDATE_ATTEMPTS = 8  # compare-and-swap rounds update_marker tries

_log = logging.getLogger("ndsclust.aware")


@dataclass(frozen=True, slots=True)
class Registered:
    """The outcome of ``register``: ``result`` is created, updated or unchanged; ``host``
    the server hosting the application now (None: unloaded by an operator)."""

    result: str
    host: ServerName | None


# ---------------------------------------------------------------------------- markers


# ---------------------------------------------------------------------------- markers


def cas_update(
    current: str | None,
    swap: Callable[[str | None, str], None],
    fn: Callable[[str | None], str],
    attempts: int = UPDATE_ATTEMPTS,
) -> str:
    """Compare-and-swap loop: ``swap(current, fn(current))`` until no other writer came first.

    On ``MarkerConflict`` the new value is computed again from the value found (never the
    same write retried); after ``attempts`` conflicts the last one is raised.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(attempts):
        new = fn(current)
        try:
            swap(current, new)
            return new
        except MarkerConflict as e:
            if attempt == attempts - 1:
                raise
            current = e.current
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- session


LOST: Final = "the control socket closed (the sentinel is gone)"


class _Unread:
    """The marker before this session read or wrote it."""


_UNREAD: Final = _Unread()


@dataclass(eq=False)
class _Pending:
    op: str
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, object] | None = None
    error: AwareError | None = None


class Session:
    """One program's connection to its sentinel. Thread-safe; use ``connect()``.

    A reader thread takes the sentinel's answers and stop requests; ``on_stop`` callbacks
    run on it (keep them short: set a flag, wake the main loop).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        tag: Tag | None,
        token: str | None,
        handle_sigterm: bool = True,
    ) -> None:
        self._sock = sock
        self._tag = tag
        self._token = token
        self._server: ServerName | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._stop_reason: str | None = None
        self._stopped = threading.Event()
        self._sigterm = False
        self._callbacks: list[Callable[[str], None]] = []
        self._closed = False
        self._gone = False
        self._seen: str | _Unread | None = _UNREAD
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_handler: Callable[[int, FrameType | None], object] | int | None = None
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            atexit.register(self._ignore_sigterm_at_exit)
        self._reader = threading.Thread(target=self._read_loop, name="ndsclust-aware", daemon=True)
        self._reader.start()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the sentinel said at hello

    @property
    def tag(self) -> Tag | None:
        """This program's tag (NDSCLUST_TAG, or what ``register`` was given)."""
        return self._tag

    @property
    def server(self) -> ServerName | None:
        """The server whose sentinel this session talks to."""
        return self._server

    @property
    def supervised(self) -> bool:
        """True when the sentinel started this copy (it has a start token)."""
        return self._token is not None

    def _hello(self, timeout: float) -> None:
        reply = self._call(
            "hello", timeout=timeout, protocol=PROTOCOL, tag=self._tag, token=self._token
        )
        server, tag = reply.get("server"), reply.get("tag")
        if not isinstance(server, str) or not (tag is None or isinstance(tag, str)):
            raise AwareError(f"the sentinel's answer to hello makes no sense: {reply!r}")
        self._server = ServerName(server)
        if tag is not None:
            self._tag = Tag(tag)

    # -- the API

    def register(
        self,
        *,
        command: Sequence[str],
        primary: str,
        backups: Iterable[str] = (),
        resources: Iterable[str] = (),
        tag: str | None = None,
    ) -> Registered:
        """Create or update this application's entry (FIG. 6 steps 602-604), idempotently.

        ``tag`` defaults to the session's. Writes only attributes that differ; never touches
        the host, state, marker or an operator's request. RegistrationRefused (nothing
        written) for a malformed attribute, an unknown server, or a tag that belongs to a
        cluster-capable application.
        """
        name = tag if tag is not None else self._tag
        if name is None:
            raise RegistrationRefused("?", "ndsclustTag", "no tag: pass tag= or set NDSCLUST_TAG")
        reg = registration(name, command, primary, backups, resources)
        reply = self._call("register", app=reg.to_wire())
        result, host = reply.get("result"), reply.get("host")
        if result not in ("created", "updated", "unchanged") or not (
            host is None or isinstance(host, str)
        ):
            raise AwareError(f"the sentinel's answer to register makes no sense: {reply!r}")
        if self._tag is None:
            self._tag = reg.tag
        return Registered(str(result), ServerName(host) if host else None)

    def wait_until_host(self, timeout: float | None = None) -> None:
        """Block until this server hosts the application and the sentinel grants the start.

        Raises NotSupervised for a copy started by hand, StopRequested when the sentinel
        asks the program to unload before granting the start (exit 0 then), WaitTimeout
        after ``timeout`` seconds (None: no limit).
        """
        if self._token is None:
            raise NotSupervised(
                "this copy was not started by the sentinel (no NDSCLUST_TOKEN): "
                "it may register but never runs; the sentinel starts the program"
            )
        if self._stop_reason is not None or self._sigterm:
            raise StopRequested(self._stop_reason or "SIGTERM")
        self._call("wait", timeout=timeout)

    @property
    def marker(self) -> str | None:
        """The application's marker as the directory holds it now (None: none yet)."""
        reply = self._call("get_marker")
        value = reply.get("marker")
        if value is not None and not isinstance(value, str):
            raise AwareError(f"the sentinel's marker is not a string: {reply!r}")
        self._seen = value
        return value

    @marker.setter
    def marker(self, value: str) -> None:
        self.set_marker(value)

    def set_marker(self, value: str, *, expected: str | _Unread | None = _UNREAD) -> None:
        """Compare-and-swap the marker from ``expected`` (default: the value this session
        last read or wrote) to ``value``. MarkerConflict when it was not ``expected``."""
        check_marker(value)
        if isinstance(expected, _Unread):
            expected = self._seen
            if isinstance(expected, _Unread):
                raise AwareError(
                    "read the marker (session.marker) before setting it, or pass "
                    "expected=: a compare-and-swap needs the value it replaces"
                )
        self._call("set_marker", expected=expected, value=value)
        self._seen = value

    def update_marker(
        self, fn: Callable[[str | None], str], attempts: int = UPDATE_ATTEMPTS
    ) -> str:
        """Read the marker and swap in ``fn(marker)``, recomputed on every conflict."""
        current = self.marker

        def swap(old: str | None, new: str) -> None:
            self.set_marker(new, expected=old)

        return cas_update(current, swap, fn, attempts)

    def should_stop(self, timeout: float = 0.0) -> bool:
        """True once the sentinel asked the program to unload itself; waits up to
        ``timeout`` seconds for that (a sleep that a stop request cuts short)."""
        if self._sigterm or self._stopped.is_set():
            return True
        return timeout > 0 and self._stopped.wait(timeout)

    @property
    def stop_reason(self) -> str | None:
        """Why the sentinel asked for the unload; None while it has not."""
        if self._stop_reason is None and self._sigterm:
            return "SIGTERM"  # the handler has run; the reader thread has not yet
        return self._stop_reason

    def on_stop(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` once when the sentinel asks for the unload (at once if
        it already has), on the session's reader thread."""
        with self._lock:
            reason = self._stop_reason
            if reason is None:
                self._callbacks.append(callback)
                return
        callback(reason)

    def close(self) -> None:
        """Close the connection. May be called from an ``on_stop`` callback.

        Restores the SIGTERM handler the session installed, unless the sentinel has asked
        for the unload: its SIGTERM may still be on the way, and must not cut the clean
        exit short (the handler left in place only sets a flag, and SIGTERM is ignored
        once the interpreter exits).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            asked = self._stop_reason is not None or self._sigterm
        if (
            self._old_handler is not None
            and not asked
            and threading.current_thread() is threading.main_thread()
        ):
            signal.signal(signal.SIGTERM, self._old_handler)
            self._old_handler = None
            atexit.unregister(self._ignore_sigterm_at_exit)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end and cleans up
        except OSError:
            pass
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)

    # -- plumbing

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler takes no lock (the interrupted code may hold it): it sets a flag
        # and wakes the reader thread, which does the rest.
        self._sigterm = True
        if not self._closed:
            try:
                os.write(self._wake_w, b"t")
            except OSError:
                pass

    def _ignore_sigterm_at_exit(self) -> None:
        # Interpreter exit resets every Python signal handler to SIG_DFL well before the
        # process is gone (modules, threads and buffers are torn down after that). The
        # sentinel sends its SIGTERM alongside the stop request, from another process, so
        # it may land only once the program, already answering the request, is exiting:
        # with SIG_DFL it would turn that clean unload (exit 0) into death by SIGTERM.
        # SIG_IGN survives the reset; the sentinel's SIGKILL after its grace still bounds
        # the exit. The program is ending, so a SIGTERM can ask nothing more of it.
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def _call(
        self, op: str, *, timeout: float | None = CALL_TIMEOUT, **args: object
    ) -> dict[str, object]:
        with self._lock:
            if self._closed or self._gone:
                raise ControlUnavailable(f"the control socket is closed; cannot {op}")
            self._next_id += 1
            rid = self._next_id
            pending = _Pending(op)
            self._pending[rid] = pending
        try:
            line = encode({"id": rid, "op": op, **args})
            with self._send_lock:
                self._sock.sendall(line)
        except (OSError, ProtocolError) as e:
            with self._lock:
                self._pending.pop(rid, None)
            if isinstance(e, ProtocolError):
                raise AwareError(f"cannot send {op}: {e}") from None
            raise ControlUnavailable(f"cannot send {op} to the sentinel: {e}") from None
        if not pending.done.wait(timeout):
            with self._lock:
                self._pending.pop(rid, None)
            if op == "wait":
                raise WaitTimeout(f"the start was not granted within {timeout:g}s")
            raise ControlUnavailable(f"the sentinel did not answer {op} within {timeout:g}s")
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        return pending.reply

    def _read_loop(self) -> None:
        framer = LineFramer(MAX_LINE)
        reason = LOST
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = sel.select()
                if any(key.fileobj == self._wake_r for key, _ in ready):
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    if self._sigterm:
                        self._stop("SIGTERM")
                if not any(key.fileobj is self._sock for key, _ in ready):
                    continue
                data = receive(self._sock)
                if data is None:
                    continue
                if not data:
                    break
                for line in framer.feed(data):
                    self._dispatch(line)
                if framer.too_long:
                    reason = f"the sentinel sent a line longer than {MAX_LINE} bytes"
                    break
        self._lost(reason)
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = decode(line)
        except ProtocolError as e:
            _log.warning(logline("control_bad_line", error=e))
            return
        if msg.get("event") == "stop":
            reason = msg.get("reason")
            self._stop(
                reason if isinstance(reason, str) and reason else "requested by the sentinel"
            )
            return
        rid = msg.get("id")
        with self._lock:
            pending = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if pending is None:
            return  # the answer to a wait that timed out on this side
        if msg.get("ok") is True:
            pending.reply = msg
        else:
            pending.error = error_from_reply(msg)
        pending.done.set()

    def _stop(self, reason: str) -> None:
        """The unload request: tell the callbacks, then ``should_stop`` and a pending wait."""
        with self._lock:
            if self._stop_reason is not None:
                return
            self._stop_reason = reason
            callbacks, self._callbacks = self._callbacks, []
            waits = [(rid, p) for rid, p in self._pending.items() if p.op == "wait"]
            for rid, _ in waits:
                del self._pending[rid]
        for cb in callbacks:
            try:
                cb(reason)
            except Exception:
                _log.exception(logline("on_stop_callback_failed"))
        self._stopped.set()
        for _, p in waits:
            p.error = StopRequested(reason)
            p.done.set()

    def _lost(self, reason: str) -> None:
        if not self._closed:
            self._stop(reason)  # the sentinel is gone: nothing more can be saved
        with self._lock:
            self._gone = True
            pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            p.error = ControlUnavailable(f"the control socket closed before the answer to {p.op}")
            p.done.set()


def connect(
    path: str | None = None,
    *,
    tag: str | None = None,
    token: str | None = None,
    handle_sigterm: bool = True,
    timeout: float = CONNECT_TIMEOUT,
) -> Session:
    """Connect to the local sentinel and say hello.

    ``path`` defaults to NDSCLUST_SOCKET, then ``DEFAULT_SOCKET``; ``tag`` and ``token`` to
    NDSCLUST_TAG and NDSCLUST_TOKEN (a copy started by hand has no token). With
    ``handle_sigterm`` (only from the main thread) SIGTERM becomes a stop request instead
    of ending the program at once (see ``Session.close``). ControlUnavailable when no
    sentinel answers.
    """
    where = path or os.environ.get("NDSCLUST_SOCKET") or DEFAULT_SOCKET
    tag = tag if tag is not None else os.environ.get("NDSCLUST_TAG") or None
    token = token if token is not None else os.environ.get("NDSCLUST_TOKEN") or None
    if tag is not None:
        try:
            check_tag(tag)
        except ValueError as e:
            raise AwareError(f"NDSCLUST_TAG: {e}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(where)
    except OSError as e:
        sock.close()
        raise ControlUnavailable(
            f"cannot reach the sentinel's control socket {where}: {e.strerror or e}; "
            "is the sentinel running with control_socket set?"
        ) from None
    sock.settimeout(None)
    session = Session(
        sock, tag=Tag(tag) if tag else None, token=token, handle_sigterm=handle_sigterm
    )
    try:
        session._hello(timeout)
    except BaseException:
        session.close()
        raise
    return session

"""The control socket: the sentinel's side of the cluster-aware API (``ndsclust.aware``).

Cluster-aware programs (claims 17-24, 29-35, 45-50) talk to their local sentinel here to
register their entry (FIG. 6 step 604), wait paused until this server hosts them (FIG. 7B),
read and compare-and-swap their marker (claims 34-35) and hear when to unload themselves.
The sentinel writes to the directory with its own identity, so programs need none.

Socket: a Unix stream socket at the configured ``control_socket`` path, mode 0600
(``control_socket``). Protocol: ``ndsclust.control_protocol`` (version 1), which also says
who may do what.

Threads: one thread serves every connection (non-blocking sockets, a selector); directory
work runs on a few worker threads, so a slow provider delays only the requests that need
it. What each request does is in ``control_requests.py``. The sentinel's main loop calls
``admit``, ``grant``, ``request_stop`` and ``ended``, which never block on a client.
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import socket
import struct
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from ndsclust.control_protocol import (
    MAX_LINE,
    ProtocolError,
    RegistrationRefused,
    decode,
    encode,
    error_reply,
)
from ndsclust.errors import EntryInvalid, NoSuchEntry, StoreError
from ndsclust.framing import LineFramer, receive, send_queued
from ndsclust.ldapstore.store import Store
from ndsclust.logfmt import line as logline
from ndsclust.model import ServerName, Tag
from ndsclust.sentinel.control_requests import Admission, Conn, Handler, Refusal, Requests
from ndsclust.sentinel.control_socket import MAX_OUT, SOCKET_MODE, listen, over_budget

MAX_CLIENTS = 1024  # connections at once; more are told so and closed
MAX_IN_FLIGHT = 16  # directory requests one connection may have waiting
WORKERS = 2  # threads doing directory work for clients

_UCRED = struct.Struct("3i")


class ControlServer(Requests):
    """The control socket of server ``server``; ``start()`` binds it, ``stop()`` removes it.

    ``store`` is a Store of its own (its writes go to the write provider); the server
    closes it when it stops. ``user``: ``programs.user``, the owner of the socket.
    """

    def __init__(
        self,
        path: str,
        server: ServerName,
        store: Store,
        *,
        user: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.path = path
        self.server = server
        self.store = store
        self.user = user
        self._log = logger or logging.getLogger("ndsclust.sentinel")
        self._lock = threading.Lock()
        self._by_token: dict[str, Admission] = {}
        self._by_tag: dict[Tag, Admission] = {}
        self._conns: dict[int, Conn] = {}
        self._listener: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._workers: ThreadPoolExecutor | None = None

    # -- lifecycle

    def start(self) -> None:
        """Bind and listen; ConfigError when the path cannot be used."""
        self._listener, self._inode = listen(self.path, self.user)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="control-worker")
        self._thread = threading.Thread(target=self._serve, name="sentinel-control", daemon=True)
        self._thread.start()
        self._event(
            logging.INFO,
            "control_listening",
            path=self.path,
            owner=self.user or "sentinel",
            mode=f"{SOCKET_MODE:04o}",
        )

    def stop(self) -> None:
        """Close every connection, remove the socket file, close the store."""
        with self._lock:
            self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._workers is not None:
            # Requests not begun are dropped; one under way ends within the store's deadline.
            self._workers.shutdown(wait=True, cancel_futures=True)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.store.close()

    # -- what the sentinel's loop calls

    def admit(self, tag: Tag, *, granted: bool) -> str:
        """A new start of ``tag``: returns its token (for NDSCLUST_TOKEN). ``granted``: it may
        run at once (a load); False: it waits paused until ``grant`` (FIG. 7B)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            old = self._by_tag.get(tag)
            if old is not None:
                self._end(old, "a new start of the program replaced this one")
            adm = Admission(tag, token, granted)
            self._by_tag[tag] = adm
            self._by_token[token] = adm
        return token

    def grant(self, tag: Tag) -> None:
        """This server hosts ``tag`` now: let its paused copy through ``wait``."""
        with self._lock:
            adm = self._by_tag.get(tag)
            if adm is None or adm.granted:
                return
            adm.granted = True
            waits, adm.waits = adm.waits, []
            for conn, rid in waits:
                self._queue(conn, {"id": rid, "ok": True, "granted": True})
        self._wake()

    def request_stop(self, tag: Tag, reason: str) -> None:
        """Ask the program to unload itself (it also gets SIGTERM from the supervisor)."""
        with self._lock:
            adm = self._by_tag.get(tag)
            if adm is None or adm.stop_reason is not None:
                return
            adm.stop_reason = reason
            for conn in adm.conns:
                self._queue(conn, {"event": "stop", "reason": reason})
            self._answer_waits(adm, reason)
        self._wake()

    def ended(self, tag: Tag) -> None:
        """The program of ``tag`` has exited: its token is no longer valid."""
        with self._lock:
            adm = self._by_tag.get(tag)
            if adm is not None:
                self._end(adm, "the program has ended")
        self._wake()

    def _end(self, adm: Admission, reason: str) -> None:
        adm.ended = True
        self._by_tag.pop(adm.tag, None)
        self._by_token.pop(adm.token, None)
        self._answer_waits(adm, adm.stop_reason or reason)

    def _answer_waits(self, adm: Admission, reason: str) -> None:
        waits, adm.waits = adm.waits, []
        for conn, rid in waits:
            self._queue(conn, error_reply(rid, "stopping", reason))

    # -- plumbing shared by the threads (callers hold self._lock)

    def _queue(self, conn: Conn, message: Mapping[str, object]) -> None:
        if conn.closing:
            return
        conn.out += encode(message)
        if len(conn.out) > MAX_OUT:
            # A client that does not read its answers is not worth the sentinel's memory.
            conn.out.clear()
            conn.closing = True
        self._shed()

    def _shed(self) -> None:
        """Keep what all clients hold within MAX_HELD (docs in control_socket.py)."""
        # list(): worker threads call this while the serving thread adds connections.
        held = {c: c.lines.held + len(c.out) for c in list(self._conns.values()) if not c.closing}
        if (shed := over_budget(held)) is None:
            return
        victim, text = shed
        self._event(logging.WARNING, "control_client_dropped", pid=victim.pid, error=text)
        victim.lines = LineFramer(MAX_LINE)
        victim.out[:] = encode(error_reply(None, "unavailable", text))
        victim.closing = True

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"w")
            except OSError:
                pass  # the pipe is full: the serving thread is awake already

    def _event(self, level: int, event: str, **fields: object) -> None:
        self._log.log(level, logline(event, server=self.server, **fields))

    # -- the serving thread

    def _serve(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        return
                for key, events in sel.select():
                    try:
                        if key.data == "listen":
                            self._accept(sel)
                        elif key.data == "wake":
                            self._drain_wake()
                        else:
                            conn: Conn = key.data
                            if events & selectors.EVENT_READ:
                                self._readable(conn)
                            if events & selectors.EVENT_WRITE:
                                self._writable(conn)
                    except Exception:
                        # One client's trouble must not end the server (docs/design.md invariant 4).
                        self._log.exception(logline("control_error", server=self.server))
                        if isinstance(key.data, Conn):
                            self._close(sel, key.data)
                self._sync(sel)
        finally:
            for conn in list(self._conns.values()):
                self._close(sel, conn)
            sel.close()
            self._listener.close()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._event(logging.WARNING, "control_accept_failed", error=e.strerror or str(e))
                return
            sock.setblocking(False)
            try:
                pid = _UCRED.unpack(
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
                )[0]
            except OSError:
                pid = 0
            if len(self._conns) >= MAX_CLIENTS:
                busy = error_reply(
                    None, "unavailable", f"too many clients ({MAX_CLIENTS}); try again"
                )
                send_queued(sock, bytearray(encode(busy)))
                sock.close()
                continue
            conn = Conn(sock, pid)
            self._conns[sock.fileno()] = conn
            sel.register(sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: Conn) -> None:
        data = receive(conn.sock)
        if data is None:
            return
        if not data:
            # The answers still queued go out; reading stops (EOF stays readable forever).
            conn.eof = True
            return
        for line in conn.lines.feed(data):
            self._line(conn, line)
        if conn.lines.too_long:
            self._bad(conn, None, f"a line is longer than {MAX_LINE} bytes; closing")
            with self._lock:
                conn.closing = True
        with self._lock:
            self._shed()

    def _writable(self, conn: Conn) -> None:
        with self._lock:
            chunk = bytes(conn.out[:65536])
        if not chunk:
            return
        try:
            sent = conn.sock.send(chunk)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            with self._lock:
                conn.out.clear()
                conn.closing = True
            return
        with self._lock:
            del conn.out[:sent]

    def _sync(self, sel: selectors.BaseSelector) -> None:
        """Watch each connection for what it needs now; close the ones that are done."""
        with self._lock:
            todo = [
                (c, bool(c.out), c.closing or (c.eof and not c.in_flight))
                for c in self._conns.values()
            ]
        for conn, pending, done in todo:
            events = (0 if conn.eof or conn.closing else selectors.EVENT_READ) | (
                selectors.EVENT_WRITE if pending else 0
            )
            if done and not pending:
                self._close(sel, conn)
            elif events == conn.events:
                continue
            elif events == 0:
                # EOF while answers are still being worked out: nothing to watch until then.
                sel.unregister(conn.sock)
            elif conn.events == 0:
                sel.register(conn.sock, events, conn)
            else:
                sel.modify(conn.sock, events, conn)
            conn.events = events

    def _close(self, sel: selectors.BaseSelector, conn: Conn) -> None:
        with self._lock:
            conn.closing = True
            adm = conn.admission
            if adm is not None:
                adm.conns.discard(conn)
                adm.waits = [(c, r) for c, r in adm.waits if c is not conn]
        fd = conn.sock.fileno()
        if fd >= 0 and self._conns.get(fd) is conn:
            del self._conns[fd]
            if conn.events:
                sel.unregister(conn.sock)
        conn.sock.close()

    # -- requests

    def _bad(self, conn: Conn, rid: object, text: str) -> None:
        """Answer a line that is no valid request; the sentinel carries on."""
        level = logging.DEBUG if conn.complained else logging.WARNING
        conn.complained = True
        self._event(level, "control_bad_request", pid=conn.pid, error=text)
        with self._lock:
            self._queue(conn, error_reply(rid, "bad-request", text))

    def _line(self, conn: Conn, line: bytes) -> None:
        try:
            msg = decode(line)
        except ProtocolError as e:
            self._bad(conn, None, str(e))
            return
        rid = msg.get("id")
        op = msg.get("op")
        if not isinstance(rid, int) or isinstance(rid, bool):
            self._bad(conn, None, "every request needs an integer 'id'")
            return
        handler = self.HANDLERS.get(op) if isinstance(op, str) else None
        if handler is None:
            self._bad(conn, rid, f"unknown op {op!r}; known: {', '.join(sorted(self.HANDLERS))}")
            return
        if op != "hello" and not conn.greeted:
            self._bad(conn, rid, "say hello first")
            return
        inline, fn = handler
        if inline:
            self._answer(conn, rid, fn, msg)
            return
        with self._lock:
            if conn.in_flight >= MAX_IN_FLIGHT:
                busy = True
            else:
                busy = False
                conn.in_flight += 1
        if busy:
            self._bad(conn, rid, f"more than {MAX_IN_FLIGHT} requests in flight; wait for answers")
            return
        assert self._workers is not None
        self._workers.submit(self._work, conn, rid, fn, msg)

    def _work(self, conn: Conn, rid: int, fn: Handler, msg: dict[str, object]) -> None:
        try:
            self._answer(conn, rid, fn, msg)
        finally:
            with self._lock:
                conn.in_flight -= 1

    def _answer(self, conn: Conn, rid: int, fn: Handler, msg: dict[str, object]) -> None:
        try:
            result = fn(self, conn, msg)
        except ProtocolError as e:
            self._bad(conn, rid, str(e))
            self._wake()
            return
        except Refusal as r:
            reply = error_reply(rid, r.code, r.message, **r.extra)
        except RegistrationRefused as e:
            reply = error_reply(rid, "refused", e.problem, tag=e.tag, attribute=e.attribute)
        except NoSuchEntry as e:
            reply = error_reply(rid, "no-entry", str(e))
        except EntryInvalid as e:
            reply = error_reply(rid, "invalid-entry", str(e))
        except StoreError as e:
            reply = error_reply(rid, "unavailable", f"the directory did not answer: {e}")
        except Exception as e:
            self._log.exception(logline("control_error", server=self.server, pid=conn.pid))
            reply = error_reply(rid, "unavailable", f"the sentinel failed: {type(e).__name__}: {e}")
        else:
            if result is None:  # answered already (hello), or later (a wait)
                self._wake()
                return
            reply = {"id": rid, "ok": True, **result}
        with self._lock:
            self._queue(conn, reply)
        self._wake()

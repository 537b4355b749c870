"""The console's HTTP server: the standard library's ``http.server``, bounded.

Why no framework: the console serves one page, one server-sent event stream and four
small JSON calls; ``http.server`` with a thread per connection does that in a page of
code, ships with Python and is maintained with it, and adds nothing to install or audit.
What a client may cost is bounded here: at most ``max_threads`` connections at once (one
more gets a 503 and is closed), at most ``max_streams`` of them event streams, a
``TIMEOUT`` on every socket read and write, request bodies of ``MAX_BODY`` bytes, no
keep-alive.

Endpoints: ``GET /`` the page; ``GET /stream`` the event stream (``state`` with the whole
view, ``event`` with each new audit-trail event; a comment every ``KEEPALIVE`` seconds);
``GET /api/state``; ``GET /api/session`` (who is signed in and the session's CSRF token);
``POST /api/login`` (``bind_dn``, ``password``: the operator's directory identity, checked
by a bind), ``POST /api/logout``, ``POST /api/action`` (``state.parse_action``; needs the
session cookie, the ``X-CSRF-Token`` header and, when the browser names one, the
console's own origin). Every action is written with the signed-in operator's identity, so
the directory's ACLs decide what it may do, and recorded in the audit trail with
``by=<identity> via=web``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ndsclust.errors import NdsclustError, ProviderUnreachable
from ndsclust.ldapstore.connection import Credentials, Providers
from ndsclust.ldapstore.store import Store
from ndsclust.logfmt import line as logline
from ndsclust.web.hub import Hub
from ndsclust.web.page import PAGE
from ndsclust.web.state import (
    Action,
    Sessions,
    cookie,
    csrf_ok,
    parse_action,
    parse_cookies,
    same_origin,
    server_state,
)

log = logging.getLogger("ndsclust.web")

COOKIE = "ndsclust_console"
TIMEOUT = 10.0
MAX_BODY = 16384
KEEPALIVE = 15.0

StoreFor = Callable[[Credentials], Store]


class Console:
    """What the handlers share: the hub, the sessions, how to reach the directory."""

    def __init__(self, hub: Hub, store_for: StoreFor, base_credentials: Credentials) -> None:
        self.hub = hub
        self.store_for = store_for
        self.base = base_credentials  # TLS settings the operators' binds reuse
        self.sessions = Sessions()
        self.lock = threading.Lock()

    def login(self, bind_dn: str, password: str) -> Credentials:
        """The operator's identity, once a bind with it succeeded; ProviderUnreachable
        (answered) when the directory refuses it."""
        creds = dataclasses.replace(
            self.base, bind_dn=bind_dn, password=password, sasl_external=False
        )
        st = self.store_for(creds)
        try:
            st.search(st.base, "(objectClass=*)", scope="BASE", attributes=["1.1"])
        finally:
            st.close()
        return creds

    def act(self, who: str, creds: Credentials, action: Action) -> str:
        """Write ``action`` with the operator's identity and record it; what was written."""
        st = self.store_for(creds)
        try:
            if action.verb == "maintenance":
                assert action.server is not None
                st.set_server_state(action.server, server_state(action))
                written = f"{action.server}: ndsclustServerState {server_state(action).value}"
            else:
                assert action.tag is not None
                st.replace_app_attrs(action.tag, {"ndsclustRequest": [action.request]})
                written = f"{action.tag}: ndsclustRequest {action.request}"
            try:
                st.record_event(
                    action.audit_kind, tag=action.tag, text=f"by={who} via=web {action.text}"
                )
            except NdsclustError as e:  # written; the audit trail refused
                written += f" (not recorded in the audit trail: {e})"
            log.info(
                logline(action.audit_kind, tag=action.tag, server=action.server, by=who, via="web")
            )
            return written
        finally:
            st.close()


class ConsoleServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        console: Console,
        *,
        tls: ssl.SSLContext | None = None,
        max_threads: int = 32,
        max_streams: int = 16,
    ) -> None:
        self.console = console
        self.tls = tls
        self.slots = threading.BoundedSemaphore(max_threads)
        self.streams = threading.BoundedSemaphore(max_streams)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}/"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self.tls is not None:
                request.settimeout(TIMEOUT)
                request = self.tls.wrap_socket(request, server_side=True)
            super().process_request_thread(request, client_address)
        except (OSError, ssl.SSLError):
            self.shutdown_request(request)
        finally:
            self.slots.release()


class Handler(BaseHTTPRequestHandler):
    server: ConsoleServer
    timeout = TIMEOUT
    server_version = "ndsclust-web"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(logline("web_request", client=self.client_address[0], line=format % args))

    # -- plumbing --------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: Any,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise ValueError("a body with Content-Length is needed") from None
        if not 0 <= length <= MAX_BODY:
            raise ValueError(f"the body must be at most {MAX_BODY} bytes")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            raise ValueError("the body must be application/json")
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except json.JSONDecodeError as e:
            raise ValueError(f"the body is not JSON: {e}") from None

    def _session_id(self) -> str | None:
        return parse_cookies(self.headers.get("Cookie")).get(COOKIE)

    def _scheme(self) -> str:
        return "https" if self.server.tls else "http"

    # -- GET -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        c = self.server.console
        if path == "/":
            self._send(
                200,
                PAGE.encode(),
                "text/html; charset=utf-8",
                {
                    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'"
                },
            )
        elif path == "/stream":
            self._stream()
        elif path == "/api/state":
            self._send(200, c.hub.state.encode())
        elif path == "/api/session":
            with c.lock:
                s = c.sessions.get(self._session_id(), time.time())
            if s is None:
                self._send(401, {"error": "not signed in"})
            else:
                self._send(200, {"who": s.who, "csrf": s.csrf})
        else:
            self._send(404, {"error": "no such page"})

    def _stream(self) -> None:
        if not self.server.streams.acquire(blocking=False):
            self._send(503, {"error": "too many event streams; try again later"})
            return
        hub = self.server.console.hub
        sub = hub.subscribe()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")
            while True:
                try:
                    item = sub.queue.get(timeout=KEEPALIVE)
                except queue.Empty:
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
                    continue
                if item is None:
                    return
                name, data = item
                if name == "state":
                    data = hub.latest(sub)
                self.wfile.write(f"event: {name}\ndata: {data}\n\n".encode())
                self.wfile.flush()
        except OSError:
            return  # the browser went away
        finally:
            hub.unsubscribe(sub)
            self.server.streams.release()

    # -- POST ------------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if not same_origin(self.headers.get("Origin"), self.headers.get("Host"), self._scheme()):
            self._send(403, {"error": "cross-origin request refused"})
            return
        try:
            body = self._json_body()
        except ValueError as e:
            self._send(400, {"error": str(e)})
            return
        if path == "/api/login":
            self._login(body)
        elif path == "/api/logout":
            with self.server.console.lock:
                self.server.console.sessions.drop(self._session_id())
            self._send(
                200,
                {"ok": True},
                headers={"Set-Cookie": cookie(COOKIE, "", secure=bool(self.server.tls), max_age=0)},
            )
        elif path == "/api/action":
            self._action(body)
        else:
            self._send(404, {"error": "no such call"})

    def _login(self, body: Any) -> None:
        c = self.server.console
        dn = body.get("bind_dn") if isinstance(body, dict) else None
        pw = body.get("password") if isinstance(body, dict) else None
        if not isinstance(dn, str) or not dn or not isinstance(pw, str) or not pw:
            self._send(400, {"error": "give bind_dn and password: an operator's identity"})
            return
        try:
            creds = c.login(dn, pw)
        except ProviderUnreachable as e:
            self._send(403 if e.answered else 502, {"error": f"sign-in refused: {e}"})
            return
        with c.lock:
            s = c.sessions.create(dn, creds, time.time())
        log.info(logline("web_login", by=dn, client=self.client_address[0]))
        self._send(
            200,
            {"who": s.who, "csrf": s.csrf},
            headers={
                "Set-Cookie": cookie(
                    COOKIE, s.id, secure=bool(self.server.tls), max_age=int(c.sessions.ttl)
                )
            },
        )

    def _action(self, body: Any) -> None:
        c = self.server.console
        with c.lock:
            s = c.sessions.get(self._session_id(), time.time())
        if s is None:
            self._send(401, {"error": "sign in with an operator identity first"})
            return
        if not csrf_ok(s, self.headers.get("X-CSRF-Token")):
            self._send(403, {"error": "missing or wrong CSRF token (X-CSRF-Token)"})
            return
        try:
            action = parse_action(body, c.hub.follower.snapshot())
        except ValueError as e:
            self._send(400, {"error": str(e)})
            return
        try:
            written = c.act(s.who, s.credentials, action)
        except NdsclustError as e:
            self._send(502, {"error": f"the directory refused: {e}"})
            return
        self._send(200, {"ok": True, "written": written})


def make_store_for(
    uris: list[str], suffix: str, base: str | None, pulse_base: str, timeout: float
) -> StoreFor:
    def store_for(creds: Credentials) -> Store:
        return Store(
            Providers(uris, creds, timeout=2.0),
            suffix,
            base=base,
            pulse_base=pulse_base,
            op_deadline=timeout,
        )

    return store_for

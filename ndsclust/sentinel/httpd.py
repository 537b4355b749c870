"""The sentinel's HTTP face: ``GET /metrics``, ``GET /health``, ``GET /app/<tag>``.

Off the decision path and bounded. The server runs an asyncio loop on a thread of its own
and reads only the ``Published`` snapshot the main loop swaps in after each cycle
(``metrics.py``): it takes no lock the loop, the keeper or the channels take, so a slow,
hostile or numerous client can delay no heartbeat, lease renewal or decision. What one
client may cost is bounded:

- at most ``http.max_connections`` connections at once: at the limit a new connection
  takes the place of the one that has waited longest for its request head, if that one
  has had ``GRACE`` seconds to send it (a slow client, never one being answered, never one
  just accepted whose head is still in the socket), and is closed at accept otherwise; a
  quick client (a scraper, a load balancer's check) therefore gets through however many
  slow ones hang on, at worst after a retry;
- the request line and headers within ``MAX_HEAD`` bytes and ``HEAD_TIMEOUT`` seconds from
  the connection's start, however slowly they trickle in (a slowloris gets a 408 at the
  deadline); with TLS, the handshake before it within ``HEAD_TIMEOUT`` too (a connection
  counts against the limit once its handshake is done);
- no body is read, no connection kept alive, every answer written within ``WRITE_TIMEOUT``;
- ``/metrics`` is rendered at most once per ``RENDER_EVERY`` seconds whatever the number of
  scrapers; the others get the same bytes.

TLS (``http.cert_file``/``key_file``) and client certificates (``http.client_ca_file``)
are options; README, "Metrics and health over HTTP", says how to scrape securely.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from ndsclust.config import HttpSettings
from ndsclust.errors import ConfigError
from ndsclust.sentinel.http_status import Published
from ndsclust.sentinel.logline import log_event
from ndsclust.sentinel.metrics import app_health, health, render

MAX_HEAD = 8192
GRACE = 0.25  # seconds a connection keeps its place before a newer one may take it
HEAD_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
RENDER_EVERY = 1.0
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class StatusServer:
    """Serve the endpoints of the module docstring from ``source()``, the latest snapshot."""

    def __init__(
        self,
        settings: HttpSettings,
        source: Callable[[], Published | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._source = source
        self._clock = clock
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._active = 0
        # Connections still reading their request head -> when accepted, oldest first.
        self._reading: dict[asyncio.StreamWriter, float] = {}
        self._rendered: tuple[float, bytes] | None = None
        self.refused = 0  # connections closed at accept: over max_connections
        self.timed_out = 0
        self.served = 0

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind (ConfigError when the address cannot be had) and serve on a thread."""
        host, port = self.settings.host_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise ConfigError("http.listen", [f"{self.settings.listen}: {e.strerror}"]) from None
        self._sock = sock
        tls = self._tls()
        self._thread = threading.Thread(
            target=self._run, args=(tls,), name="sentinel-http", daemon=True
        )
        self._thread.start()
        self._ready.wait(5)

    def _tls(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.cert_file:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(s.cert_file, s.key_file)
            if s.client_ca_file:
                ctx.load_verify_locations(s.client_ca_file)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as e:
            self.stop()
            raise ConfigError("http.cert_file", [f"{s.cert_file}: {e}"]) from None
        return ctx

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread is not None:
            loop.call_soon_threadsafe(stopping.set)
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def _run(self, tls: ssl.SSLContext | None) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(tls))
        finally:
            self._ready.set()
            loop.close()

    async def _main(self, tls: ssl.SSLContext | None) -> None:
        # asyncio does the TLS handshake before _serve sees the connection, within
        # HEAD_TIMEOUT. (Starting TLS inside _serve, in the connection's slot, would count
        # handshakes too, but StreamWriter.start_tls of Python 3.11 leaves a writer whose
        # handshake failed without a transport, which its finalizer then trips over.)
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._serve,
            sock=self._sock,
            limit=MAX_HEAD,
            ssl=tls,
            ssl_handshake_timeout=HEAD_TIMEOUT if tls else None,
        )
        self._ready.set()
        await self._stopping.wait()
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        if self._active >= self.settings.max_connections:
            self.refused += 1
            oldest = next(iter(self._reading), None)
            if oldest is None or now - self._reading[oldest] < GRACE:
                writer.transport.abort()
                return
            del self._reading[oldest]
            oldest.transport.abort()  # its handler ends with a connection error
        self._active += 1
        try:
            await self._answer(reader, writer, now)
            writer.close()
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            # A client that does not read its answer: drop the connection and what it holds.
            self.timed_out += 1
            writer.transport.abort()
        except asyncio.CancelledError:  # the server stops
            writer.transport.abort()
        finally:
            self._active -= 1

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, accepted: float
    ) -> None:
        self._reading[writer] = accepted
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except TimeoutError:
            self.timed_out += 1
            return await self._send(writer, 408, {"error": "request not complete in time"})
        except asyncio.LimitOverrunError:
            return await self._send(writer, 431, {"error": f"headers over {MAX_HEAD} bytes"})
        except asyncio.IncompleteReadError:
            return
        finally:
            self._reading.pop(writer, None)
        status, body, ctype = self.route(head)
        await self._send(writer, status, body, ctype)

    def route(self, head: bytes) -> tuple[int, Any, str]:
        """(status, body, content type) for one request head."""
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, {"error": "not an HTTP/1.x request line"}, ""
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method != "GET":
            return 405, {"error": "only GET is served"}, ""
        now = self._clock()
        p = self._source()
        if target == "/metrics":
            if p is None:
                return 503, {"error": "the sentinel has not finished a loop cycle yet"}, ""
            return 200, self._metrics(p, now), METRICS_TYPE
        if target == "/health":
            h = health(p, now)
            return (200 if h.ok else 503), h.json(p), ""
        if target.startswith("/app/") and target.count("/") == 2:
            ok, body = app_health(p, unquote(target[len("/app/") :]), now)
            return (200 if ok else 503), body, ""
        return 404, {"error": "no such endpoint; try /metrics, /health, /app/<tag>"}, ""

    def _metrics(self, p: Published, now: float) -> bytes:
        cached = self._rendered
        if cached is not None and now - cached[0] < RENDER_EVERY:
            return cached[1]
        text = render(p, now)
        self._rendered = (now, text)
        return text

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, body: Any, ctype: str = ""
    ) -> None:
        if isinstance(body, bytes):
            data = body
        else:
            data = (json.dumps(body, sort_keys=True) + "\n").encode()
            ctype = ctype or "application/json"
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        ).encode()
        writer.write(head + data)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        self.served += 1


def start_status_server(
    settings: HttpSettings, source: Callable[[], Published | None], server: str
) -> StatusServer:
    """A started ``StatusServer``; logs where it listens."""
    http = StatusServer(settings, source)
    http.start()
    host, port = http.address
    log_event(
        logging.INFO,
        "http_listen",
        server=server,
        address=f"{host}:{port}",
        tls="yes" if settings.cert_file else "no",
    )
    return http

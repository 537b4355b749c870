"""The console's HTTP server on real sockets with a stand-in hub: the page, the event
stream, what an action needs (cookie, CSRF token, own origin, JSON), and its bounds."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from ndsclust.ldapstore.connection import Credentials
from ndsclust.ldapstore.store import Snapshot
from ndsclust.web.hub import Subscriber
from ndsclust.web.server import Console, ConsoleServer


class FakeHub:
    state = json.dumps({"servers": [], "applications": [], "events": []})

    class follower:
        @staticmethod
        def snapshot() -> Snapshot:
            return Snapshot(apps={}, servers={})

    def subscribe(self) -> Subscriber:
        s = Subscriber()
        s.offer(("state", ""))
        return s

    def latest(self, s: Subscriber) -> str:
        return self.state

    def unsubscribe(self, s: Subscriber) -> None:
        pass


@pytest.fixture
def console() -> Iterator[ConsoleServer]:
    def no_store(creds: Credentials) -> Any:
        raise AssertionError("no directory in this test")

    server = ConsoleServer(
        ("127.0.0.1", 0), Console(FakeHub(), no_store, Credentials()), max_threads=8, max_streams=2
    )  # type: ignore[arg-type]
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)


def request(
    server: ConsoleServer,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, Any]:
    req = urllib.request.Request(server.url.rstrip("/") + path, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read(), e.headers


JSON = {"Content-Type": "application/json"}


def test_page_state_and_stream(console: ConsoleServer) -> None:
    code, body, headers = request(console, "/")
    assert code == 200 and b'id="apps"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert request(console, "/api/state")[0] == 200
    assert request(console, "/api/session")[0] == 401
    with urllib.request.urlopen(console.url + "stream", timeout=10) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        lines = [r.readline() for _ in range(4)]
    assert lines[2] == b"event: state\n" and lines[3].startswith(b"data: {")


def test_actions_need_a_session_the_token_own_origin_and_json(console: ConsoleServer) -> None:
    action = json.dumps({"verb": "load", "tag": "web"}).encode()
    assert request(console, "/api/action", action, JSON)[0] == 401
    evil = {**JSON, "Origin": "http://evil.example"}
    assert request(console, "/api/action", action, evil)[0] == 403
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert request(console, "/api/action", b"verb=load&tag=web", form)[0] == 400
    assert request(console, "/api/action", b"x" * 20000, JSON)[0] == 400
    assert request(console, "/api/login", b"{}", JSON)[0] == 400


def test_connections_and_streams_are_bounded(console: ConsoleServer) -> None:
    idle = [socket.create_connection(console.server_address[:2], timeout=5) for _ in range(8)]
    try:
        with socket.create_connection(console.server_address[:2], timeout=5) as extra:
            assert extra.recv(100).startswith(b"HTTP/1.0 503")
    finally:
        for s in idle:
            s.close()
    streams = [urllib.request.urlopen(console.url + "stream", timeout=10) for _ in range(2)]
    try:
        assert request(console, "/stream")[0] == 503
        assert request(console, "/api/state")[0] == 200
    finally:
        for s in streams:
            s.close()

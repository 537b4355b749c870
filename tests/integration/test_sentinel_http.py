"""The sentinel's HTTP server on real sockets, fed a fake snapshot: the endpoints, and what
slow, malformed and numerous clients may cost (bounded connections, head size, time)."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ndsclust import pki
from ndsclust.config import HttpSettings
from ndsclust.model import ServerName
from ndsclust.sentinel import httpd
from ndsclust.sentinel.http_status import Published
from ndsclust.sentinel.httpd import StatusServer
from tests.unit.test_decide import A, app, lab, proc


def snapshot() -> Published:
    now = time.monotonic()
    view = lab(app(A), me=A, procs=[proc()])
    return Published(
        server=A,
        at=now,
        started=now,
        stale_after=5.0,
        view=view,
        watch_provider="ldaps://x",
        write_provider="ldaps://x",
    )


@pytest.fixture
def server() -> Iterator[StatusServer]:
    s = StatusServer(HttpSettings(listen="127.0.0.1:0", max_connections=16), snapshot)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def get(s: StatusServer, path: str) -> tuple[int, bytes]:
    host, port = s.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def raw(s: StatusServer, data: bytes) -> bytes:
    with socket.create_connection(s.address, timeout=10) as c:
        c.sendall(data)
        out = b""
        while chunk := c.recv(65536):
            out += chunk
        return out


def test_endpoints(server: StatusServer) -> None:
    code, body = get(server, "/health")
    assert code == 200 and json.loads(body)["ok"] is True
    code, body = get(server, "/app/web")
    assert code == 200 and json.loads(body)["pid"] == 4242
    code, body = get(server, "/app/other")
    assert code == 503
    code, body = get(server, "/metrics")
    assert code == 200
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"ndsclust_app_host", "ndsclust_peer_alive", "ndsclust_fenced"} <= names
    assert get(server, "/nothing")[0] == 404


def test_malformed_oversized_and_other_methods(server: StatusServer) -> None:
    assert raw(server, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(server, b"POST /health HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
    big = b"GET /health HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw(server, big).startswith(b"HTTP/1.1 431")


def test_a_slow_head_is_cut_at_the_deadline(
    server: StatusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpd, "HEAD_TIMEOUT", 0.3)
    with socket.create_connection(server.address, timeout=10) as c:
        c.sendall(b"GET /health HTTP/1.1\r\n")
        began = time.monotonic()
        answer = c.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - began < 5


def answered(s: StatusServer, path: str, within: float = 5.0) -> tuple[int, float]:
    """Status of ``path`` and the seconds it took, retrying a refused connection (at the
    limit a newcomer is refused while every slot is younger than httpd.GRACE)."""
    began = time.monotonic()
    while True:
        try:
            return get(s, path)[0], time.monotonic() - began
        except OSError:
            if time.monotonic() - began > within:
                raise


def test_quick_clients_get_through_many_slow_ones(server: StatusServer) -> None:
    """200 connections that never finish their head: the server keeps at most 16 and a
    quick client is still answered, every time, within a grace or two."""
    slow = []
    try:
        for _ in range(200):
            c = socket.create_connection(server.address, timeout=5)
            c.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
            slow.append(c)
        for _ in range(20):
            code, took = answered(server, "/health")
            assert code == 200 and took < 3, took
        assert server.refused >= 200 - 16
        assert server._active <= 16
    finally:
        for c in slow:
            c.close()


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    """HTTPS, and with client_ca_file a scraper without a certificate of that CA is
    refused in the handshake."""
    now = datetime.now(UTC)
    ca = pki.make_ca("lab", now)
    srv = pki.issue_server(ca, A, now, ips=["127.0.0.1"])
    scraper = pki.issue_server(ca, ServerName("scraper"), now)
    files = {}
    for name, data in (
        ("ca.crt", ca.cert_pem),
        ("http.crt", srv.cert_pem),
        ("http.key", srv.key_pem),
        ("scraper.crt", scraper.cert_pem),
        ("scraper.key", scraper.key_pem),
    ):
        (tmp_path / name).write_bytes(data)
        files[name] = str(tmp_path / name)
    settings = HttpSettings(
        listen="127.0.0.1:0",
        cert_file=files["http.crt"],
        key_file=files["http.key"],
        client_ca_file=files["ca.crt"],
        max_connections=8,
    )
    s = StatusServer(settings, snapshot)
    s.start()
    try:
        host, port = s.address
        url = f"https://{host}:{port}/health"
        ctx = ssl.create_default_context(cafile=files["ca.crt"])
        ctx.load_cert_chain(files["scraper.crt"], files["scraper.key"])
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            assert r.status == 200
        # Connections that never start their handshake: each is dropped after its
        # handshake timeout, and a scraper still gets through meanwhile.
        mute = [socket.create_connection(s.address, timeout=5) for _ in range(30)]
        try:
            began = time.monotonic()
            while True:
                try:
                    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
                        assert r.status == 200
                    break
                except (OSError, ssl.SSLError):
                    assert time.monotonic() - began < 5
            assert s._active <= 8
        finally:
            for m in mute:
                m.close()
        anonymous = ssl.create_default_context(cafile=files["ca.crt"])
        with (
            pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)),
            urllib.request.urlopen(url, context=anonymous, timeout=10) as r,
        ):
            r.read()
    finally:
        s.stop()

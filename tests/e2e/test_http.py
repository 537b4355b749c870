"""The sentinels' HTTP faces on a real lab: /health, /metrics that follow a failover, and
/app/<tag> flipping from the old host to the new one while 200 slow or malformed clients
hang on the new host's sentinel."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ndsclust.lab.cluster import LabCluster, LabServer
from ndsclust.lab.directory import wait_until
from ndsclust.model import Request, RequestKind, ServerName

LabFactory = Callable[..., LabCluster]
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
FAILOVER = 0.8  # the sentinel's default timeouts.failover, which the lab keeps
# What 200 hostile clients may add to the sentinel's resident memory: its connections are
# bounded (http.max_connections, 64 by default) and each holds at most an 8 KiB head.
GROWTH_MB = 5


def get(server: LabServer, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body; 0 when the sentinel does not answer at all."""
    try:
        with urllib.request.urlopen(f"http://{server.http}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()
    except OSError:
        return 0, b""


def metric(at: LabServer, name: str, **labels: str) -> float | None:
    # A connection refused at the limit (all slots younger than httpd.GRACE, as just after
    # the hostile clients let go) is tried again, as a scraper would at its next scrape.
    code, body = wait_until(
        lambda: (r := get(at, "/metrics"))[0] != 0 and r, timeout=10, what="an answer"
    )
    assert code == 200, code
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@contextmanager
def hostile_clients(address: str, n: int) -> Iterator[list[socket.socket]]:
    """``n`` clients: most send their request head one byte at a time, some send garbage
    or an oversized head; all are kept open (and reopened) until the block ends."""
    host, port = address.rsplit(":", 1)
    stop = threading.Event()
    socks: list[socket.socket] = []

    def one(i: int) -> socket.socket | None:
        try:
            s = socket.create_connection((host, int(port)), timeout=1)
            s.setblocking(False)
            if i % 10 == 0:
                s.send(b"\x16\x03\x01garbage\xff\x00\r\n")
            elif i % 10 == 1:
                s.send(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 4000)
            else:
                s.send(b"G")
            return s
        except OSError:
            return None

    def trickle() -> None:
        while not stop.wait(0.2):
            for i, s in enumerate(list(socks)):
                try:
                    s.send(b"E")
                except OSError:
                    s.close()
                    fresh = one(i)
                    if fresh is not None:
                        socks[i] = fresh

    for i in range(n):
        s = one(i)
        if s is not None:
            socks.append(s)
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        yield socks
    finally:
        stop.set()
        t.join(timeout=5)
        for s in socks:
            s.close()


def test_health_metrics_and_app_flip_through_a_failover_under_slow_clients(
    lab: LabFactory,
) -> None:
    c = lab(3, http=True)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    a, b, g = (c.servers[n] for n in (A, B, C))
    for s in (a, b, g):
        wait_until(lambda: get(s, "/health")[0] == 200, timeout=20, what=f"{s.name} healthy")
    body = json.loads(get(b, "/health")[1])
    assert body["ok"] and body["server"] == "beta" and body["problems"] == []
    wait_until(lambda: get(a, "/app/web")[0] == 200, timeout=10, what="/app/web 200 on alpha")
    assert get(b, "/app/web")[0] == 503 and get(g, "/app/web")[0] == 503
    assert json.loads(get(b, "/app/web")[1])["reason"] == "hosted by alpha"
    assert metric(b, "ndsclust_app_host", tag="web", server="alpha") == 1
    assert metric(b, "ndsclust_peer_alive", peer="alpha") == 1
    for ch in ("lan", "directory", "disk"):
        assert metric(b, "ndsclust_peer_channel_alive", peer="alpha", channel=ch) == 1

    assert b.pid is not None
    before = rss_mb(b.pid)
    with hostile_clients(b.http, 200) as socks:
        assert len(socks) >= 190
        time.sleep(1.0)  # let them settle in
        killed = c.kill_server(A)
        flipped = None
        deadline = killed + 20
        while time.monotonic() < deadline:
            if get(b, "/app/web", timeout=1.0)[0] == 200:
                flipped = time.monotonic()
                break
        assert flipped is not None, "/app/web never answered 200 on beta"
        # The program's first ledger line may follow its start by the interpreter's start.
        wait_until(
            lambda: c.first_start_after("web", killed, server=B) is not None,
            timeout=10,
            what="beta's copy in the ledger",
        )
        started = c.first_start_after("web", killed, server=B)
        assert started is not None
        took, lag = flipped - killed, max(0.0, flipped - started)
        print(f"http_flip: kill_to_200_s={took:.3f} program_start_to_200_s={lag:.3f}")
        # What the HTTP face adds to a failover: the next published snapshot.
        assert lag <= 0.5, f"/app/web turned 200 {lag:.3f}s after the program started"
        assert took <= FAILOVER + 0.5 + max(0.0, started - killed - FAILOVER), took
        during = rss_mb(b.pid)
    assert get(g, "/app/web")[0] == 503
    assert get(a, "/app/web")[0] == 0  # the killed server answers nothing
    assert metric(b, "ndsclust_app_host", tag="web", server="beta") == 1
    assert metric(b, "ndsclust_app_host", tag="web", server="alpha") is None
    assert metric(b, "ndsclust_peer_alive", peer="alpha") == 0
    assert metric(b, "ndsclust_app_running_here", tag="web", server="beta") == 1
    print(f"http_rss: before_mb={before:.1f} under_200_clients_mb={during:.1f}")
    assert during - before < GROWTH_MB, (before, during)
    c.wait_running("web", B)

    # A move between two live servers: the old host turns 503 once its copy has ended,
    # the new one 200 once its copy runs, and never both 200 at once: asked after the new
    # host said 200, the old one never still says 200.
    c.store().set_request("web", Request(RequestKind.MIGRATE, C))
    both = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        on_g = get(g, "/app/web")[0]
        on_b = get(b, "/app/web")[0]
        both = both or (on_b == 200 and on_g == 200)
        if on_g == 200 and on_b == 503:
            break
    assert (on_b, on_g) == (503, 200)
    assert not both
    assert json.loads(get(b, "/app/web")[1])["reason"] == "hosted by gamma"

"""Liveness channels over real UDP/TCP sockets on 127.0.0.1 and real files (no directory)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ndsclust.errors import ConfigError
from ndsclust.lab.directory import wait_until
from ndsclust.model import ServerName
from ndsclust.sentinel.channels import Channel
from ndsclust.sentinel.channels.directory import DirectoryChannel
from ndsclust.sentinel.channels.disk import SLOT_SIZE, DiskChannel
from ndsclust.sentinel.channels.lan import LanChannel
from ndsclust.sentinel.channels.witness import WitnessChannel
from ndsclust.sentinel.detector import Detector
from ndsclust.sentinel.heartbeat_codec import Kind, Packet, encode

A, B = ServerName("alpha"), ServerName("beta")
KEY = b"0123456789abcdef0123456789abcdef"
KEYS = {"k1": KEY}


@contextmanager
def running(*channels: Channel) -> Iterator[None]:
    before = set(threading.enumerate())
    try:
        for channel in channels:
            channel.start()
        yield
    finally:
        for channel in channels:
            channel.stop()
        leftover = [
            t.name for t in set(threading.enumerate()) - before if t.name.startswith("ndsclust-")
        ]
        assert leftover == [], f"channel threads still running: {leftover}"


def lan(me: ServerName, *bind: str, interval: float = 0.05) -> LanChannel:
    return LanChannel(
        me=me,
        cluster="test",
        bind=bind or ("127.0.0.1:0",),
        keys=KEYS,
        send_key_id="k1",
        interval=interval,
        timeout=0.5,
    )


def free_udp_port() -> int:
    """A port nobody listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_claim11_two_sentinels_hear_each_other_within_a_second() -> None:
    a, b = lan(A), lan(B)
    with running(a, b):
        a.set_peers({B: b.addresses()})
        b.set_peers({A: a.addresses()})
        wait_until(
            lambda: B in a.observe(0) and A in b.observe(0), timeout=1.0, what="mutual heartbeats"
        )
        wait_until(
            lambda: a.stats()["acks_sent"] > 0 and b.stats()["acks_sent"] > 0,
            timeout=1.0,
            what="acknowledgements",
        )
        assert a.stats()["degraded"] == 0
        dropped = {k: v for k, v in a.stats().items() if k.startswith("dropped_") and v}
        assert dropped == {}


def test_one_live_ring_of_several_is_enough() -> None:
    a = lan(A, "127.0.0.1:0", "127.0.0.2:0")
    b = lan(B)
    dead_ring = f"127.0.0.3:{free_udp_port()}"
    with running(a, b):
        # alpha only knows a dead address for beta: beta hears alpha through the acknowledges
        # to its requests on the one live ring, alpha hears beta through those requests.
        a.set_peers({B: (f"127.0.0.4:{free_udp_port()}",)})
        b.set_peers({A: (dead_ring, a.addresses()[1])})
        wait_until(
            lambda: A in b.observe(0) and B in a.observe(0),
            timeout=1.0,
            what="heartbeats on one ring",
        )
        assert a.stats()["acks_sent"] > 0


def test_forged_junk_and_replayed_packets_are_dropped_and_counted() -> None:
    a, b = lan(A), lan(B)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spy, running(a, b):
        spy.bind(("127.0.0.1", 0))
        spy.settimeout(2.0)
        spy_address = f"127.0.0.1:{spy.getsockname()[1]}"
        # alpha also heartbeats the spy's address, so the spy captures genuine packets.
        a.set_peers({B: b.addresses(), ServerName("gamma"): (spy_address,)})
        b.set_peers({A: a.addresses()})
        captured, _ = spy.recvfrom(4096)
        # alpha sends each round to beta before the spy (peer order): once the spy has the
        # next round's packet, beta has a newer sequence from alpha queued before any replay.
        spy.recvfrom(4096)
        host, port = b.addresses()[0].rsplit(":", 1)
        target = (host, int(port))

        forged = encode(
            Packet(
                kind=Kind.REQUEST,
                sender=A,
                cluster="test",
                sequence=2**63,
                echo=0,
                timestamp=time.time(),
                key_id="k1",
                receiver=B,
            ),
            b"x" * 32,
        )
        stranger = encode(
            Packet(
                kind=Kind.REQUEST,
                sender=ServerName("mallory"),
                cluster="test",
                sequence=2**63,
                echo=0,
                timestamp=time.time(),
                key_id="k1",
                receiver=B,
            ),
            KEY,
        )
        unknown_key = encode(
            Packet(
                kind=Kind.REQUEST,
                sender=A,
                cluster="test",
                sequence=2**63,
                echo=0,
                timestamp=time.time(),
                key_id="k9",
                receiver=B,
            ),
            KEY,
        )
        for data in (b"hello", os.urandom(200), forged, stranger, unknown_key, captured):
            spy.sendto(data, target)

        def counted() -> bool:
            s = b.stats()
            return all(
                s[k] >= 1
                for k in (
                    "dropped_bad_length",
                    "dropped_bad_mac",
                    "dropped_unknown_sender",
                    "dropped_unknown_key",
                    # The captured request was alpha's to the spy: replayed to beta it names
                    # another receiver (replays to the same receiver: test_fuzz_heartbeat).
                    "dropped_wrong_receiver",
                )
            )

        wait_until(counted, timeout=1.0, what="every bad packet counted")
        assert ServerName("mallory") not in b.observe(0)
        # No acknowledge went back to the spy for anything it sent.
        spy.settimeout(0.0)
        replies = []
        while True:
            try:
                replies.append(spy.recvfrom(4096))
            except BlockingIOError:
                break
        assert [addr for _, addr in replies if addr[1] == target[1]] == []
        wait_until(lambda: A in b.observe(0), timeout=1.0, what="alpha still heard")


def test_stopped_sentinel_goes_silent_and_a_restarted_one_is_not_a_replay() -> None:
    a, b = lan(A), lan(B)
    detector = Detector({"lan": b.timeout}, me=B, started=time.monotonic(), startup_grace=0.0)
    with running(b):
        with running(a):
            a.set_peers({B: b.addresses()})
            b.set_peers({A: a.addresses()})
            wait_until(lambda: A in b.observe(0), timeout=1.0, what="alpha heard")
        stopped_at = time.monotonic()
        # Let beta run a few more rounds: whatever alpha had queued is handled by then.
        sent = b.stats()["sent"]
        wait_until(lambda: b.stats()["sent"] >= sent + 3, timeout=1.0, what="beta rounds")
        heard = b.observe(0)[A]
        sent = b.stats()["sent"]
        wait_until(lambda: b.stats()["sent"] >= sent + 3, timeout=1.0, what="more beta rounds")
        assert b.observe(0)[A] == heard
        assert heard < stopped_at + 0.2
        wait_until(
            lambda: A in detector.liveness({"lan": b.observe(0)}, time.monotonic(), [A]).dead(),
            timeout=1.0,
            what="alpha dead on lan",
        )

        # Same name, fresh process state: its sequence starts above the old run's.
        a2 = lan(A)
        with running(a2):
            a2.set_peers({B: b.addresses()})
            b.set_peers({A: a2.addresses()})
            wait_until(lambda: b.observe(0)[A] > heard, timeout=1.0, what="restarted alpha heard")
        assert b.stats()["dropped_replay"] == 0


def test_lan_configuration_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        LanChannel(
            me=A,
            cluster="test",
            bind=("10.0.0.300:1", "127.0.0.1"),
            keys={"k1": b"short"},
            send_key_id="k2",
            interval=1.0,
            timeout=0.5,
        )
    assert len(info.value.problems) == 5


def test_unbindable_address_degrades_instead_of_crashing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        a = lan(A, f"127.0.0.1:{taken.getsockname()[1]}")
        with running(a):
            assert a.stats()["bind_errors"] == 1
            assert a.stats()["degraded"] == 1
            a.set_peers({B: ("127.0.0.1:9", "not-an-address")})
            assert a.stats()["bad_peer_address"] == 1


def disk(me: ServerName, path: Path, direct: bool = False) -> DiskChannel:
    return DiskChannel(
        me=me,
        cluster="test",
        path=str(path),
        servers=(A, B),
        interval=0.05,
        timeout=0.5,
        sync=direct,
        direct=direct,
    )


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
def test_fig7a_drive_pulse_between_two_servers(tmp_path: Path, direct: bool) -> None:
    path = tmp_path / "pulse"
    a, b = disk(A, path, direct), disk(B, path, direct)
    with running(b):
        with running(a):
            wait_until(
                lambda: B in a.observe(0) and A in b.observe(0), timeout=1.0, what="drive pulses"
            )
        assert path.stat().st_size == 2 * SLOT_SIZE
        # alpha's slot no longer changes: beta keeps reading it but hears nothing new.
        writes = b.stats()["writes"]
        wait_until(lambda: b.stats()["writes"] >= writes + 2, timeout=1.0, what="beta rounds")
        heard = b.observe(0)[A]
        writes = b.stats()["writes"]
        wait_until(lambda: b.stats()["writes"] >= writes + 3, timeout=1.0, what="more beta rounds")
        assert b.observe(0)[A] == heard
        assert b.stats()["degraded"] == 0


def test_stale_slot_of_a_dead_server_is_not_a_pulse(tmp_path: Path) -> None:
    path = tmp_path / "pulse"
    a = disk(A, path)
    with running(a):
        wait_until(lambda: a.stats()["writes"] >= 1, timeout=1.0, what="alpha wrote")
    b = disk(B, path)
    with running(b):
        wait_until(lambda: b.stats()["reads"] >= 5, timeout=1.0, what="beta rounds")
        assert A not in b.observe(0)


def test_garbage_in_a_slot_is_counted_not_heard(tmp_path: Path) -> None:
    path = tmp_path / "pulse"
    b = disk(B, path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"NDSK" + os.urandom(200), 0)
        with running(b):
            wait_until(
                lambda: b.stats()["bad_checksum"] + b.stats()["bad_version"] >= 2,
                timeout=1.0,
                what="garbage counted",
            )
            os.pwrite(fd, os.urandom(64), 0)
            wait_until(
                lambda: b.stats()["bad_magic"] >= 2, timeout=1.0, what="foreign data counted"
            )
            assert A not in b.observe(0)
            assert b.stats()["degraded"] == 0
    finally:
        os.close(fd)


def test_unopenable_disk_file_degrades_then_recovers(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet" / "pulse"
    b = disk(B, missing)
    with running(b):
        wait_until(lambda: b.stats()["open_errors"] >= 2, timeout=1.0, what="open retried")
        assert b.stats()["degraded"] == 1
        missing.parent.mkdir()
        wait_until(
            lambda: b.stats()["degraded"] == 0 and b.stats()["writes"] >= 1,
            timeout=1.0,
            what="recovered",
        )


def test_unwritable_disk_degrades_instead_of_crashing() -> None:
    b = disk(B, Path("/dev/full"))
    with running(b):
        wait_until(lambda: b.stats()["write_errors"] >= 2, timeout=1.0, what="writes failing")
        assert b.stats()["degraded"] == 1
        assert b.observe(0) == {}


def test_disk_configuration_errors() -> None:
    with pytest.raises(ConfigError) as info:
        DiskChannel(me=ServerName("zeta"), cluster="test", path="", servers=(A, A), interval=0.0)
    assert len(info.value.problems) == 4


def test_claim43_witness_reachable_while_it_listens() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        w = WitnessChannel(
            address=f"127.0.0.1:{listener.getsockname()[1]}",
            interval=0.05,
            timeout=0.3,
            connect_timeout=0.05,
        )
        with running(w):
            wait_until(lambda: w.reachable(time.monotonic()), timeout=1.0, what="witness reachable")
            assert w.observe(time.monotonic()) == {}
            listener.close()
            wait_until(lambda: not w.reachable(time.monotonic()), timeout=1.0, what="witness lost")
            assert w.stats()["refused"] >= 1


def test_claim43_witness_closed_port_is_unreachable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = WitnessChannel(
        address=f"127.0.0.1:{port}", interval=0.05, timeout=0.3, connect_timeout=0.05
    )
    with running(w):
        wait_until(lambda: w.stats()["refused"] >= 3, timeout=1.0, what="probes refused")
        assert not w.reachable(time.monotonic())
        assert w.stats()["reachable"] == 0


def test_witness_rejects_names_and_bad_timings() -> None:
    with pytest.raises(ConfigError) as info:
        WitnessChannel(address="gateway.example:80", interval=0.5, timeout=0.1, connect_timeout=1.0)
    assert len(info.value.problems) == 3


def test_claim44_directory_pulse_changes_are_heard_first_sight_is_not() -> None:
    d = DirectoryChannel(me=A, timeout=1.0, first_pulse=100)
    with running(d):
        assert (d.next_pulse(), d.next_pulse()) == (101, 102)
        d.pulse_seen(B, 7, now=1.0)
        assert d.observe(1.0) == {}
        d.pulse_seen(B, 7, now=2.0)
        assert d.observe(2.0) == {}
        d.pulse_seen(B, 8, now=3.0)
        d.pulse_seen(A, 555, now=3.0)
        assert d.observe(3.0) == {B: 3.0}
    d.pulse_seen(B, 9, now=4.0)
    assert d.observe(4.0) == {B: 3.0}
    assert d.stats()["after_stop"] == 1

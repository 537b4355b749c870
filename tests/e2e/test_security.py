"""Security on live sentinels: the allow-list refuses a command (error event, nothing runs),
and neither replayed nor forged heartbeats keep a dead server alive. The ``lab`` fixture
checks every ledger for double runs."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable

import yaml

from ndsclust.channel_config import key_id
from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.model import App, AppState, AppType, ServerName, StateValue, Tag
from ndsclust.sentinel.heartbeat_codec import (
    HeartbeatRejected,
    Kind,
    Packet,
    decode_and_verify,
    encode,
)

LabFactory = Callable[..., LabCluster]
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


def sent_by(sender: ServerName, payload: bytes, keys: dict[str, bytes]) -> bool:
    """A genuine heartbeat of ``sender`` to any other server of the lab."""
    for receiver in (A, B, C):
        try:
            if (
                decode_and_verify(payload, keys, time.time(), "lab", receiver=receiver).sender
                == sender
            ):
                return True
        except HeartbeatRejected:
            continue
    return False


# Failover takes timeouts.failover (0.8 s in the lab) plus a loop or two; a dead server
# kept alive by accepted heartbeats would take at least the 30 s timestamp window.
FAILOVER_BUDGET = 10.0


def test_command_outside_the_allow_list_is_refused_and_never_runs(lab: LabFactory) -> None:
    c = lab(2)
    alpha = c.servers[A]
    c.stop_sentinel(A)
    cfg = c.sentinel_config(alpha)
    cfg["programs"]["allowed_commands"] = [sys.executable]  # the sample programs' Python
    alpha.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    c.start_sentinel(A)
    proof = c.base_dir / "evil-ran"
    c.store().add_app(
        App(
            tag=Tag("evil"),
            type=AppType.CAPABLE,
            command=("/usr/bin/touch", str(proof)),
            primary=A,
            backups=(),
            host=A,
            state=StateValue(AppState.LOADING),
        )
    )
    c.add_app("web", A, [])
    c.wait_running("web", A)  # an allowed program runs as usual
    wait_until(
        lambda: [
            e
            for e in c.store().events(tag="evil")
            if e.kind == "error" and "programs.allowed_commands" in e.text
        ],
        timeout=15,
        what="error event naming programs.allowed_commands",
    )
    assert not proof.exists()
    assert c.servers[A].running, c.log_tail(A)


def lab_keys(c: LabCluster) -> dict[str, bytes]:
    key = (c.base_dir / "cluster.key").read_bytes().strip()
    return {key_id(key): key}


ETH_P_ALL = 0x0003
ETH_HEADER = 14


def udp_payload(frame: bytes, src: str) -> bytes | None:
    """The UDP payload of an Ethernet frame (loopback has a zeroed one) sent from ``src``."""
    if len(frame) < ETH_HEADER + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[ETH_HEADER:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != socket.IPPROTO_UDP or socket.inet_ntoa(ip[12:16]) != src:
        return None
    return ip[ihl + 8 :]


def test_replayed_and_forged_heartbeats_do_not_keep_a_dead_server_alive(lab: LabFactory) -> None:
    """An attacker on the LAN records beta's heartbeats (a packet socket on loopback, as
    root), and once beta is dead replays them to alpha and gamma, with forged ones of its
    own (fresh sequence and time, wrong key). Had either kind been accepted, beta would look
    alive and web would not fail over; it fails over in the usual time."""
    c = lab(3)
    keys = lab_keys(c)
    beta_ip, _ = c.servers[B].address.rsplit(":", 1)
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
    stop = threading.Event()
    flood: threading.Thread | None = None
    try:
        sniffer.bind(("lo", 0))
        sniffer.settimeout(0.2)
        c.add_app("web", B, [A])
        c.wait_running("web", B)
        captured: dict[bytes, None] = {}  # each frame shows twice on lo: out and in

        def heard_beta() -> bool:
            try:
                payload = udp_payload(sniffer.recv(65536), beta_ip)
            except TimeoutError:
                return False
            if payload is not None and sent_by(B, payload, keys):
                captured[payload] = None
            return len(captured) >= 20

        wait_until(heard_beta, timeout=15, interval=0, what="20 heartbeats of beta captured")
        targets = [c.servers[n].address.rsplit(":", 1) for n in (A, C)]
        key_id = next(iter(keys))

        def send() -> None:
            seq = time.time_ns() + 10**12
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                while not stop.is_set():
                    seq += 1
                    forged = encode(
                        Packet(Kind.REQUEST, B, "lab", seq, 0, time.time(), key_id, A),
                        b"attacker key, not the cluster's" * 2,
                    )
                    for data in (*captured, forged):
                        for host, port in targets:
                            out.sendto(data, (host, int(port)))
                    stop.wait(0.01)

        flood = threading.Thread(target=send, name="heartbeat-flood")
        killed = c.kill_server(B)
        flood.start()
        c.wait_running("web", A, timeout=FAILOVER_BUDGET + 5)
        started = c.first_start_after("web", killed, server=A)
        assert started is not None and started - killed < FAILOVER_BUDGET
        for name in (A, C):
            assert c.servers[name].running, c.log_tail(name)
            assert "channel_crashed" not in c.log_tail(name, 400)
        # The drops are counted and shown to the operator (one line per channel, every 10 s).
        wait_until(
            lambda: any(
                "event=channel_counters server=alpha channel=lan" in ln and "dropped_" in ln
                for ln in c.log_tail(A, 400).splitlines()
            ),
            timeout=15,
            what="alpha reports the dropped heartbeats",
        )
    finally:
        stop.set()
        if flood is not None:
            flood.join()
        sniffer.close()

"""The lan channel's drop counters: a request overtaken by a newer one, or heard before the
directory named the peers, is no replay and no stranger (they used to warn after every
peer restart). Packets are checked directly, no socket is bound."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ndsclust.model import ServerName
from ndsclust.sentinel.channels.lan import LanChannel
from ndsclust.sentinel.heartbeat_codec import Kind, Packet

A, B = ServerName("alpha"), ServerName("beta")
KEY = b"k" * 32


@pytest.fixture
def lan() -> Iterator[LanChannel]:
    ch = LanChannel(me=A, cluster="c", bind=["127.0.0.1:0"], keys={"k": KEY}, send_key_id="k")
    yield ch
    ch.stop()


def request(seq: int, sender: ServerName = B) -> Packet:
    return Packet(Kind.REQUEST, sender, "c", seq, 0, 0.0, "k", A)


def test_before_the_peers_are_known_a_sender_is_not_a_stranger(lan: LanChannel) -> None:
    assert lan._check(request(1), 0.0) == "before_peers"
    lan.set_peers({B: ["127.0.0.1:7"]})
    assert lan._check(request(2, ServerName("delta")), 0.0) == "unknown_sender"
    assert lan._check(request(3), 0.0) is None


def test_a_request_overtaken_on_another_ring_is_late_and_a_copy_is_a_replay(
    lan: LanChannel,
) -> None:
    ring1, ring2 = 11, 12  # the sockets the packets came in on
    lan.set_peers({B: ["127.0.0.1:7"]})
    for seq, via in ((100, ring1), (101, ring2), (103, ring1)):
        assert lan._check(request(seq), 1.0, via) is None
    assert lan._check(request(102), 1.0, ring2) == "late"  # overtaken by 103 on ring 1
    assert lan._check(request(103), 1.0, ring2) == "replay"  # the very packet again
    assert lan._check(request(50), 1.0, ring2) == "replay"  # older than anything remembered
    # on the ring that carried the newest, an older packet never sent there is a replay
    # (a copy of what the sender sent to another receiver)
    assert lan._check(request(102), 1.0, ring1) == "replay"
    lan._drop("late")
    lan._drop("replay")
    stats = lan.stats()
    assert stats["late"] == 1 and stats["dropped_replay"] == 1

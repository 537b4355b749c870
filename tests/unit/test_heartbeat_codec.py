"""The LAN heartbeat wire format (claim 11): authenticated, replay-proof, never crashes on junk."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndsclust.model import ServerName
from ndsclust.sentinel.heartbeat_codec import (
    MAX_PACKET,
    HeartbeatRejected,
    Kind,
    Packet,
    RejectReason,
    ReplayGuard,
    decode_and_verify,
    encode,
)

KEY = b"k" * 32
OTHER = b"o" * 32
KEYS = {"k1": KEY}
NOW = 1_700_000_000.0
BETA = ServerName("beta")
ALPHA = ServerName("alpha")


def packet(**changes: object) -> Packet:
    fields: dict[str, object] = dict(
        kind=Kind.REQUEST,
        sender=BETA,
        cluster="prod",
        sequence=1_700_000_000_000_000_001,
        echo=0,
        timestamp=NOW,
        key_id="k1",
        receiver=ALPHA,
    )
    fields.update(changes)
    return Packet(**fields)  # type: ignore[arg-type]


def reason(
    data: bytes, keys: dict[str, bytes] = KEYS, now: float = NOW, cluster: str = "prod"
) -> RejectReason:
    with pytest.raises(HeartbeatRejected) as info:
        decode_and_verify(data, keys, now, cluster, receiver=ALPHA)
    return info.value.reason


def test_claim11_request_and_ack_round_trip() -> None:
    for p in (packet(), packet(kind=Kind.ACK, echo=42, sequence=2**64 - 1)):
        assert decode_and_verify(encode(p, KEY), KEYS, NOW, "prod", receiver=ALPHA) == p


def test_forged_mac_is_dropped() -> None:
    data = bytearray(encode(packet(), KEY))
    data[-1] ^= 1
    assert reason(bytes(data)) is RejectReason.BAD_MAC


def test_tampered_field_is_dropped() -> None:
    data = bytearray(encode(packet(), KEY))
    data[13] ^= 1  # inside the sequence number
    assert reason(bytes(data)) is RejectReason.BAD_MAC


def test_packet_signed_with_another_key_under_our_key_id_is_dropped() -> None:
    assert reason(encode(packet(), OTHER)) is RejectReason.BAD_MAC


def test_unknown_key_id_is_dropped() -> None:
    assert reason(encode(packet(key_id="old"), OTHER)) is RejectReason.UNKNOWN_KEY


def test_key_rotation_accepts_both_keys() -> None:
    keys = {"k1": KEY, "k2": OTHER}
    assert (
        decode_and_verify(encode(packet(), KEY), keys, NOW, "prod", receiver=ALPHA).key_id == "k1"
    )
    assert (
        decode_and_verify(
            encode(packet(key_id="k2"), OTHER), keys, NOW, "prod", receiver=ALPHA
        ).key_id
        == "k2"
    )


def test_truncated_packets_are_dropped() -> None:
    data = encode(packet(), KEY)
    for n in range(len(data)):
        assert reason(data[:n]) in (RejectReason.BAD_LENGTH, RejectReason.BAD_MAC), n


def test_oversized_datagram_is_dropped_unread() -> None:
    assert reason(b"\0" * (MAX_PACKET + 1)) is RejectReason.BAD_LENGTH


def test_wrong_magic_and_version() -> None:
    data = encode(packet(), KEY)
    assert reason(b"XXXX" + data[4:]) is RejectReason.BAD_MAGIC
    assert reason(data[:4] + b"\x09" + data[5:]) is RejectReason.BAD_VERSION


def test_stale_and_future_timestamps_are_dropped() -> None:
    assert reason(encode(packet(timestamp=NOW - 31), KEY)) is RejectReason.STALE_TIMESTAMP
    assert reason(encode(packet(timestamp=NOW + 31), KEY)) is RejectReason.STALE_TIMESTAMP
    assert reason(encode(packet(timestamp=float("nan")), KEY)) is RejectReason.STALE_TIMESTAMP
    assert decode_and_verify(
        encode(packet(timestamp=NOW - 29), KEY), KEYS, NOW, "prod", receiver=ALPHA
    )
    p = encode(packet(timestamp=NOW - 5), KEY)
    with pytest.raises(HeartbeatRejected):
        decode_and_verify(p, KEYS, NOW, "prod", window=1.0, receiver=ALPHA)


def test_other_cluster_is_dropped() -> None:
    assert reason(encode(packet(cluster="test"), KEY)) is RejectReason.WRONG_CLUSTER


def test_authentic_but_malformed_fields_are_named() -> None:
    assert reason(encode(packet(sender="Not A Name"), KEY)) is RejectReason.BAD_SENDER
    body = bytearray(encode(packet(), KEY)[:-32])
    body[5] = 7  # kind
    forged_kind = bytes(body) + hmac.new(KEY, bytes(body), hashlib.sha256).digest()
    assert reason(forged_kind) is RejectReason.BAD_KIND


def test_non_utf8_name_is_dropped() -> None:
    data = encode(packet(), KEY)
    head = struct.calcsize("!4sBBQQd")
    broken = data[:head] + b"\x02\xff\xfe" + data[head + 1 + len("beta") :]
    assert reason(broken) in (RejectReason.BAD_FIELD, RejectReason.BAD_LENGTH)


def test_encode_refuses_out_of_range_sequence() -> None:
    with pytest.raises(ValueError):
        encode(packet(sequence=2**64), KEY)
    with pytest.raises(ValueError):
        encode(packet(echo=-1), KEY)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=MAX_PACKET + 8))
def test_random_bytes_only_ever_raise_the_typed_error(data: bytes) -> None:
    with pytest.raises(HeartbeatRejected):
        decode_and_verify(data, KEYS, NOW, "prod", receiver=ALPHA)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 80), st.binary(min_size=1, max_size=4))
def test_mutated_real_packets_only_ever_raise_the_typed_error(at: int, junk: bytes) -> None:
    data = encode(packet(), KEY)
    mutated = data[:at] + junk + data[at + len(junk) :]
    if mutated == data:
        return
    with pytest.raises(HeartbeatRejected):
        decode_and_verify(mutated, KEYS, NOW, "prod", receiver=ALPHA)


def test_replay_same_sequence_twice_is_dropped() -> None:
    guard = ReplayGuard(forget_after=60.0)
    assert guard.accept(BETA, "k1", 10, now=1.0)
    assert not guard.accept(BETA, "k1", 10, now=1.1)
    assert not guard.accept(BETA, "k1", 9, now=1.2)
    assert guard.accept(BETA, "k1", 11, now=1.3)


def test_replay_state_is_per_sender_and_key() -> None:
    guard = ReplayGuard(forget_after=60.0)
    assert guard.accept(BETA, "k1", 10, now=1.0)
    assert guard.accept(ServerName("gamma"), "k1", 5, now=1.0)
    assert guard.accept(BETA, "k2", 5, now=1.0)


def test_restart_with_higher_sequence_is_heard_at_once() -> None:
    guard = ReplayGuard(forget_after=60.0)
    assert guard.accept(BETA, "k1", 1_000, now=1.0)
    assert guard.accept(BETA, "k1", 5_000, now=2.0)


def test_sender_silent_past_forget_after_is_heard_again_even_with_lower_sequence() -> None:
    guard = ReplayGuard(forget_after=60.0)
    assert guard.accept(BETA, "k1", 1_000, now=1.0)
    assert not guard.accept(BETA, "k1", 500, now=61.0)
    assert guard.accept(BETA, "k1", 500, now=61.5)


def test_a_datagram_relayed_to_another_receiver_is_dropped() -> None:
    # beta's genuine request to alpha, copied to gamma: the receiver is signed, so gamma
    # (whose replay guard has never seen beta's sequence) does not take it for news.
    to_alpha = encode(packet(receiver=ALPHA), KEY)
    assert decode_and_verify(to_alpha, KEYS, NOW, "prod", receiver=ALPHA).receiver == ALPHA
    with pytest.raises(HeartbeatRejected) as info:
        decode_and_verify(to_alpha, KEYS, NOW, "prod", receiver=ServerName("gamma"))
    assert info.value.reason is RejectReason.WRONG_RECEIVER
    # Rewriting the receiver breaks the MAC.
    forged = to_alpha.replace(b"\x05alpha", b"\x05gamma", 1)
    with pytest.raises(HeartbeatRejected) as info:
        decode_and_verify(forged, KEYS, NOW, "prod", receiver=ServerName("gamma"))
    assert info.value.reason is RejectReason.BAD_MAC

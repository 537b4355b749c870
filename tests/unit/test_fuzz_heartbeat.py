"""Bad input containment (docs/design.md invariant 4) for LAN heartbeats (claim 11 packets):
random bytes, truncated, bit-flipped, extended, forged (wrong key, unknown key id), stale,
from another cluster, from an unknown or our own name, and replayed datagrams.

The codec answers each with the packet or one typed ``HeartbeatRejected`` (a model says
which); the LanChannel's packet handler accepts or drops each, counting it under exactly
one counter, never raising. ``fuzz_targets()`` hands the same checks to ``tools/fuzz.py``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndsclust.model import ServerName, check_server_name
from ndsclust.sentinel.channels.lan import LanChannel
from ndsclust.sentinel.heartbeat_codec import (
    DEFAULT_WINDOW,
    MAX_PACKET,
    HeartbeatRejected,
    Kind,
    Packet,
    RejectReason,
    decode_and_verify,
    encode,
)

Target = tuple[st.SearchStrategy[Any], Callable[[Any], None]]
CI = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEY, NEW_KEY, ATTACKER = b"k" * 32, b"n" * 32, b"a" * 32
KEYS = {"k1": KEY, "k2": NEW_KEY}  # two keys: a rotation under way
NOW = 1_800_000_000.0
ME, PEER = ServerName("alpha"), ServerName("beta")
FIRST_SEQ = 1_800_000_000_000_000_000

# -- the codec, against a model ----------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """A packet as a sender built it, and the key it was signed with."""

    packet: Packet
    key: bytes


names = st.one_of(
    st.sampled_from(["beta", "gamma", "alpha"]),
    st.text(max_size=40),
    st.just("x" * 255),
    st.just("Beta"),
)
signed = st.builds(
    lambda kind, sender, cluster, seq, echo, ts, key_id, key, receiver: Signed(
        Packet(kind, ServerName(sender), cluster, seq, echo, ts, key_id, ServerName(receiver)),
        key,
    ),
    st.sampled_from(Kind),
    names,
    st.sampled_from(["prod", "test", ""]) | st.text(max_size=20),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.one_of(
        st.floats(NOW - 2 * DEFAULT_WINDOW, NOW + 2 * DEFAULT_WINDOW),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    st.sampled_from(["k1", "k2", "old", ""]),
    st.sampled_from([KEY, NEW_KEY, ATTACKER]),
    st.sampled_from([ME, PEER, "gamma"]),
).filter(
    lambda s: all(
        len(f.encode("utf-8", "surrogatepass")) <= 255 for f in (s.packet.sender, s.packet.cluster)
    )
)


def expected(s: Signed) -> RejectReason | None:
    """What decode_and_verify must say of an untouched datagram: None = accept."""
    p = s.packet
    if p.key_id not in KEYS:
        return RejectReason.UNKNOWN_KEY
    if KEYS[p.key_id] != s.key:
        return RejectReason.BAD_MAC
    try:
        check_server_name(p.sender)
    except ValueError:
        return RejectReason.BAD_SENDER
    if p.cluster != "prod":
        return RejectReason.WRONG_CLUSTER
    if p.receiver != ME:
        return RejectReason.WRONG_RECEIVER
    if not abs(p.timestamp - NOW) <= DEFAULT_WINDOW:
        return RejectReason.STALE_TIMESTAMP
    return None


def encodable(s: Signed) -> bytes | None:
    try:
        return encode(s.packet, s.key)
    except (ValueError, UnicodeEncodeError):
        return None  # a name the sender itself refuses to send


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, bit-flipped (1-3 bits anywhere, MAC included) or extended."""
    how = draw(st.sampled_from(["truncate", "flip", "extend"]))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "extend":
        return data + draw(st.binary(min_size=1, max_size=40))
    out = bytearray(data)
    for bit in draw(st.sets(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=3)):
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def codec_case(draw: st.DrawFn) -> tuple[str, bytes, Signed | None]:
    how = draw(st.sampled_from(["random", "valid", "damaged"]))
    if how == "random":
        return how, draw(st.binary(max_size=MAX_PACKET + 8)), None
    s = draw(signed)
    data = encodable(s)
    if data is None:
        return "random", draw(st.binary(max_size=MAX_PACKET + 8)), None
    if how == "valid":
        return how, data, s
    return how, draw(damaged(data)), s


def check_codec(case: tuple[str, bytes, Signed | None]) -> None:
    how, data, s = case
    try:
        packet = decode_and_verify(data, KEYS, NOW, "prod", receiver=ME)
    except HeartbeatRejected as e:
        assert isinstance(e.reason, RejectReason) and e.detail
        if how == "valid":
            assert s is not None and e.reason is expected(s), (e, s)
        return
    assert how == "valid" and s is not None and expected(s) is None, (how, packet)
    assert packet == s.packet


# -- the channel's packet handler --------------------------------------------------------


@st.composite
def datagrams(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """A stream of datagrams arriving at alpha, each labelled with what it is."""
    seq = FIRST_SEQ
    sent: list[bytes] = []
    out: list[tuple[str, bytes]] = []
    for _ in range(draw(st.integers(1, 12))):
        what = draw(
            st.sampled_from(
                [
                    "fresh",
                    "fresh",
                    "replay",
                    "forged",
                    "unknown_key",
                    "damaged",
                    "random",
                    "stale",
                    "stranger",
                    "own",
                    "ack",
                ]
            )
        )
        if what in ("replay", "damaged") and not sent:
            what = "fresh"
        if what == "replay":
            out.append((what, draw(st.sampled_from(sent))))
            continue
        if what == "damaged":
            out.append((what, draw(damaged(draw(st.sampled_from(sent))))))
            continue
        if what == "random":
            out.append((what, draw(st.binary(max_size=MAX_PACKET + 8))))
            continue
        seq += draw(st.integers(1, 1000))
        sender = {"stranger": "zeta", "own": ME}.get(what, PEER)
        kind = Kind.ACK if what == "ack" else Kind.REQUEST
        ts = NOW - DEFAULT_WINDOW - 1 if what == "stale" else NOW + draw(st.floats(-5, 5))
        key_id, key = draw(st.sampled_from([("k1", KEY), ("k2", NEW_KEY)]))
        if what == "forged":
            key = ATTACKER
        if what == "unknown_key":
            key_id = "old"
        # Echoes far above any sequence this channel sent: no ack answers one of its requests.
        echo = draw(st.integers(2**63, 2**64 - 1))
        data = encode(Packet(kind, ServerName(sender), "prod", seq, echo, ts, key_id, ME), key)
        sent.append(data)
        out.append((what, data))
    return out


# The counter a datagram of each label must land in (None: accepted). Replays of an
# accepted datagram are "replay"; anything else replayed meets the fate it met before.
OUTCOME: Mapping[str, str | None] = {
    "fresh": None,
    "forged": "dropped_bad_mac",
    "unknown_key": "dropped_unknown_key",
    "stale": "dropped_stale_timestamp",
    "stranger": "dropped_unknown_sender",
    "own": "dropped_own_name",
    # The channel was never started: no request of this run exists for an ack to answer.
    "ack": "dropped_bad_echo",
}


@contextmanager
def channel() -> Iterator[tuple[LanChannel, socket.socket]]:
    lan = LanChannel(
        me=ME,
        cluster="prod",
        bind=["127.0.0.1:0"],
        keys=KEYS,
        send_key_id="k2",
        interval=0.1,
        timeout=1.0,
        monotonic=lambda: 1000.0,
        wall=lambda: NOW,
    )
    lan.set_peers({PEER: ["127.0.0.1:9"], ME: ["127.0.0.1:9"]})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield lan, sock
    finally:
        sock.close()
        lan.stop()


def outcome_counters(stats: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in stats.items() if k == "accepted" or k.startswith("dropped_")}


def check_lan(stream: list[tuple[str, bytes]]) -> None:
    with channel() as (lan, sock):
        fate: dict[bytes, str | None] = {}
        for what, data in stream:
            before = lan.stats()
            lan._handle(sock, data, sock.getsockname())
            after = lan.stats()
            assert after["received"] == before["received"] + 1
            moved = {
                k for k, v in outcome_counters(after).items() if v != outcome_counters(before)[k]
            }
            assert len(moved) == 1 and after[next(iter(moved))] == before[next(iter(moved))] + 1
            landed = next(iter(moved))
            got = None if landed == "accepted" else landed
            if what in OUTCOME:
                assert got == OUTCOME[what], (what, landed)
            elif what == "replay":
                first = fate[data]
                assert got == ("dropped_replay" if first is None else first), (first, landed)
            else:
                assert got is not None, (what, "a damaged or random datagram was accepted")
            fate.setdefault(data, got)
            assert after["acks_sent"] + after["send_errors"] == before["acks_sent"] + before[
                "send_errors"
            ] + (got is None)
        assert (PEER in lan.observe(0.0)) == (None in fate.values())
        assert lan.stats()["degraded"] == 0


@contextmanager
def fuzz_targets() -> Iterator[Mapping[str, Target]]:
    yield {
        "heartbeat_codec.decode_and_verify": (codec_case(), check_codec),
        "LanChannel packet handler": (datagrams(), check_lan),
    }


# -- the CI run --------------------------------------------------------------------------


@CI
@given(codec_case())
def test_codec_returns_the_packet_or_one_typed_rejection(
    case: tuple[str, bytes, Signed | None],
) -> None:
    check_codec(case)


@CI
@given(datagrams())
def test_lan_handler_drops_and_counts_every_bad_datagram(stream: list[tuple[str, bytes]]) -> None:
    check_lan(stream)


def test_forged_and_replayed_heartbeats_are_dropped_and_counted() -> None:
    good = encode(Packet(Kind.REQUEST, PEER, "prod", FIRST_SEQ, 0, NOW, "k1", ME), KEY)
    forged = encode(Packet(Kind.REQUEST, PEER, "prod", FIRST_SEQ + 1, 0, NOW, "k1", ME), ATTACKER)
    with channel() as (lan, sock):
        for data in (good, good, forged, good):
            lan._handle(sock, data, sock.getsockname())
        stats = lan.stats()
    assert (stats["accepted"], stats["dropped_replay"], stats["dropped_bad_mac"]) == (1, 2, 1)
    assert stats["received"] == 4 and stats["acks_sent"] == 1


def test_a_genuine_request_relayed_from_another_receiver_is_dropped() -> None:
    # beta -> gamma, copied to alpha: alpha has never accepted this sequence from beta, so
    # only the signed receiver tells it the datagram was not meant for it.
    to_gamma = encode(
        Packet(Kind.REQUEST, PEER, "prod", FIRST_SEQ, 0, NOW, "k1", ServerName("gamma")), KEY
    )
    with channel() as (lan, sock):
        lan._handle(sock, to_gamma, sock.getsockname())
        stats = lan.stats()
    assert stats["accepted"] == 0 and stats["dropped_wrong_receiver"] == 1
    assert stats["acks_sent"] == 0

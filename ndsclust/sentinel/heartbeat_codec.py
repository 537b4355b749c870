"""Wire format of the LAN heartbeat (claim 11: periodic packets and their acknowledgements).

Pure: bytes in, typed packet out, no sockets and no clock reads. One datagram is::

    offset  size  field
    0       4     magic b"NDHB"
    4       1     version (2)
    5       1     kind: 1 request, 2 acknowledge
    6       8     sequence, unsigned, strictly increasing per sender
    14      8     echo: the request's sequence in an acknowledge, 0 in a request
    22      8     sender's wall clock, IEEE 754 double, seconds since the epoch
    30      1+n   sender server name (length byte, then UTF-8)
    ..      1+n   receiver server name: the sentinel the datagram is meant for
    ..      1+n   cluster name
    ..      1+n   key id
    ..      32    HMAC-SHA256 with the cluster key named by key id, over every byte before it

Every field is authenticated; nothing but the framing is looked at before the MAC has been
checked. Replay protection needs state: ``ReplayGuard`` keeps the highest sequence accepted
per sender and key, and the timestamp window checked here bounds how long it must be kept.
The receiver is signed too, and a datagram naming another receiver is dropped
(``wrong_receiver``): sequences are per sender, so a genuine request copied from one
receiver to another would otherwise be news to the second one (version 1 had no receiver).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from ndsclust.errors import NdsclustError
from ndsclust.model import ServerName, check_server_name

MAGIC = b"NDHB"
VERSION = 2
MAC_SIZE = 32
MAX_SEQUENCE = 2**64 - 1
_HEAD = struct.Struct("!4sBBQQd")
MAX_FIELD = 255
# The largest datagram a well-formed packet can be: anything longer is dropped unread.
MAX_PACKET = _HEAD.size + 4 * (1 + MAX_FIELD) + MAC_SIZE
MIN_PACKET = _HEAD.size + 4 + MAC_SIZE
DEFAULT_WINDOW = 30.0


class Kind(Enum):
    REQUEST = 1
    ACK = 2


class RejectReason(Enum):
    """Why a datagram was dropped; the value is the counter name in the channel's stats."""

    BAD_LENGTH = "bad_length"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    BAD_FIELD = "bad_field"
    UNKNOWN_KEY = "unknown_key"
    BAD_MAC = "bad_mac"
    BAD_KIND = "bad_kind"
    BAD_SENDER = "bad_sender"
    WRONG_CLUSTER = "wrong_cluster"
    WRONG_RECEIVER = "wrong_receiver"
    STALE_TIMESTAMP = "stale_timestamp"


class HeartbeatRejected(NdsclustError):
    """A heartbeat datagram failed a check; ``reason`` says which one."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"heartbeat dropped: {reason.value}: {detail}")


@dataclass(frozen=True, slots=True)
class Packet:
    kind: Kind
    sender: ServerName
    cluster: str
    sequence: int
    echo: int  # the acknowledged request's sequence; 0 in a request
    timestamp: float  # sender's wall clock, seconds
    key_id: str
    receiver: ServerName  # the sentinel it is sent to


def _field(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > MAX_FIELD:
        raise ValueError(f"{what} {value!r} is longer than {MAX_FIELD} bytes")
    return bytes([len(raw)]) + raw


def encode(packet: Packet, key: bytes) -> bytes:
    """The datagram for ``packet``, signed with ``key`` (the key that ``packet.key_id`` names)."""
    for what, n in (("sequence", packet.sequence), ("echo", packet.echo)):
        if not 0 <= n <= MAX_SEQUENCE:
            raise ValueError(f"{what} {n} does not fit in 64 unsigned bits")
    body = (
        _HEAD.pack(
            MAGIC, VERSION, packet.kind.value, packet.sequence, packet.echo, packet.timestamp
        )
        + _field(packet.sender, "sender")
        + _field(packet.receiver, "receiver")
        + _field(packet.cluster, "cluster")
        + _field(packet.key_id, "key id")
    )
    return body + hmac.new(key, body, hashlib.sha256).digest()


def _take_field(data: bytes, pos: int, end: int) -> tuple[str, int]:
    if pos >= end:
        raise HeartbeatRejected(RejectReason.BAD_LENGTH, "packet ends inside its names")
    n = data[pos]
    stop = pos + 1 + n
    if stop > end:
        raise HeartbeatRejected(RejectReason.BAD_LENGTH, "a name runs past the end of the packet")
    try:
        return data[pos + 1 : stop].decode("utf-8"), stop
    except UnicodeDecodeError as exc:
        raise HeartbeatRejected(
            RejectReason.BAD_FIELD, f"name is not UTF-8: {exc.reason}"
        ) from None


def decode_and_verify(
    data: bytes,
    keys: Mapping[str, bytes],
    now_wall: float,
    cluster: str,
    window: float = DEFAULT_WINDOW,
    *,
    receiver: str,
) -> Packet:
    """The packet in ``data`` if it is well formed, signed with one of ``keys`` (key id -> key:
    two entries while a key is being rotated), from ``cluster``, addressed to ``receiver`` (this
    sentinel's server), and stamped within ``window`` seconds of ``now_wall``. Raises
    ``HeartbeatRejected`` and nothing else otherwise.
    """
    if len(data) < MIN_PACKET or len(data) > MAX_PACKET:
        raise HeartbeatRejected(RejectReason.BAD_LENGTH, f"{len(data)} bytes")
    magic, version, kind, sequence, echo, timestamp = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise HeartbeatRejected(RejectReason.BAD_MAGIC, "not an ndsclust heartbeat")
    if version != VERSION:
        raise HeartbeatRejected(
            RejectReason.BAD_VERSION, f"version {version}, this sentinel speaks {VERSION}"
        )
    end = len(data) - MAC_SIZE
    sender, pos = _take_field(data, _HEAD.size, end)
    packet_receiver, pos = _take_field(data, pos, end)
    packet_cluster, pos = _take_field(data, pos, end)
    key_id, pos = _take_field(data, pos, end)
    if pos != end:
        raise HeartbeatRejected(RejectReason.BAD_LENGTH, f"{end - pos} stray bytes before the MAC")
    key = keys.get(key_id)
    if key is None:
        raise HeartbeatRejected(
            RejectReason.UNKNOWN_KEY, f"key id {key_id!r} is not configured here"
        )
    expected = hmac.new(key, data[:end], hashlib.sha256).digest()
    if not hmac.compare_digest(expected, data[end:]):
        raise HeartbeatRejected(RejectReason.BAD_MAC, f"key id {key_id!r}")
    # Authenticated from here on: what follows are a peer's mistakes, not an attacker's.
    try:
        packet_kind = Kind(kind)
    except ValueError:
        raise HeartbeatRejected(RejectReason.BAD_KIND, f"kind {kind}") from None
    try:
        server = check_server_name(sender)
    except ValueError as exc:
        raise HeartbeatRejected(RejectReason.BAD_SENDER, str(exc)) from None
    if packet_cluster != cluster:
        raise HeartbeatRejected(RejectReason.WRONG_CLUSTER, f"from cluster {packet_cluster!r}")
    if packet_receiver != receiver:
        raise HeartbeatRejected(
            RejectReason.WRONG_RECEIVER, f"addressed to {packet_receiver!r}, this is {receiver!r}"
        )
    # NaN and infinities fail this comparison too.
    if not (math.isfinite(timestamp) and abs(timestamp - now_wall) <= window):
        raise HeartbeatRejected(
            RejectReason.STALE_TIMESTAMP,
            f"stamped {timestamp!r}, local clock {now_wall:.3f}, window {window} s",
        )
    return Packet(
        kind=packet_kind,
        sender=server,
        cluster=packet_cluster,
        sequence=sequence,
        echo=echo,
        timestamp=timestamp,
        key_id=key_id,
        receiver=ServerName(packet_receiver),
    )


class ReplayGuard:
    """Drops every packet whose sequence is not above the highest accepted from the same
    (sender, key id). Time is the caller's monotonic clock.

    A (sender, key id) with nothing accepted for ``forget_after`` seconds is forgotten. With
    ``forget_after`` at least twice the timestamp window that is safe: any packet it sent
    before is outside the window by then, whatever the skew between the two clocks. It lets
    a sender whose wall clock was stepped back across a restart (so its new sequences start
    lower) be heard again after that long instead of never.
    """

    def __init__(self, forget_after: float) -> None:
        self._forget_after = forget_after
        self._highest: dict[tuple[ServerName, str], tuple[int, float]] = {}

    def accept(self, sender: ServerName, key_id: str, sequence: int, now: float) -> bool:
        slot = (sender, key_id)
        previous = self._highest.get(slot)
        if previous is not None:
            highest, accepted_at = previous
            if sequence <= highest and now - accepted_at <= self._forget_after:
                return False
        self._highest[slot] = (sequence, now)
        return True

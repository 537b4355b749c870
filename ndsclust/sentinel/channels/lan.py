"""The ``lan`` channel: UDP request/acknowledge heartbeats between sentinels (claim 11;
FIG. 7A process 802, FIG. 7B process 858).

Every ``interval`` the sentinel sends a heartbeat request to every address of every peer,
from each of its own bound sockets of the same address family, and answers each request it
accepts with an acknowledge. Several addresses per server make redundant rings: the peer is
heard while any one path works. Hearing a request from a peer counts as hearing it just as
an acknowledge does: both are signed by the peer's sentinel within the last ``window``
seconds and newer than anything it sent before, so either proves that sentinel is running
and reachable (the acknowledge additionally proves the path back to us).

Authentication and replay. Packets are signed with the cluster key (HMAC-SHA256, see
``heartbeat_codec``); two keys may be accepted at once while one is rotated. Each sentinel
numbers its packets with one 64-bit sequence, strictly increasing; a receiver keeps the
highest sequence accepted per (sender, key id) and drops anything not greater
(``heartbeat_codec.ReplayGuard``). The sequence starts at the wall clock in nanoseconds,
so a restarted sentinel continues above everything its previous run sent and is not taken
for a replay. If the sender's clock was stepped back across a restart its packets are
dropped as replays until the receiver forgets it, twice the timestamp window after it last
accepted one. Packets reordered between rings are dropped the same way (the newer one
already counted) but counted as ``late``, not as replays, and so are packets heard before
the directory named the peers (``before_peers``, just after start): neither makes a
``channel_counters`` warning.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence

from ndsclust.errors import ConfigError
from ndsclust.logfmt import line as logline
from ndsclust.model import ServerName
from ndsclust.sentinel.channels import (
    ChannelThread,
    HeardChannel,
    Waker,
    check_timing,
    format_address,
    log,
    os_error_name,
    parse_address,
)
from ndsclust.sentinel.heartbeat_codec import (
    DEFAULT_WINDOW,
    MAX_FIELD,
    MAX_PACKET,
    HeartbeatRejected,
    Kind,
    Packet,
    RejectReason,
    ReplayGuard,
    decode_and_verify,
    encode,
)

MIN_KEY_BYTES = 16
# Datagrams read from one socket per wake-up: a flood on one ring cannot starve the sends.
_MAX_READS = 64

SocketAddress = tuple[str, int]
# Where a datagram came from, as recvfrom gives it (IPv6 adds flow info and scope id).
ReplyAddress = tuple[str, int] | tuple[str, int, int, int]

_COUNTERS = (
    "sent",
    "send_errors",
    "received",
    "accepted",
    "acks_sent",
    "recv_errors",
    "bind_errors",
    "bad_peer_address",
    *(f"dropped_{r.value}" for r in RejectReason),
    "dropped_replay",
    "dropped_own_name",
    "dropped_unknown_sender",
    "dropped_bad_echo",
    "late",
    "before_peers",
)
# Counted, not dropped as a problem: a request overtaken by a newer one of the same sender
# (two rings, or a burst read from two sockets in turn: the newer one counted already), and
# a packet from a peer before the directory told this channel who its peers are (a sentinel
# that has just started). Neither is worth an operator's warning.
_QUIET = frozenset({"late", "before_peers"})
# Request sequences remembered per sender, to tell a late request from a replayed one.
RECENT_KEPT = 256


# Requests whose acknowledge is remembered per peer (replayed acknowledges are dropped).
ANSWERED_KEPT = 4096


class LanChannel(HeardChannel):
    name = "lan"

    def __init__(
        self,
        *,
        me: ServerName,
        cluster: str,
        bind: Sequence[str],
        keys: Mapping[str, bytes],
        send_key_id: str,
        interval: float = 0.2,
        timeout: float = 1.0,
        window: float = DEFAULT_WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        problems: list[str] = []
        binds: list[tuple[socket.AddressFamily, SocketAddress]] = []
        for i, text in enumerate(bind):
            try:
                binds.append(parse_address(text))
            except ValueError as exc:
                problems.append(f"addresses[{i}]: {exc}")
        if not bind:
            problems.append("addresses: at least one ip:port to listen on is needed")
        for what, value in (("cluster", cluster), *(("keys", key_id) for key_id in keys)):
            if len(value.encode("utf-8")) > MAX_FIELD:
                problems.append(f"{what}: {value!r} is longer than {MAX_FIELD} bytes")
        if send_key_id not in keys:
            problems.append(f"key_id: {send_key_id!r} names none of the configured keys")
        for key_id, key in keys.items():
            if len(key) < MIN_KEY_BYTES:
                problems.append(
                    f"keys.{key_id}: {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes"
                )
        check_timing(problems, interval, timeout)
        if not window > 0:
            problems.append(f"window: {window} must be a positive number of seconds")
        if problems:
            raise ConfigError("channels.lan", problems)
        self.timeout = timeout
        self._me = me
        self._cluster = cluster
        self._binds = binds
        self._keys = dict(keys)
        self._send_key_id = send_key_id
        self._interval = interval
        self._window = window
        self._monotonic = monotonic
        self._wall = wall

        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter({c: 0 for c in _COUNTERS})
        self._heard: dict[ServerName, float] = {}
        self._acked: dict[ServerName, float] = {}
        self._answered: dict[ServerName, set[int]] = {}
        # Accepted request sequences per sender, and the socket (ring) of the newest.
        self._recent: dict[ServerName, deque[int]] = {}
        self._newest_via: dict[ServerName, int] = {}
        self._peers_known = False  # set_peers was called: an unknown sender is a stranger
        self._peers: dict[ServerName, tuple[tuple[socket.AddressFamily, SocketAddress], ...]] = {}
        self._peers_given: dict[ServerName, tuple[str, ...]] = {}
        self._crashed = False

        # Owned by the thread once started; the sequence is set by start().
        self._first_sequence = 0
        self._next_sequence = 0
        self._replay = ReplayGuard(forget_after=2 * window)

        self._sockets: list[socket.socket] = []
        self._selector = selectors.DefaultSelector()
        self._waker = Waker()
        self._runner = ChannelThread("lan", self._run, self._waker)

    # -- the Channel interface ------------------------------------------------------------

    def start(self) -> None:
        self._runner.check_new()  # before any socket is bound
        for family, address in self._binds:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind(address)
            except OSError as exc:
                sock.close()
                with self._lock:
                    self._stats["bind_errors"] += 1
                log.warning(
                    logline(
                        "channel_degraded",
                        channel="lan",
                        address=format_address(address),
                        error=os_error_name(exc),
                    )
                )
                continue
            self._sockets.append(sock)
            self._selector.register(sock, selectors.EVENT_READ, data=sock)
        self._selector.register(self._waker.reader, selectors.EVENT_READ)
        # Above every sequence a previous run of this sentinel can have sent.
        self._first_sequence = self._next_sequence = time.time_ns()
        self._runner.start()

    def stop(self) -> None:
        if not self._runner.stop():
            return
        self._selector.close()
        for sock in self._sockets:
            sock.close()
        self._waker.close()

    def acknowledged(self, now: float) -> Mapping[ServerName, float]:
        """When each peer last acknowledged one of our requests: proof that what this server
        sends reaches it. Hearing a peer's own requests proves only the way in; a server
        whose packets are lost on the way out hears everyone and is heard by no one, and
        must still fence itself (a one-way partition)."""
        with self._lock:
            return dict(self._acked)

    def stats(self) -> Mapping[str, int]:
        with self._lock:
            out = dict(self._stats)
            running = self._runner.running
            out["degraded"] = int(self._crashed or (running and not self._sockets))
        return out

    # -- configuration that follows the directory ----------------------------------------

    def set_peers(self, peers: Mapping[ServerName, Sequence[str]]) -> None:
        """The peers and their heartbeat addresses, as the server entries publish them.

        Called whenever the directory changes; an address that does not parse is skipped,
        counted and logged (once per change), and the peer's other addresses still serve.
        """
        given = {
            server: tuple(addresses) for server, addresses in peers.items() if server != self._me
        }
        with self._lock:
            if given == self._peers_given:
                return
        parsed: dict[ServerName, tuple[tuple[socket.AddressFamily, SocketAddress], ...]] = {}
        bad = 0
        for server, addresses in given.items():
            good: list[tuple[socket.AddressFamily, SocketAddress]] = []
            for text in addresses:
                try:
                    good.append(parse_address(text))
                except ValueError as exc:
                    bad += 1
                    log.warning(
                        logline("bad_peer_address", channel="lan", server=server, error=exc)
                    )
            parsed[server] = tuple(good)
        with self._lock:
            self._peers_given = given
            self._peers = parsed
            self._peers_known = True
            self._stats["bad_peer_address"] += bad

    def addresses(self) -> tuple[str, ...]:
        """The addresses actually bound (a configured port 0 shows the port the kernel chose)."""
        return tuple(format_address(s.getsockname()[:2]) for s in self._sockets)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            next_send = self._monotonic()
            while not self._runner.stopping.is_set():
                now = self._monotonic()
                if now >= next_send:
                    self._send_requests()
                    next_send = now + self._interval
                for key, _ in self._selector.select(max(0.0, next_send - self._monotonic())):
                    if key.fileobj is not self._waker.reader:
                        self._receive(key.data)
        except Exception:
            # Contained: the other channels keep the peers' liveness; status shows degraded.
            log.exception(logline("channel_crashed", channel="lan"))
            with self._lock:
                self._crashed = True

    def _sequence(self) -> int:
        seq = self._next_sequence
        self._next_sequence += 1
        return seq

    def _packet(self, kind: Kind, echo: int, receiver: ServerName) -> bytes:
        packet = Packet(
            kind=kind,
            sender=self._me,
            cluster=self._cluster,
            sequence=self._sequence(),
            echo=echo,
            timestamp=self._wall(),
            key_id=self._send_key_id,
            receiver=receiver,
        )
        return encode(packet, self._keys[self._send_key_id])

    def _send(self, sock: socket.socket, data: bytes, address: ReplyAddress, counter: str) -> None:
        try:
            sock.sendto(data, address)
        except OSError:
            # Unreachable network, full buffer: this path is silent, which is what the
            # receiver will notice; nothing to do here but count it.
            with self._lock:
                self._stats["send_errors"] += 1
            return
        with self._lock:
            self._stats[counter] += 1

    def _send_requests(self) -> None:
        with self._lock:
            peers = list(self._peers.items())
        for peer, addresses in peers:
            for family, address in addresses:
                for sock in self._sockets:
                    if sock.family == family:
                        self._send(sock, self._packet(Kind.REQUEST, 0, peer), address, "sent")

    def _receive(self, sock: socket.socket) -> None:
        for _ in range(_MAX_READS):
            try:
                data, source = sock.recvfrom(MAX_PACKET + 1)
            except BlockingIOError:
                return
            except OSError:
                # Linux reports an ICMP error for an earlier send (a peer's port closed) on
                # the next receive: the path is the sender's business, keep reading.
                with self._lock:
                    self._stats["recv_errors"] += 1
                continue
            self._handle(sock, data, source)

    def _handle(self, sock: socket.socket, data: bytes, source: ReplyAddress) -> None:
        now = self._monotonic()
        with self._lock:
            self._stats["received"] += 1
        try:
            packet = decode_and_verify(
                data, self._keys, self._wall(), self._cluster, self._window, receiver=self._me
            )
        except HeartbeatRejected as exc:
            self._drop(exc.reason.value)
            return
        drop = self._check(packet, now, sock.fileno())
        if drop:
            self._drop(drop)
            return
        with self._lock:
            self._stats["accepted"] += 1
            self._heard[packet.sender] = now
            if packet.kind is Kind.ACK:
                self._acked[packet.sender] = now
        if packet.kind is Kind.REQUEST:
            self._send(
                sock, self._packet(Kind.ACK, packet.sequence, packet.sender), source, "acks_sent"
            )

    def _check(self, packet: Packet, now: float, via: int = -1) -> str | None:
        """Why an authentic packet must still be dropped, or None to accept it."""
        if packet.sender == self._me:
            return "own_name"
        with self._lock:
            known = packet.sender in self._peers
            told = self._peers_known
        if not known:
            return "unknown_sender" if told else "before_peers"
        if packet.kind is Kind.ACK:
            # An acknowledge must answer a request of this run: one echoing an earlier run's
            # sequence, or one never sent, is not an answer to anything we asked.
            if not self._first_sequence <= packet.echo < self._next_sequence:
                return "bad_echo"
            # Each request is answered once: a replayed acknowledge echoes a request already
            # answered. Acknowledges are judged by what they echo, not by the sender's
            # sequence, so late ones on a jittery path still count as proof of being heard
            # (fencing rests on them) instead of being dropped as out of order.
            with self._lock:
                answered = self._answered.setdefault(packet.sender, set())
                if packet.echo in answered:
                    return "replay"
                answered.add(packet.echo)
                if len(answered) > ANSWERED_KEPT:
                    floor = self._next_sequence - ANSWERED_KEPT
                    answered.difference_update([e for e in answered if e < floor])
            return None
        if not self._replay.accept(packet.sender, packet.key_id, packet.sequence, now):
            return self._late_or_replay(packet.sender, packet.sequence, via)
        recent = self._recent.setdefault(packet.sender, deque(maxlen=RECENT_KEPT))
        recent.append(packet.sequence)
        self._newest_via[packet.sender] = via
        return None

    def _late_or_replay(self, sender: ServerName, sequence: int, via: int) -> str:
        """A request not above the newest accepted: "late" when it came on another socket
        (ring) than the newest, was never accepted and is newer than the oldest one
        remembered (overtaken between rings); else "replay"."""
        recent = self._recent.get(sender)
        other_ring = self._newest_via.get(sender, via) != via
        if other_ring and recent and sequence > recent[0] and sequence not in recent:
            return "late"
        return "replay"

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._stats[reason if reason in _QUIET else f"dropped_{reason}"] += 1

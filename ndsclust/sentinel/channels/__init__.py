"""Liveness channels: independent ways for a sentinel to hear its peers (docs/design.md section 4).

Every channel has the shape of ``Channel``; the failure detector combines what they heard
(``ndsclust.sentinel.detector``). The channels are the edge of the sentinel: they own
sockets, files and threads, and never raise into the loop on bad input. A malformed packet
or an unreadable slot is dropped and counted in ``stats()``; a broken socket or file makes
the channel report itself degraded, and the other channels carry on.

    lan        UDP request/acknowledge heartbeats, authenticated (claim 11)
    directory  a pulse counter in the pulse database, seen through the watch (claim 44)
    disk       the drive pulse: a slot per server on shared storage (FIG. 7A, 800/804; claim 13)
    witness    reachability of a network resource: "my peer died" or "I am cut off" (claims 12, 43)
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

from ndsclust.logfmt import line as logline
from ndsclust.model import ServerName

log = logging.getLogger("ndsclust.sentinel.channels")

# How long stop() waits for a channel's thread. A thread stuck in I/O the kernel will not
# interrupt (a hung shared disk) is reported, not waited for forever.
STOP_JOIN_TIMEOUT = 1.0


class Channel(ABC):
    """One liveness channel.

    ``observe(now)`` maps each peer to the monotonic time this server last heard it on this
    channel; a peer never heard is absent. The channel says a peer is dead once ``now``
    minus that time exceeds ``timeout``. ``now`` is the loop's monotonic clock reading,
    the same clock the observations use.
    """

    name: str
    timeout: float

    @abstractmethod
    def start(self) -> None:
        """Open what the channel needs and begin hearing peers. Never raises on I/O trouble:
        the channel reports itself degraded instead."""

    @abstractmethod
    def stop(self) -> None:
        """Stop hearing peers and release everything; joins the channel's thread."""

    @abstractmethod
    def observe(self, now: float) -> Mapping[ServerName, float]:
        """Peer -> monotonic time last heard on this channel."""

    @abstractmethod
    def stats(self) -> Mapping[str, int]:
        """Counters for ``ndsclust status`` and ``doctor``: sent, received, dropped by reason,
        and ``degraded`` (1 while the channel cannot do its job)."""


class HeardChannel(Channel):
    """A channel that hears peers: ``observe`` is what its thread (or the store) recorded
    in ``_heard``, under ``_lock``."""

    _lock: threading.Lock
    _heard: dict[ServerName, float]

    def observe(self, now: float) -> Mapping[ServerName, float]:
        with self._lock:
            return dict(self._heard)


def parse_address(text: str) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """``"ip:port"`` or ``"[ipv6]:port"`` as a socket family and address.

    Only IP literals are accepted: a liveness channel must not depend on name resolution.
    Raises ValueError saying what is wrong.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not an address: write ip:port, or [ipv6]:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number from 0 to 65535")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return family, (str(ip), int(port_text))


def os_error_name(exc: OSError) -> str:
    """A log-friendly name for ``exc``: the errno symbol (``EACCES``), else its class name."""
    if exc.errno is not None and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    return type(exc).__name__


def format_address(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Waker:
    """A socket pair a channel's selector also waits on, so stop() wakes the thread at once
    instead of after the current interval."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def wake(self) -> None:
        try:
            self._writer.send(b"\0")
        except BlockingIOError:
            # The pair is already full of wake-ups: the thread will see one of them.
            return

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


def check_timing(problems: list[str], interval: float, timeout: float) -> None:
    """The rules of every channel that acts each ``interval``: add what breaks them."""
    if not interval > 0:
        problems.append(f"interval: {interval} must be a positive number of seconds")
    if not timeout > interval:
        problems.append(f"timeout: {timeout} s must exceed the interval ({interval} s)")


class ChannelThread:
    """A channel's one thread: started once, asked to end through ``stopping`` (and the
    channel's ``Waker``, if it waits on one), joined for at most ``STOP_JOIN_TIMEOUT``."""

    def __init__(
        self, channel: str, target: Callable[[], None], waker: Waker | None = None
    ) -> None:
        self._channel = channel
        self._target = target
        self._waker = waker
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def running(self) -> bool:
        """Started and not asked to stop."""
        return self._thread is not None and not self.stopping.is_set()

    def check_new(self) -> None:
        """RuntimeError if the thread was started: a channel is started once."""
        if self._thread is not None:
            raise RuntimeError(f"the {self._channel} channel was already started; make a new one")

    def start(self) -> None:
        self.check_new()
        self._thread = threading.Thread(
            target=self._target, name=f"ndsclust-{self._channel}", daemon=False
        )
        self._thread.start()

    def stop(self, **where: object) -> bool:
        """End the thread. True when the channel may release what the thread used: it has
        ended, or never ran. False when it was stopped already, or is stuck in I/O the
        kernel will not interrupt (a hung shared disk; logged, with ``where``): it ends when
        the kernel returns, and what it uses is left to it."""
        if self.stopping.is_set():
            return False
        self.stopping.set()
        if self._waker is not None:
            self._waker.wake()
        if self._thread is None:
            return True
        self._thread.join(STOP_JOIN_TIMEOUT)
        if self._thread.is_alive():
            log.error(logline("channel_stop_timeout", channel=self._channel, **where))
            return False
        return True

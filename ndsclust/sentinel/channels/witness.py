"""The ``witness`` channel: can this server still reach a named network resource? (claims 12, 43)

The patent detects a failure by "monitoring communications between the first server and a
network resource". We use it the other way round, to tell "my peer died" from "I am cut
off": every ``interval`` the sentinel opens a TCP connection to ``address`` (a router,
a file server, the directory's host: something every server should always reach) and
closes it at once. The resource is reachable while a connection completed within the last
``timeout`` seconds. Only a completed connection counts: a refused one means nothing
listens there, which is not the resource the operator named.

The witness hears no peer: ``observe()`` always returns an empty mapping and the failure
detector does not use it. Fencing asks ``reachable(now)``
(``ndsclust.sentinel.detector.isolated``).
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

from ndsclust.errors import ConfigError
from ndsclust.logfmt import line as logline
from ndsclust.model import ServerName
from ndsclust.sentinel.channels import Channel, ChannelThread, Waker, log, parse_address

_COUNTERS = ("probes", "successes", "refused", "timeouts", "errors")


class WitnessChannel(Channel):
    name = "witness"

    def __init__(
        self,
        *,
        address: str,
        interval: float = 0.5,
        timeout: float = 2.0,
        connect_timeout: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        problems: list[str] = []
        if connect_timeout is None:
            # A probe must end before the next one is due.
            connect_timeout = min(0.5, interval)
        try:
            self._family, self._address = parse_address(address)
        except ValueError as exc:
            problems.append(f"address: {exc}")
        if not interval > 0:
            problems.append(f"interval: {interval} must be a positive number of seconds")
        if not timeout > interval:
            problems.append(f"timeout: {timeout} s must exceed the interval ({interval} s)")
        if not 0 < connect_timeout <= interval:
            problems.append(
                f"connect_timeout: {connect_timeout} s must be positive and at most "
                f"the interval ({interval} s)"
            )
        if problems:
            raise ConfigError("channels.witness", problems)
        self.timeout = timeout
        self._text = address
        self._interval = interval
        self._connect_timeout = connect_timeout
        self._monotonic = monotonic

        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter({c: 0 for c in _COUNTERS})
        self._last_success: float | None = None
        self._crashed = False
        self._was_reachable: bool | None = None

        self._waker = Waker()
        self._runner = ChannelThread("witness", self._run, self._waker)

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        if self._runner.stop():
            self._waker.close()

    def observe(self, now: float) -> Mapping[ServerName, float]:
        """Always empty: the witness hears no peer (see the module docstring)."""
        return {}

    def reachable(self, now: float) -> bool:
        with self._lock:
            last = self._last_success
        return last is not None and now - last <= self.timeout

    def stats(self) -> Mapping[str, int]:
        reachable = self.reachable(self._monotonic())
        with self._lock:
            out = dict(self._stats)
            out["reachable"] = int(reachable)
            out["degraded"] = int(self._crashed)
        return out

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._runner.stopping.is_set():
                started = self._monotonic()
                outcome = self._probe()
                now = self._monotonic()
                with self._lock:
                    self._stats["probes"] += 1
                    self._stats[outcome] += 1
                    if outcome == "successes":
                        self._last_success = now
                self._log_change(now)
                self._runner.stopping.wait(max(0.0, started + self._interval - now))
        except Exception:
            log.exception(logline("channel_crashed", channel="witness"))
            with self._lock:
                self._crashed = True

    def _probe(self) -> str:
        """One connection attempt; the name of the counter its outcome goes to."""
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(self._address)
            if code == errno.EINPROGRESS:
                with selectors.DefaultSelector() as selector:
                    selector.register(sock, selectors.EVENT_WRITE)
                    selector.register(self._waker.reader, selectors.EVENT_READ)
                    ready = [key.fileobj for key, _ in selector.select(self._connect_timeout)]
                if sock not in ready:
                    return "timeouts"
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError:
            return "errors"
        finally:
            sock.close()
        if code == 0:
            return "successes"
        return "refused" if code == errno.ECONNREFUSED else "errors"

    def _log_change(self, now: float) -> None:
        reachable = self.reachable(now)
        if reachable != self._was_reachable:
            if reachable:
                log.info(logline("witness_reachable", channel="witness", address=self._text))
            else:
                log.warning(logline("witness_unreachable", channel="witness", address=self._text))
        self._was_reachable = reachable

"""The one line framer: a byte stream cut into lines ending in ``\\n``, with a bound.

Every line-based stream of ndsclust goes through it: the control socket
(``ndsclust.control_protocol``, both ends), the lease guard's socket
(``ndsclust.sentinel.guard_protocol``, both ends) and the output of the programs the guard
runs. It never holds more than ``limit`` bytes of an unfinished line. What happens to a
longer line is the stream's choice:

- a protocol stream drops it (``split=False``): the line is skipped up to its newline,
  and ``too_long`` counts the lines skipped by the last ``feed`` so that the caller can
  refuse them or end the stream. The framer is back in step after that newline, since no
  message of either protocol holds a raw newline (JSON escapes it; guard lines are made
  one line);
- program output keeps it (``split=True``): it comes out in pieces of ``limit`` bytes.

``receive`` and ``send_queued`` read and write a socket the way all of them do.
"""

from __future__ import annotations

import socket


class LineFramer:
    """Lines of at most ``limit`` bytes (newline excluded) from a byte stream."""

    def __init__(self, limit: int, *, split: bool = False) -> None:
        if limit < 1:
            raise ValueError(f"line limit {limit!r} must be at least 1 byte")
        self._buf = bytearray()
        self._limit = limit
        self._split = split
        self._skipping = False  # inside a line too long to keep (split=False)
        self.too_long = 0  # lines the last feed() skipped for being too long

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines ``data`` finishes, without their newlines."""
        self.too_long = 0
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            end = self._buf.find(b"\n", start, start + self._limit + 1)
            if end >= 0:
                if self._skipping:
                    self._skipping = False
                else:
                    lines.append(bytes(self._buf[start:end]))
                start = end + 1
            elif len(self._buf) - start < self._limit + (not self._split):
                break  # what is held may still end within the limit
            elif self._split:
                # A full piece goes out at once: never more than the limit is held.
                lines.append(bytes(self._buf[start : start + self._limit]))
                start += self._limit
            else:
                # No newline within the limit: the line is dropped, up to its newline.
                if not self._skipping:
                    self._skipping = True
                    self.too_long += 1
                newline = self._buf.find(b"\n", start)
                if newline < 0:
                    start = len(self._buf)
                    break
                self._skipping = False
                start = newline + 1
        del self._buf[:start]
        return lines

    @property
    def held(self) -> int:
        """Bytes of an unfinished line held now (at most ``limit``)."""
        return len(self._buf)

    def rest(self) -> bytes:
        """What is left when the stream ends without a final newline; the framer is empty then."""
        rest = b"" if self._skipping else bytes(self._buf)
        self._buf.clear()
        self._skipping = False
        return rest


def receive(sock: socket.socket, size: int = 65536) -> bytes | None:
    """What a socket holds now: None when a non-blocking one has nothing yet, ``b""`` at its
    end or when it broke (either way nothing more will come)."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def send_queued(sock: socket.socket, out: bytearray) -> bool:
    """Send from ``out`` what a non-blocking socket takes now, and remove it from ``out``.

    False when the socket broke (the peer is gone); ``out`` is cleared then.
    """
    while out:
        try:
            sent = sock.send(out, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return True
        except OSError:
            out.clear()
            return False
        del out[:sent]
    return True

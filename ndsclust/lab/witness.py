"""The lab's witness (claims 12, 43): a TCP listener of the lab's own process that accepts
and closes every connection, which is all the witness channel probes (it counts only
completed connections). ``ndsclust.lab.cluster`` starts one with ``witness=True``."""

from __future__ import annotations

import socket
import threading

WITNESS_BACKLOG = 64
WITNESS_INTERVAL = 0.1
WITNESS_TIMEOUT = 0.35


class Witness:
    """A TCP listener that accepts and closes every connection. Runs on a daemon thread."""

    def __init__(self, host: str) -> None:
        self._sock = socket.socket(socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(WITNESS_BACKLOG)
        self._sock.settimeout(0.2)
        self.address = f"{host}:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="lab-witness", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

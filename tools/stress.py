#!/usr/bin/env python3
"""Load this machine the way a busy server is loaded, for as long as a ``with`` lasts.

``Stress()`` starts two kinds of load and stops both when it ends:

- a busy process per core (``os.cpu_count()`` by default): ``python3 -S -c 'while 1:
  pass'`` at normal priority, all in one process group of their own, so they compete with
  the sentinels (but not with their lease guards, which run at real-time priority) for
  every core;
- another cluster competing for the CPU: a ``LabCluster`` on loopback (no namespaces; 3
  servers and 4 sample programs by default, with the lab's fast 0.1 s heartbeats), in a
  temporary directory of its own, started first and stopped at the end.

Nothing outlives it: the burners are SIGKILLed as a group and the cluster stopped in
``stop()``, which ``__exit__`` runs, which an ``atexit`` handler runs if the program ends
without it, and which SIGTERM and SIGHUP reach too (while a ``Stress`` runs they raise
``SystemExit``, so every ``finally`` runs); the burners also die with this process
(PR_SET_PDEATHSIG), as the lab's sentinels and providers do.

    with Stress():
        run_the_trials()

    python tools/stress.py --seconds 60      # the load alone, beside a manual test
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.cluster import SERVER_NAMES, LabCluster, descendants

BURN = "while 1: pass"
PR_SET_PDEATHSIG = 1
REAP_TIMEOUT = 5.0
START_TIMEOUT = 60.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
Out = Callable[[str], None]


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Stress:
    """CPU burners and a competing lab cluster; see the module docstring. Context manager;
    ``start``/``stop`` work too (``stop`` is idempotent)."""

    def __init__(
        self,
        *,
        burners: int | None = None,
        servers: int = 3,
        apps: int = 4,
        cluster: bool = True,
        out: Out | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.burners = (os.cpu_count() or 1) if burners is None else burners
        self.servers = servers
        self.apps = apps
        self.cluster = cluster
        self.out = out
        self.start_timeout = start_timeout
        self.lab: LabCluster | None = None
        self.pgid: int | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._old_handlers: dict[int, Any] = {}
        self._running = False

    def __enter__(self) -> Stress:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _say(self, text: str) -> None:
        if self.out is not None:
            self.out(text)

    def start(self) -> None:
        """The competing cluster first (it starts faster on an idle machine), then the
        burners; on any failure everything started is stopped again."""
        if self._running:
            raise RuntimeError("this Stress is already running")
        self._running = True
        atexit.register(self.stop)
        self._catch_signals()
        try:
            if self.cluster:
                self._start_cluster()
            self._start_burners()
        except BaseException:
            self.stop()
            raise
        self._say(
            f"stress: on burners={len(self._procs)} "
            f"cluster={self.servers if self.lab else 0} servers/"
            f"{self.apps if self.lab else 0} apps"
        )

    def _catch_signals(self) -> None:
        def stop_now(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in STOP_SIGNALS:
            try:
                self._old_handlers[sig] = signal.signal(sig, stop_now)
            except ValueError:  # not the main thread: atexit and __exit__ still stop it
                break

    def _restore_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old)
            except ValueError:
                pass
        self._old_handlers.clear()

    def _start_cluster(self) -> None:
        n = self.servers
        lab = LabCluster(n, log_level="warning")
        self.lab = lab
        lab.start()
        names = list(SERVER_NAMES[:n])
        tags = [f"stress{k}" for k in range(self.apps)]
        for k, tag in enumerate(tags):
            primary = names[k % n]
            lab.add_app(tag, primary, [s for s in names if s != primary])
        for k, tag in enumerate(tags):
            lab.wait_running(tag, names[k % n], timeout=self.start_timeout)

    def _start_burners(self) -> None:
        for _ in range(self.burners):
            group = 0 if self.pgid is None else self.pgid
            p = subprocess.Popen(
                [sys.executable, "-S", "-c", BURN],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                process_group=group,
                preexec_fn=_die_with_parent,
            )
            self._procs.append(p)
            if self.pgid is None:
                self.pgid = p.pid

    def pids(self) -> list[int]:
        """Every process the load consists of: burners, and the cluster's sentinels, their
        programs and its providers."""
        out = [p.pid for p in self._procs if p.poll() is None]
        if self.lab is not None:
            for server in self.lab.servers.values():
                if server.pid is not None and server.running:
                    out += [server.pid, *descendants(server.pid)]
            out += [p.pid for p in self.lab.directory.providers if p.pid is not None and p.running]
        return out

    def stop(self) -> None:
        """SIGKILL the burners' group and wait for each; stop the cluster (idempotent)."""
        if not self._running:
            return
        self._running = False
        atexit.unregister(self.stop)
        try:
            if self.pgid is not None:
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for p in self._procs:
                try:
                    p.wait(timeout=REAP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._say(f"stress: burner {p.pid} still there after SIGKILL")
            self._procs.clear()
            self.pgid = None
        finally:
            try:
                if self.lab is not None:
                    self.lab.stop()
                    self.lab = None
            finally:
                self._restore_signals()
                self._say("stress: off")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--burners", type=int, default=None, help="default: one per core")
    p.add_argument("--servers", type=int, default=3, help="of the competing cluster")
    p.add_argument("--apps", type=int, default=4, help="of the competing cluster")
    p.add_argument("--no-cluster", action="store_true", help="burners only")
    a = p.parse_args(argv)
    with Stress(
        burners=a.burners,
        servers=a.servers,
        apps=a.apps,
        cluster=not a.no_cluster,
        out=lambda s: print(s, flush=True),
    ):
        time.sleep(max(0.0, a.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

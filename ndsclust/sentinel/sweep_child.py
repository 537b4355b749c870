"""One anti-entropy sweep in a short-lived child process, so that the sentinel stays small.

A sweep at 10 000 entries peaks at 48-64 MB resident in the process that makes it, and the
allocator keeps some of it afterwards (docs/platform.md fact 34); the sentinel's goal is
40 MB. ``ChildSweep.sweep`` therefore runs ``python -m ndsclust.sentinel.sweep_child``, hands
it the job (providers, identity, base, the write provider, this server's name) as JSON on
its standard input, and reads the ``Outcome`` back as JSON from its standard output. The
child logs its repairs to the standard error it shares with the sentinel and records their
events itself, as this server (``repair``, ``repair_failed``), through the write provider.
A child that does not end within ``timeout`` seconds is killed; that, or a child that fails,
is an error the sweeper logs, and the next sweep is the next one due.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ndsclust.errors import StoreError
from ndsclust.ldapstore.antientropy import Action, Done, Outcome, Repair, Repairer
from ndsclust.ldapstore.connection import Credentials, Providers
from ndsclust.ldapstore.store import Store

log = logging.getLogger("ndsclust.antientropy")

CHILD_TIMEOUT = 300.0
PR_SET_PDEATHSIG = 1
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"  # as ndsclust/sentinel/daemon.py


@dataclass(frozen=True, slots=True)
class Job:
    """What the child needs: everything but the write provider, which is asked per sweep."""

    uris: tuple[str, ...]
    creds: Credentials
    base: str
    suffix: str
    server: str
    log_level: str = "INFO"


def outcome_to_json(out: Outcome) -> dict[str, Any]:
    data = dataclasses.asdict(out)
    for d in data["done"]:
        d["repair"]["action"] = d["repair"]["action"].value
    return data


def outcome_from_json(data: dict[str, Any]) -> Outcome:
    def values(v: dict[str, list[str]] | None) -> dict[str, tuple[str, ...]] | None:
        return None if v is None else {a: tuple(vs) for a, vs in v.items()}

    done = tuple(
        Done(
            Repair(
                d["repair"]["dn"], Action(d["repair"]["action"]), tuple(d["repair"]["providers"])
            ),
            d["provider"],
            values(d["before"]),
            values(d["after"]),
            bool(d["ok"]),
            d["note"],
        )
        for d in data["done"]
    )
    return Outcome(
        held=data["held"],
        differing=tuple(data["differing"]),
        done=done,
        still=tuple((dn, tuple(where)) for dn, where in data["still"]),
        read_s=float(data["read_s"]),
        entries=int(data["entries"]),
    )


class ChildSweep:
    """``Sweep`` (ndsclust/sentinel/antientropy.py) made by a child process per sweep."""

    def __init__(
        self,
        job: Job,
        write: Callable[[], str | None],
        *,
        timeout: float = CHILD_TIMEOUT,
        python: str = sys.executable,
    ) -> None:
        self.job, self.write, self.timeout, self.python = job, write, timeout, python
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    def sweep(self) -> Outcome:
        write = self.write()
        if write is None:
            return Outcome(held="no write provider")
        request = {**dataclasses.asdict(self.job), "write": write}
        with self._lock:
            if self._closed:
                return Outcome(held="stopping")
            # In the sentinel's process group, so that what stops the group stops it too;
            # it dies with the sentinel's thread that started it (``main``).
            self._proc = proc = subprocess.Popen(
                [self.python, "-m", "ndsclust.sentinel.sweep_child", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        try:
            out, _ = proc.communicate(json.dumps(request).encode(), timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise StoreError(f"the sweep process took longer than {self.timeout:.0f}s") from None
        finally:
            with self._lock:
                self._proc = None
        if self._closed:
            return Outcome(held="stopping")
        if proc.returncode != 0:
            raise StoreError(f"the sweep process exited {proc.returncode} (its log says why)")
        return outcome_from_json(json.loads(out))

    def interrupt(self) -> None:
        """Kill a sweep under way (the sentinel is stopping); no sweep starts after it."""
        with self._lock:
            self._closed = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def close(self) -> None:
        self.interrupt()


def run_job(request: dict[str, Any]) -> Outcome:
    creds = Credentials(**request["creds"])
    uris = tuple(request["uris"])
    write = str(request["write"])
    store = Store(
        Providers([write] + [u for u in uris if u != write], creds),
        request["suffix"],
        base=request["base"],
    )
    server = str(request["server"])
    rep = Repairer(
        uris=uris,
        creds=creds,
        base=request["base"],
        suffix=request["suffix"],
        write=lambda: write,
        # The sentinel's own recorder prunes the audit trail; a sweep only adds to it.
        record=lambda kind, text: store.record_event(kind, server=server, text=text, prune=False),
    )
    try:
        return rep.sweep()
    finally:
        rep.close()
        store.close()


def die_with_parent(parent: int) -> bool:
    """SIGKILL this process when the thread that started it ends (a sentinel SIGKILLed in
    the middle of a sweep leaves no sweep behind); False when the parent is gone already."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    return os.getppid() == parent


def main() -> int:
    if len(sys.argv) > 1 and not die_with_parent(int(sys.argv[1])):
        return 1
    request = json.loads(sys.stdin.read())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(str(request.get("log_level", "INFO")).upper())
    out = run_job(request)
    sys.stdout.write(json.dumps(outcome_to_json(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

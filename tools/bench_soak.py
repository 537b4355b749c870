#!/usr/bin/env python3
"""False failovers on a healthy cluster: a soak with no fault, optionally under load.

    tools/bench_soak.py [--timings deploy/sentinel.example.yaml] [--minutes 10] [--stress]
                        [--pause-sentinel SECONDS]

A 3-server namespace lab (``LabCluster(network=NetLab)``) runs with the timings of a sentinel
configuration file (``tools.timings``) and one sample program per server, each on
its primary. Then, for ``--minutes``, nothing is injected: with ``--stress`` the machine
is loaded meanwhile (``tools/stress.py``: a CPU burner per core and a second lab cluster),
and with ``--pause-sentinel S`` one sentinel (each server's in turn) is SIGSTOPped for S
seconds every minute, ``PAUSE_AT`` seconds into it, then SIGCONTed: a stall it must
survive. With S below ``timeouts.lease`` its programs keep running (their lease guard,
a process of its own, sees renewals resume in time) and with S below
``timeouts.failover`` no peer declares it dead: nothing may move.

Every sign of a failover is counted, from the moment the programs run until one failover
timeout after the soak (so a move already under way shows):

- a change of an application's host in the directory (polled every ``POLL`` seconds);
- an ``event=failover``, ``event=claim`` or ``event=fenced`` line in any sentinel's log;
- a program restart: a copy of an application in the ledger beyond the one running when
  the soak began (``ndsclust.ledger.lives``).

``false_failovers`` is their sum; ``fenced`` and ``restarts`` are two of its parts. The
last line is exactly

    soak: minutes=<m> stress=<on|off> pause_s=<s> false_failovers=<n> fenced=<n> \\
restarts=<n> timings=<file>

and the exit status is 1 when false_failovers > 0 (2 when the lab could not be set up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from ndsclust.errors import NdsclustError
from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import LabError
from ndsclust.ledger import lives
from ndsclust.model import ServerName, Tag
from tools.faults.harness import log_lines_since, log_marks
from tools.netns import NetLab, cleanup_stale
from tools.stress import Stress
from tools.timings import Timings, read_timings

SERVERS = 3
POLL = 0.5
PAUSE_AT = 10.0  # seconds into each minute a sentinel is paused
PAUSE_MAX = 45.0  # a pause ends within its minute, before the next one
SHOW_LINES = 20
DEFAULT_TIMINGS = "deploy/sentinel.example.yaml"
SIGNS = re.compile(rb"event=(failover|claim|fenced)(?=\s|$)")
Out = Callable[[str], None]


@dataclass
class Count:
    host_changes: int = 0
    failover_lines: int = 0
    claim_lines: int = 0
    fenced: int = 0
    restarts: int = 0
    directory_errors: int = 0
    seen: list[str] = field(default_factory=list)  # what was counted, for the report

    @property
    def false_failovers(self) -> int:
        return (
            self.host_changes + self.failover_lines + self.claim_lines + self.fenced + self.restarts
        )


def _log_signs(lab: LabCluster, marks: dict[str, int], count: Count) -> None:
    for name, line in log_lines_since(lab, marks):
        m = SIGNS.search(line)
        if not m:
            continue
        kind = m.group(1).decode()
        if kind == "failover":
            count.failover_lines += 1
        elif kind == "claim":
            count.claim_lines += 1
        else:
            count.fenced += 1
        count.seen.append(f"log {name} {line.decode(errors='replace')[:240]}")


class Soak:
    def __init__(self, lab: LabCluster, tags: Sequence[str]) -> None:
        self.lab = lab
        self.tags = list(tags)
        self.count = Count()
        self.hosts: dict[str, str | None] = {}
        self.paused: int | None = None

    def hosts_now(self) -> dict[str, str | None] | None:
        try:
            apps = self.lab.store().apps()[0]
        except NdsclustError as e:
            self.count.directory_errors += 1
            if self.count.directory_errors <= 3:
                self.count.seen.append(f"directory read failed (not counted): {e}")
            return None
        out: dict[str, str | None] = {}
        for t in self.tags:
            app = apps.get(Tag(t))
            out[t] = str(app.host) if app is not None and app.host else None
        return out

    def poll(self) -> None:
        now = self.hosts_now()
        if now is None:
            return
        for tag, host in now.items():
            if host != self.hosts.get(tag):
                self.count.host_changes += 1
                self.count.seen.append(
                    f"host of {tag}: {self.hosts.get(tag) or '-'} -> "
                    f"{host or '-'} at {time.monotonic():.3f}"
                )
                self.hosts[tag] = host

    def pause(self, name: ServerName) -> bool:
        server = self.lab.servers[name]
        if server.pid is None or not server.running:
            return False
        os.kill(server.pid, signal.SIGSTOP)
        self.paused = server.pid
        return True

    def resume(self) -> bool:
        if self.paused is None:
            return False
        try:
            os.kill(self.paused, signal.SIGCONT)
        except ProcessLookupError:
            pass
        self.paused = None
        return True

    def soak(self, seconds: float, pause_s: float, tail: float, out: Out) -> None:
        """Poll for ``seconds`` (pausing a sentinel every minute), then ``tail`` more."""
        names = list(self.lab.servers)
        began = time.monotonic()
        end = began + seconds
        # (when, whose): minute m pauses server m mod n, PAUSE_AT s into it, if it ends in time.
        pauses = [
            (began + 60 * m + PAUSE_AT, names[m % len(names)])
            for m in range(int(seconds // 60) + 1)
            if pause_s > 0 and began + 60 * m + PAUSE_AT + pause_s < end
        ]
        resume_at = 0.0
        reported = 0
        try:
            while (now := time.monotonic()) < end + tail:
                if self.paused is not None and now >= resume_at and self.resume():
                    out("resumed it")
                if self.paused is None and pauses and now >= pauses[0][0]:
                    at, name = pauses.pop(0)
                    if self.pause(name):
                        resume_at = at + pause_s
                        out(f"paused the sentinel of {name} for {pause_s:g}s")
                self.poll()
                if (now - began) // 60 > reported and now < end:
                    reported += 1
                    out(
                        f"minute={reported} host_changes={self.count.host_changes} "
                        f"restarts={self._restarts()}"
                    )
                time.sleep(min(POLL, max(0.01, (resume_at - now) if self.paused else POLL)))
        finally:
            self.resume()

    def _restarts(self) -> int:
        copies = sum(1 for life in lives(self.lab.ledger_lines()) if life.tag in self.tags)
        return copies - len(self.tags)


def run(timings: Timings, minutes: float, stress: bool, pause_s: float, out: Out = print) -> Count:
    failover = timings.failover
    cleanup_stale()
    lab = LabCluster(SERVERS, network=NetLab, **timings.lab_options())
    try:
        lab.start()
        names = list(lab.servers)
        tags = [f"soak{k}" for k in range(len(names))]
        for k, tag in enumerate(tags):
            lab.add_app(tag, names[k], [s for s in names if s != names[k]])
        for k, tag in enumerate(tags):
            lab.wait_running(tag, names[k], timeout=60 + 3 * failover)
        soak = Soak(lab, tags)
        marks = log_marks(lab)
        copies = [life for life in lives(lab.ledger_lines()) if life.tag in tags]
        if len(copies) != len(tags):
            raise LabError(f"{len(copies)} copies of {len(tags)} programs before the soak")
        soak.poll()
        soak.count.host_changes = 0
        soak.count.seen.clear()
        with Stress(out=out) if stress else contextlib.nullcontext():
            soak.soak(minutes * 60, pause_s, failover, out)
        soak.count.restarts = soak._restarts()
        _log_signs(lab, marks, soak.count)
        before = {(life.server, life.pid, life.tag) for life in copies}
        for life in lives(lab.ledger_lines()):
            if life.tag in tags and (life.server, life.pid, life.tag) not in before:
                soak.count.seen.append(
                    f"copy of {life.tag} on {life.server} pid {life.pid} from {life.start:.3f}"
                )
        return soak.count
    finally:
        lab.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--timings",
        metavar="FILE",
        default=DEFAULT_TIMINGS,
        help=f"sentinel configuration whose timings the lab uses (default {DEFAULT_TIMINGS})",
    )
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument(
        "--stress", action="store_true", help="load the machine meanwhile (tools/stress.py)"
    )
    p.add_argument(
        "--pause-sentinel",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="SIGSTOP one sentinel for this long every minute (default 0: never)",
    )
    a = p.parse_args(argv)
    if not 0 <= a.pause_sentinel <= PAUSE_MAX:
        p.error(f"--pause-sentinel {a.pause_sentinel:g}: from 0 to {PAUSE_MAX:g} seconds")
    if a.minutes <= 0:
        p.error("--minutes must be positive")
    try:
        timings = read_timings(a.timings)
    except LabError as e:
        p.error(str(e))

    def stop_now(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_now)
    print(timings.line(), flush=True)
    try:
        count = run(
            timings, a.minutes, a.stress, a.pause_sentinel, out=lambda s: print(s, flush=True)
        )
    except NdsclustError as e:
        print(f"soak: could not set the lab up: {e}", file=sys.stderr, flush=True)
        return 2
    for line in count.seen[:SHOW_LINES]:
        print(f"  {line}")
    if len(count.seen) > SHOW_LINES:
        print(f"  ... and {len(count.seen) - SHOW_LINES} more")
    print(
        f"soak: host_changes={count.host_changes} failover_lines={count.failover_lines} "
        f"claim_lines={count.claim_lines} directory_errors={count.directory_errors}"
    )
    print(
        f"soak: minutes={a.minutes:g} stress={'on' if a.stress else 'off'} "
        f"pause_s={a.pause_sentinel:g} false_failovers={count.false_failovers} "
        f"fenced={count.fenced} restarts={count.restarts} timings={a.timings}",
        flush=True,
    )
    return 1 if count.false_failovers else 0


if __name__ == "__main__":
    sys.exit(main())

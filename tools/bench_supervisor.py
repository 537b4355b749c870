"""Benchmark the supervisor and its one lease guard (claim 57, docs/design.md sections 4 and 6).

Measures, on this machine:

- start latency: from ``Supervisor.start()`` to the guard's ``started`` report (the pid
  in ``table()``) and to the program's first line of output, for ``/bin/echo``;
- mass start: ``--starts`` programs (``/bin/sleep 1000``) started at once, as when a
  thousand applications fail over to one server: time until every one runs, and the
  guard's memory and descriptors with all of them running.

Usage: ``python tools/bench_supervisor.py [--starts 1000] [--latency-runs 50]``.
The last line is ``supervisor: starts=<n> all_started_ms=<n>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ndsclust.model import ServerName, Tag
from ndsclust.sentinel.procs import ProcState
from ndsclust.sentinel.supervisor import Supervisor

POLL_PAUSE = 0.0002  # seconds between two polls while waiting


class Watcher(logging.Handler):
    """Notes when each tag's first output line was logged; counts programs running and exited."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}
        self.running = 0
        self.exited = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("event=output tag="):
            tag = message.split()[1].removeprefix("tag=")
            self.at.setdefault(tag, time.monotonic())
        elif message.startswith("event=program_running "):
            self.running += 1
        elif message.startswith("event=program_exited "):
            self.exited += 1


def wait(sup: Supervisor, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_supervisor: not done within {timeout} s")
        sup.renew_leases()
        sup.poll()
        time.sleep(POLL_PAUSE)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def latency(sup: Supervisor, outputs: Watcher, runs: int) -> None:
    started_ms: list[float] = []
    output_ms: list[float] = []
    for i in range(runs):
        tag = Tag(f"lat{i}")
        t0 = time.monotonic()
        sup.start(tag, ["/bin/echo", "hello"])
        wait(sup, lambda: sup.table()[tag].pid is not None, 10.0)
        started_ms.append((time.monotonic() - t0) * 1000)
        wait(sup, lambda: tag in outputs.at, 10.0)
        output_ms.append((outputs.at[tag] - t0) * 1000)
        wait(sup, lambda: sup.table()[tag].state is ProcState.EXITED, 10.0)
        sup.forget(tag)
    print(
        f"start_to_started_ms: p50={statistics.median(started_ms):.2f} "
        f"p90={percentile(started_ms, 0.9):.2f} max={max(started_ms):.2f} runs={runs}"
    )
    print(
        f"start_to_first_output_ms: p50={statistics.median(output_ms):.2f} "
        f"p90={percentile(output_ms, 0.9):.2f} max={max(output_ms):.2f} runs={runs}"
    )


def guard_figures(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
    return f"guard_rss_kb={rss} guard_fds={len(os.listdir(f'/proc/{pid}/fd'))}"


def mass_start(sup: Supervisor, watcher: Watcher, count: int) -> int:
    tags = [Tag(f"app{i}") for i in range(count)]
    before = watcher.running + watcher.exited
    t0 = time.monotonic()
    for tag in tags:
        sup.start(tag, ["/bin/sleep", "1000"])
    queued_ms = (time.monotonic() - t0) * 1000
    # Counting log lines, not scanning table(), keeps the waiting cheap: the machine's
    # cores belong to the guard and the programs here.
    wait(sup, lambda: watcher.running + watcher.exited - before >= count, 120.0)
    all_ms = round((time.monotonic() - t0) * 1000)
    table = sup.table()
    failed = [t for t in tags if table[t].state is not ProcState.RUNNING]
    if failed:
        raise SystemExit(
            f"bench_supervisor: {len(failed)} programs did not start, "
            f"e.g. {failed[0]}: {table[failed[0]].reason}"
        )
    first = table[tags[0]].pid
    assert first is not None
    guard = int(Path(f"/proc/{first}/stat").read_text().rpartition(")")[2].split()[1])
    print(
        f"mass_start: starts={count} start_calls_ms={queued_ms:.0f} all_started_ms={all_ms} "
        f"{guard_figures(guard)}"
    )
    t1 = time.monotonic()
    sup.stop_all(0.0)
    wait(sup, lambda: all(info.state is ProcState.EXITED for info in sup.table().values()), 120.0)
    print(f"mass_stop: stops={count} all_exited_ms={(time.monotonic() - t1) * 1000:.0f}")
    return all_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=1000)
    parser.add_argument("--latency-runs", type=int, default=50)
    args = parser.parse_args()
    logger = logging.getLogger("bench.supervisor")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    outputs = Watcher()
    logger.addHandler(outputs)

    t0 = time.monotonic()
    with Supervisor(ServerName("bench"), lease_timeout=5.0, logger=logger) as sup:
        sup.start(Tag("first"), ["/bin/true"])
        wait(sup, lambda: sup.table()[Tag("first")].state is ProcState.EXITED, 30.0)
        print(
            f"construction_to_first_exit_ms: {(time.monotonic() - t0) * 1000:.0f} "
            "(includes the guard's one Python start-up)"
        )
        latency(sup, outputs, args.latency_runs)
        all_ms = mass_start(sup, outputs, args.starts)
    print(f"supervisor: starts={args.starts} all_started_ms={all_ms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

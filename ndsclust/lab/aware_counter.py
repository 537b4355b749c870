#!/usr/bin/env python3
"""A cluster-aware example program: a counter that processes numbered items, once each,
across failovers and failbacks. It uses every call of ``ndsclust.aware``.

    python -m ndsclust.lab.aware_counter --output FILE --tag T --primary alpha --backups beta

It registers its entry (the command it registers is this one without ``--socket``); a copy
started by hand stops there (FIG. 6 first start: the sentinel runs it from now on). A copy
the sentinel started waits in ``wait_until_host``, reads the marker (the last item
processed), then processes items marker+1, marker+2, ... one every ``--interval`` seconds
until the sentinel asks it to unload, which it does after the item in hand, with the
marker saved, exiting 0.

Output, appended to ``--output`` in single O_APPEND writes (copies on several servers of
one machine can share the file, like the sample program's ledger)::

    <server> <pid> <tag> waiting <monotonic>          loaded and prepared (``--warmup``
                                                      seconds); paused until granted the start
    <server> <pid> <tag> start <monotonic>            granted: the active copy from here
    <server> <pid> <tag> resume <marker> <monotonic>  the marker it continues from
    <server> <pid> <tag> item <n> <monotonic>         item n processed
    <server> <pid> <tag> stop <monotonic>             unloaded cleanly, marker saved

``start`` and ``stop`` are ledger lines (``ndsclust.ledger``); ``ledger_lines`` turns the
item lines into ticks so that the life of a copy killed without a stop line ends at its
last item.

Order: process, then mark. Each item is written, then the marker is swapped to its
number. On a clean hand-over (unload request, then the program stops after the item in
hand with its marker saved) the next copy starts at marker+1: no item twice, none
skipped. A SIGKILL between the two steps leaves item n processed and the marker at n-1:
the next copy processes n again (one duplicate, never a gap), and so does the loss of a
marker write that a dying provider had acknowledged but not yet replicated. Marking first
would turn each of those into a skipped item, which nobody can detect afterwards; a
duplicate carries its number and can be dropped by whoever reads the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ndsclust import aware

MODULE = "ndsclust.lab.aware_counter"


@dataclass(frozen=True, slots=True)
class Item:
    server: str
    pid: int
    n: int
    t: float


def _fields(lines: Iterable[str], tag: str, kind: str) -> list[list[str]]:
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 6 and parts[2] == tag and parts[3] == kind:
            out.append(parts)
    return out


def items(lines: Iterable[str], tag: str) -> list[Item]:
    """The items of ``tag`` in the order they were written."""
    return [Item(p[0], int(p[1]), int(p[4]), float(p[5])) for p in _fields(lines, tag, "item")]


def resumes(lines: Iterable[str], tag: str) -> list[Item]:
    """Each active copy's starting marker, as an Item whose ``n`` is the marker."""
    return [Item(p[0], int(p[1]), int(p[4]), float(p[5])) for p in _fields(lines, tag, "resume")]


def ledger_lines(lines: Iterable[str]) -> list[str]:
    """The output as ledger lines: start and stop kept, each item a tick."""
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 5 and parts[3] in ("start", "stop"):
            out.append(line)
        elif len(parts) == 6 and parts[3] == "item":
            out.append(" ".join([*parts[:3], "tick", parts[5]]))
    return out


def command(
    output: str,
    tag: str,
    primary: str,
    backups: Sequence[str] = (),
    resources: Sequence[str] = (),
    interval: float = 0.02,
    warmup: float = 0.0,
) -> list[str]:
    """The command line the program registers (an entry written with it is "unchanged"
    when the program registers): how any server loads it."""
    cmd = [
        sys.executable,
        "-m",
        MODULE,
        "--output",
        os.path.abspath(output),
        "--tag",
        tag,
        "--primary",
        primary,
        "--interval",
        repr(interval),
    ]
    if warmup:
        cmd += ["--warmup", repr(warmup)]
    if backups:
        cmd += ["--backups", ",".join(backups)]
    if resources:
        cmd += ["--resources", ",".join(resources)]
    return cmd


def _list(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, type=os.path.abspath)
    p.add_argument("--tag", default=os.environ.get("NDSCLUST_TAG"))
    p.add_argument("--primary", required=True)
    p.add_argument("--backups", type=_list, default=[])
    p.add_argument("--resources", type=_list, default=[])
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument(
        "--warmup", type=float, default=0.0, help="seconds of preparation before it waits"
    )
    p.add_argument("--socket", help="the sentinel's control socket (default: NDSCLUST_SOCKET)")
    args = p.parse_args(argv)
    if not args.tag:
        p.error("--tag is required when NDSCLUST_TAG is not set")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        session = aware.connect(args.socket, tag=args.tag)
    except aware.AwareError as e:
        print(f"{args.tag}: {e}", file=sys.stderr)
        return 1
    with session:
        try:
            reg = session.register(
                command=command(
                    args.output,
                    args.tag,
                    args.primary,
                    args.backups,
                    args.resources,
                    args.interval,
                    args.warmup,
                ),
                primary=args.primary,
                backups=args.backups,
                resources=args.resources,
            )
        except aware.AwareError as e:
            print(f"{args.tag}: {e}", file=sys.stderr)
            return 1
        if not session.supervised:
            where = (
                f"hosted by {reg.host}"
                if reg.host
                else f"unloaded; 'ndsclust load {args.tag}' starts it"
            )
            print(
                f"{args.tag}: registration {reg.result}, {where}; the sentinels run it from now on",
                flush=True,
            )
            return 0
        return _run(session, args)


def _run(session: aware.Session, args: argparse.Namespace) -> int:
    fd = os.open(args.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    head = f"{session.server} {os.getpid()} {args.tag}"

    def write(what: str) -> None:
        os.write(fd, f"{head} {what} {time.monotonic():.6f}\n".encode())

    try:
        # Preparation (``--warmup``) comes before the wait: a paused copy is ready to serve
        # the moment it is granted the start, which is what FIG. 7B loads it early for.
        if session.should_stop(timeout=args.warmup):
            return 0
        write("waiting")
        try:
            session.wait_until_host()
        except aware.StopRequested:
            return 0  # unloaded before it was ever the active copy: nothing to save
        write("start")
        marker = session.marker
        done = int(marker) if marker is not None else 0
        write(f"resume {done}")
        while not session.should_stop():
            n = done + 1
            write(f"item {n}")  # process ...
            session.marker = str(n)  # ... then mark (see the module docstring)
            done = n
            session.should_stop(timeout=args.interval)
        write("stop")
        return 0
    except aware.MarkerConflict as e:
        # Someone else wrote the marker: another copy is active. Stop at once.
        print(f"{args.tag}: {e}; stopping", file=sys.stderr, flush=True)
        write("stop")
        return 4
    except (aware.AwareError, ValueError) as e:
        print(f"{args.tag}: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())

"""``ndsclust simulate``: what the cluster would do if ... (never writes to the directory).

Reads the directory (or a snapshot saved by ``ndsclust report``, ``--from FILE``), applies
the hypothetical events in the order given and runs every server's real decision core over
simulated time until nothing changes (``ndsclust/simulate/``). Prints where every
application ends up and the events each server would write.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from ndsclust.cli import common
from ndsclust.config import KILL_ALLOWANCE, Config
from ndsclust.errors import ConfigError
from ndsclust.sentinel.loop import policy_of
from ndsclust.sentinel.view import Policy
from ndsclust.simulate import scenario, snapshot
from ndsclust.simulate.engine import Timing

APP_COLUMNS = ("tag", "host", "state", "was_host", "was_state")
EVENT_COLUMNS = ("time", "after", "server", "kind", "tag", "text")
# The archive member of ``ndsclust report`` that holds the snapshot.
REPORT_MEMBER = "directory.json"
# Timeouts of a sentinel configured with the defaults (ndsclust/config.py).
DEFAULT_TIMING = Timing(step=0.05, failover=0.8, fence=0.5 - KILL_ALLOWANCE)


class _Ordered(argparse.Action):
    """Appends (event kind, argument) to one list, so the events keep the order given."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        faults = list(getattr(namespace, "faults", None) or [])
        faults.append(scenario.Fault(self.dest.replace("_", "-"), str(values)))
        namespace.faults = faults


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="what would happen if a server died, a program crashed, ... (writes nothing)",
        description="Predict what the cluster does after hypothetical events, applied in "
        "the order given: every server's real decision core runs over simulated time "
        "on a simulated copy of the directory until nothing changes. Prints the "
        "resulting placement and the events each server would write. Reads the live "
        "directory, or a snapshot (--from FILE: a report archive or its directory.json). "
        "Timeouts and supervision limits come from the sentinel configuration "
        "(--config) when one is given, else the defaults.",
    )
    p.add_argument(
        "--from", dest="source", metavar="FILE", help="snapshot instead of the directory"
    )
    for flag, meta, what in (
        ("--kill", "SERVER", "the server dies (sentinel, programs and provider)"),
        ("--isolate", "SERVER", "the server is cut off on every channel"),
        ("--cut-lan", "SERVER", "the server's LAN heartbeats stop (other channels stay)"),
        ("--crash", "TAG", "the application's program exits on its own (repeat for more)"),
        ("--maintenance", "SERVER", "an operator puts the server in maintenance"),
        ("--request", "TAG=REQUEST", "an operator's request: migrate:SERVER, load, ..."),
    ):
        p.add_argument(flag, action=_Ordered, metavar=meta, help=what)
    p.add_argument("--json", action="store_true", help="print JSON: {apps, events, servers}")
    p.add_argument("--save", metavar="FILE", help="also write the snapshot used to FILE")
    p.set_defaults(handler=cmd_simulate, faults=[])


def read_source(path: str) -> dict[str, Any]:
    """A snapshot from a JSON file or from a report archive (.tar.gz)."""
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(REPORT_MEMBER)), None)
            f = tar.extractfile(member) if member is not None else None
            if f is None:
                raise ConfigError(path, [f"a report archive without {REPORT_MEMBER}"])
            data = f.read()
        tmp = io.StringIO(data.decode())
        doc = json.load(tmp)
        if not isinstance(doc, dict):
            raise ConfigError(path, [f"{REPORT_MEMBER} is not a snapshot"])
        return doc
    return snapshot.load(path)


def timing_of(cfg: Config | None) -> tuple[Timing, Policy]:
    if cfg is None:
        return DEFAULT_TIMING, Policy()
    t = cfg.timeouts
    return (
        Timing(
            step=t.loop_interval,
            failover=t.failover,
            fence=t.fence - KILL_ALLOWANCE,
            channels=frozenset(cfg.channel_names()) or frozenset({"directory"}),
        ),
        policy_of(cfg),
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.source:
        doc = read_source(args.source)
        cfg = common.load_config(args) if args.config else None
    else:
        cfg = common.load_config(args)
        st = common.store(args)
        try:
            doc = snapshot.read(st)
        finally:
            st.close()
    if args.save:
        Path(args.save).write_text(json.dumps(doc, indent=1, sort_keys=True))
    parsed = snapshot.parse(doc)
    timing, policy = timing_of(cfg)
    sim = snapshot.sim_of(parsed, timing, policy)
    before = sim.placement()
    outcome = scenario.run(sim, list(args.faults))
    for problem in parsed.invalid:
        print(f"ndsclust: warning: ignored: {problem}", file=sys.stderr)
    if args.json:
        common.print_json(outcome.json())
        return 0
    rows = [
        {
            "tag": tag,
            "host": now["host"],
            "state": now["state"],
            "was_host": before.get(tag, {}).get("host"),
            "was_state": before.get(tag, {}).get("state"),
        }
        for tag, now in outcome.placement.items()
    ]
    if sim.paused:
        print("PAUSED: automatic actions are held (docs/operating.md, 'Pause')")
    common.print_rows("applications after: " + " ".join(map(str, args.faults)), APP_COLUMNS, rows)
    print()
    events = [{**e, "time": f"+{e['time']:.2f}s"} for e in outcome.json()["events"]]
    common.print_rows("events the servers would write", EVENT_COLUMNS, events)
    return 0

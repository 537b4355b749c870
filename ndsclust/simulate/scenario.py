"""Hypothetical events applied in order to a simulated cluster, and what comes of them.

``Fault`` is one event as ``ndsclust simulate`` takes it (``--kill alpha``); ``run`` applies
each in turn and lets the cluster settle after each (every server's decision core, over
simulated time, until nothing changes); ``Outcome`` is the placement it ends with and the
events every server would have written, in order, each timed from the event it followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ndsclust.errors import ConfigError
from ndsclust.model import Request, ServerName, Tag
from ndsclust.simulate.engine import Sim, SimEvent

KINDS = ("kill", "isolate", "cut-lan", "crash", "maintenance", "request")


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # one of KINDS
    arg: str  # a server; a tag (crash); TAG=REQUEST (request)

    def __str__(self) -> str:
        return f"--{self.kind} {self.arg}"


@dataclass(frozen=True)
class Outcome:
    placement: dict[str, dict[str, str | None]]
    events: list[tuple[str, float, SimEvent]]  # (the fault it followed, when that was, event)
    servers: dict[str, dict[str, Any]]
    took: float  # simulated seconds

    def json(self) -> dict[str, Any]:
        return {
            "apps": self.placement,
            "events": [
                {**e.json(), "after": after, "time": round(e.time - t0, 3)}
                for after, t0, e in self.events
            ],
            "servers": self.servers,
            "simulated_seconds": round(self.took, 3),
        }


def check(sim: Sim, faults: list[Fault]) -> None:
    """Every fault names a known server or application: ``ConfigError`` listing the rest."""
    problems = []
    for f in faults:
        if f.kind == "crash":
            if Tag(f.arg) not in sim.master:
                problems.append(f"{f}: no application {f.arg!r}")
        elif f.kind == "request":
            tag, sep, value = f.arg.partition("=")
            if not sep or Tag(tag) not in sim.master:
                problems.append(f"{f}: TAG=REQUEST with a known application expected")
                continue
            try:
                Request.parse(value)
            except ValueError as e:
                problems.append(f"{f}: {e}")
        elif f.kind in KINDS:
            if ServerName(f.arg) not in sim.servers:
                problems.append(f"{f}: no server {f.arg!r} ({', '.join(sim.names)})")
        else:
            problems.append(f"{f}: unknown event")
    if problems:
        raise ConfigError("simulate", problems)


def apply(sim: Sim, f: Fault) -> None:
    match f.kind:
        case "kill":
            sim.kill(f.arg)
        case "isolate":
            sim.isolate(f.arg)
        case "cut-lan":
            sim.cut_lan(f.arg)
        case "crash":
            sim.crash(f.arg)
        case "maintenance":
            sim.maintenance(f.arg)
        case "request":
            tag, _, value = f.arg.partition("=")
            sim.request(tag, value)


def run(sim: Sim, faults: list[Fault]) -> Outcome:
    """Settle, then apply each fault and settle again; see the module docstring."""
    check(sim, faults)
    took = sim.settle()
    out: list[tuple[str, float, SimEvent]] = [("start", 0.0, e) for e in sim.events]
    for f in faults:
        seen, t0 = len(sim.events), sim.now
        apply(sim, f)
        took += sim.settle()
        out += [(str(f), t0, e) for e in sim.events[seen:]]
    servers: dict[str, dict[str, Any]] = {
        s: {
            "up": sim.up[s],
            "state": sim.servers[s].state.value,
            "cut_off": s in sim.cut,
            "lan_cut": s in sim.lan_cut,
        }
        for s in sim.names
    }
    return Outcome(sim.placement(), out, servers, took)

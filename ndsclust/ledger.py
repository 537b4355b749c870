"""Reading program ledgers and finding double runs (invariant 1, docs/design.md section 4).

A ledger line is ``<server> <pid> <tag> start|tick|stop <monotonic seconds>``
(``ndsclust.lab.sample_app`` writes them). A copy lives from its start line to its stop line,
or to its last tick when it was killed (then its end is known to within one tick).
Two copies of one tag on different servers whose lives overlap are a double run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Life:
    server: str
    pid: int
    tag: str
    start: float
    end: float
    stopped: bool  # ended with a stop line (clean unload), not killed

    def overlaps(self, other: Life) -> float:
        return min(self.end, other.end) - max(self.start, other.start)


@dataclass(frozen=True, slots=True)
class DoubleRun:
    tag: str
    first: Life
    second: Life
    overlap: float


def lives(lines: Iterable[str]) -> list[Life]:
    """Group ledger lines into one Life per (server, pid, tag); malformed lines are skipped."""
    seen: dict[tuple[str, int, str], list[float | bool]] = {}
    order: list[tuple[str, int, str]] = []
    for line in lines:
        parts = line.split()
        if len(parts) != 5 or parts[3] not in ("start", "tick", "stop"):
            continue
        try:
            key = (parts[0], int(parts[1]), parts[2])
            t = float(parts[4])
        except ValueError:
            continue
        if key not in seen:
            seen[key] = [t, t, False]
            order.append(key)
        rec = seen[key]
        rec[0] = min(float(rec[0]), t)
        rec[1] = max(float(rec[1]), t)
        if parts[3] == "stop":
            rec[2] = True
    return [
        Life(k[0], k[1], k[2], float(seen[k][0]), float(seen[k][1]), bool(seen[k][2]))
        for k in order
    ]


def double_runs(all_lives: Iterable[Life], *, tolerance: float = 0.0) -> list[DoubleRun]:
    """Pairs of copies of one tag on different servers alive at the same instant
    (overlap longer than ``tolerance`` seconds)."""
    by_tag: dict[str, list[Life]] = {}
    for life in all_lives:
        by_tag.setdefault(life.tag, []).append(life)
    found = []
    for tag, ls in by_tag.items():
        ls.sort(key=lambda x: x.start)
        for i, a in enumerate(ls):
            for b in ls[i + 1 :]:
                if b.start > a.end:
                    break
                if a.server != b.server and a.overlaps(b) > tolerance:
                    found.append(DoubleRun(tag, a, b, a.overlaps(b)))
    return found


def read(path: str) -> list[Life]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return lives(f)
    except FileNotFoundError:
        return []

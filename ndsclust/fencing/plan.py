"""What fencing decides, as pure functions of a fence record (docs/style.md section 1).

The shell (``fencer.py``) reads a server's record, asks these, and carries out the answer
with a compare-and-swap on the record; a swap that finds another value means another
server moved first, and the shell reads again and asks again (docs/style.md section 5).
Times are wall seconds: records are written by several servers, and a lock is judged
stale by its age only together with its holder's silence, or after far longer than any
attempt can take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ndsclust.fencing.agent import Result
from ndsclust.fencing.record import UNSETTLED, FenceState, Phase

# A lock older than every level's timeout added up, plus this, is stale even while its
# holder is heard: it died in the middle, or its clock is far off.
LOCK_SLACK = 10.0


def owe(state: FenceState | None, me: str, now: float) -> FenceState | None:
    """A takeover from the record's server was decided here: the new record, or None when
    it already says a fence is owed, running or failed. A ``confirmed`` record is owed
    again: it may tell of an earlier death, and a fence too many costs an ``off`` to a
    server that is off, where one too few could leave two copies running."""
    if state is not None and state.phase in UNSETTLED:
        return None
    return FenceState(Phase.OWED, me, now)


def blocks(state: FenceState | None) -> bool:
    """Whether the record forbids starting, anywhere, a program its server may run."""
    return state is not None and state.phase in UNSETTLED


def back_from_start(state: FenceState | None, me: str, now: float) -> FenceState | None:
    """This sentinel just started: its old programs are gone (its lease guard killed them
    when the old sentinel's socket closed, or the machine was powered off), so a record
    about this server that is not ``clear`` is cleared. None: nothing to write."""
    if state is None or state.phase is Phase.CLEAR:
        return None
    return FenceState(Phase.CLEAR, me, now)


def backoff(attempts: int, low: float, high: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: doubling from ``low``."""
    if attempts <= 0:
        return 0.0
    return float(min(high, low * 2.0 ** min(attempts - 1, 30)))


@dataclass(frozen=True, slots=True)
class Step:
    """What this server does about an unsettled record: ``take`` the lock and run the
    levels, or wait (``until``: wall time of the next attempt, None: the holder's)."""

    take: bool
    why: str
    until: float | None = None


def next_step(
    state: FenceState,
    me: str,
    now: float,
    *,
    running_here: bool,
    holder_heard: bool,
    longest: float,
    retry: tuple[float, float],
) -> Step:
    """For an unsettled record (``blocks(state)``): fence now, or wait for what."""
    if state.phase is Phase.OWED:
        return Step(True, "owed")
    if state.phase is Phase.FENCING:
        if state.by == me:
            if running_here:
                return Step(False, "this server is fencing it")
            return Step(True, "this server's earlier run left the lock")
        age = now - state.at
        if age > longest + LOCK_SLACK:
            return Step(True, f"{state.by}'s lock is {age:.0f}s old")
        if not holder_heard and not state.by.startswith("operator:"):
            return Step(True, f"{state.by}, which held the lock, is silent")
        return Step(False, f"{state.by} is fencing it", state.at + longest + LOCK_SLACK)
    due = state.at + backoff(state.attempts, *retry)
    if now >= due:
        return Step(True, f"retry {state.attempts + 1}")
    return Step(False, f"next attempt in {due - now:.0f}s", due)


@dataclass(frozen=True, slots=True)
class Outcome:
    confirmed: bool
    via: str  # the agent's file name that confirmed it
    text: str  # every level tried, in order: for the record, the event and the state


def outcome(server: str, results: Sequence[Result]) -> Outcome:
    """Levels are tried in order until one reports success (``results`` ends there)."""
    lines = [f"level {i + 1} {r.summary()}" for i, r in enumerate(results)]
    done = next((r for r in results if r.ok), None)
    if done is not None:
        via = done.agent.rsplit("/", 1)[-1]
        return Outcome(True, via, f"{server} fenced by {via}; " + "; ".join(lines))
    if not results:
        return Outcome(False, "", f"{server} has no fence device configured")
    return Outcome(False, "", f"fencing {server} failed: " + "; ".join(lines))

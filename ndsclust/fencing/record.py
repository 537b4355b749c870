"""The fence record of a server: what every server knows about fencing it (pure).

One entry per server ever fenced, ``cn=fence-<server>,ou=events,<base>``, object class
``ndsclustFence`` (its objectClass keeps it out of the audit trail's listings and
pruning). Its ``ndsclustFenceState`` is one single-valued, exactly matched value that
every change compare-and-swaps (docs/design.md section 2): a phase, who set it and when
(wall time, for display and for judging a stale lock), and the attempts made::

    owed by=beta at=20261202031500.123456Z attempts=0
    fencing by=beta at=20261202031501.000000Z attempts=0
    failed by=beta at=20261202031531.000000Z attempts=1
    confirmed by=beta at=20261202031502.000000Z attempts=1 via=fence_ipmilan
    clear by=alpha at=20261202032000.000000Z attempts=0

``ndsclustFenceText`` says what the last attempt did (each level's agent, exit code and
output) and is written in the same modify.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum


class Phase(StrEnum):
    CLEAR = "clear"  # nothing owed: the server came back, or was never fenced
    OWED = "owed"  # a takeover from it was decided: it must be fenced first
    FENCING = "fencing"  # ``by`` runs its levels now (the lock: one fencer at a time)
    FAILED = "failed"  # every level failed; tried again after a backoff
    CONFIRMED = "confirmed"  # an agent reported success, or an operator swore it is off


# Phases in which programs the server may still be running block every start elsewhere.
UNSETTLED = frozenset({Phase.OWED, Phase.FENCING, Phase.FAILED})


@dataclass(frozen=True, slots=True)
class FenceState:
    phase: Phase
    by: str  # a server name, or "operator:<who>" for the command line
    at: float  # wall seconds
    attempts: int = 0
    via: str = ""  # the agent (file name) that confirmed it, or "confirm-off"

    def value(self) -> str:
        parts = [
            self.phase.value,
            f"by={self.by}",
            f"at={_gtime(self.at)}",
            f"attempts={self.attempts}",
        ]
        if self.via:
            parts.append(f"via={self.via}")
        return " ".join(parts)

    def moved(
        self,
        phase: Phase,
        by: str,
        at: float,
        *,
        attempts: int | None = None,
        via: str | None = None,
    ) -> FenceState:
        """This state moved on to ``phase`` by ``by`` at ``at``; attempts and via kept
        unless given."""
        return replace(
            self,
            phase=phase,
            by=by,
            at=at,
            attempts=self.attempts if attempts is None else attempts,
            via=self.via if via is None else via,
        )


def parse(value: str) -> FenceState:
    """A stored value back into a FenceState; ValueError naming what is wrong."""
    words = value.split()
    if not words:
        raise ValueError("empty fence state")
    try:
        phase = Phase(words[0])
    except ValueError:
        raise ValueError(
            f"fence phase {words[0]!r}; allowed: {', '.join(p.value for p in Phase)}"
        ) from None
    fields: dict[str, str] = {}
    for w in words[1:]:
        k, sep, v = w.partition("=")
        if not sep:
            raise ValueError(f"{w!r} in a fence state is not key=value")
        fields[k] = v
    try:
        at = _parse_gtime(fields.get("at", ""))
        attempts = int(fields.get("attempts", "0"))
    except ValueError as e:
        raise ValueError(f"fence state {value!r}: {e}") from None
    return FenceState(phase, fields.get("by", ""), at, attempts, fields.get("via", ""))


def _gtime(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y%m%d%H%M%S.%fZ")


def _parse_gtime(s: str) -> float:
    return datetime.strptime(s, "%Y%m%d%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()

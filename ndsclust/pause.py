"""The cluster-wide pause: one ``ndsclustPause`` value on the cluster base entry.

The value is ``<until> <reason>``: ``until`` is a UTC time ``YYYYmmddHHMMSSZ`` after which
the pause ends by itself, or ``-`` for a pause that lasts until ``ndsclust resume``; the
reason is free text (it may be empty). ``ndsclust pause`` writes it, ``ldapmodify`` can too::

    dn: ou=ndsclust,dc=example,dc=com
    changetype: modify
    replace: ndsclustPause
    ndsclustPause: 20261202051500Z upgrading slapd

What a pause means is docs/operating.md, "Pause". Comparing ``until`` with the wall clock
is the shell's business (the sentinel's loop, ``status``); the decision core sees only
``View.paused``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ndsclust.errors import EntryInvalid

ATTRIBUTE = "ndsclustPause"
FOREVER = "-"
_TIME = "%Y%m%d%H%M%SZ"


@dataclass(frozen=True, slots=True)
class Pause:
    """A pause as the directory holds it; ``until`` is wall time (seconds since the epoch)
    or None for no expiry."""

    until: float | None
    reason: str = ""

    def active(self, wall: float) -> bool:
        """True while the pause holds at wall time ``wall``."""
        return self.until is None or wall < self.until

    def value(self) -> str:
        until = FOREVER if self.until is None else stamp(self.until)
        return f"{until} {self.reason}".rstrip()

    def describe(self, wall: float) -> str:
        """One line for operators: ``paused until ... (Ns left): reason``."""
        if self.until is None:
            when = "until 'ndsclust resume'"
        else:
            left = max(0.0, self.until - wall)
            when = f"until {datetime.fromtimestamp(self.until, UTC):%Y-%m-%d %H:%M:%SZ} ({left:.0f}s left)"
        return f"PAUSED {when}" + (f": {self.reason}" if self.reason else "")


def stamp(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime(_TIME)


def parse(value: str, dn: str = "the cluster base") -> Pause:
    """The ``ndsclustPause`` value; ``EntryInvalid`` naming it when it is not one."""
    head, _, reason = value.strip().partition(" ")
    if head == FOREVER:
        return Pause(None, reason.strip())
    try:
        until = datetime.strptime(head, _TIME).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise EntryInvalid(
            dn,
            ATTRIBUTE,
            f"{value!r} must be '<until> <reason>' with until a UTC time "
            "YYYYmmddHHMMSSZ or '-' (no expiry)",
        ) from None
    return Pause(until, reason.strip())


def of_values(values: list[str] | None) -> Pause | None:
    """The pause an entry's attribute values say, None when there is none.

    A value that cannot be parsed pauses without expiry: an operator meant to pause, and
    holding back automatic actions is the side that loses nothing (``status`` shows it)."""
    if not values:
        return None
    try:
        return parse(str(values[0]))
    except EntryInvalid:
        return Pause(None, f"unreadable {ATTRIBUTE} value {values[0]!r}")

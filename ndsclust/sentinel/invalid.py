"""Application entries that break the rules (invariant 4): contained, and said.

The directory snapshot leaves an invalid entry out (a relative command, a backup that is
not a server, ...); ``View.invalid`` names it by tag with what is wrong, and an entry that
was valid before keeps its last valid copy in ``View.apps`` (``view.last_valid``).

- Its last valid copy is decided on as usual, so a typo written into a running
  application's entry stops nothing: the host keeps the program running on the last valid
  entry and reports the error once, as ``error(reason)`` and an ``error`` event. The
  state written by the ordinary decision is left out meanwhile (it would hide the error);
  the next valid version of the entry brings the state back (``running``).
- An entry nobody has a valid copy of is ignored by every sentinel: one server, the first
  live one by name, records an ``invalid_entry`` event once, so an ``ldapadd`` with a typo
  does not go unnoticed.
"""

from __future__ import annotations

from ndsclust.model import App, AppState, StateValue, Tag
from ndsclust.sentinel.actions import Action, Claim, EventKind, Release, SetState
from ndsclust.sentinel.view import Viewpoint


def reported(vp: Viewpoint, tag: Tag, app: App | None, actions: list[Action]) -> list[Action]:
    """``actions`` for an application whose entry is invalid now, with the report added."""
    problem = vp.view.invalid[tag]
    if app is None:
        if _reporter(vp) != vp.me:
            return actions
        text = f"{problem}; every sentinel ignores this entry until it is fixed"
        return actions + vp.say(tag, EventKind.INVALID_ENTRY, text, again=False)
    kept: list[Action] = [a for a in actions if not isinstance(a, SetState)]
    if app.host != vp.me or any(isinstance(a, (Claim, Release)) for a in kept):
        return kept
    text = (
        f"invalid edit: {problem}; {vp.me} keeps its last valid entry (the program is not "
        "stopped) until the entry is fixed"
    )
    notes = vp.say(tag, EventKind.ERROR, text, again=False)
    if not notes:
        return kept
    return [*kept, SetState(tag, StateValue(AppState.ERROR, text)), *notes]


def _reporter(vp: Viewpoint) -> str | None:
    """The first live server by name: the same one on every server that hears the same."""
    names = sorted({*vp.view.servers, vp.me})
    return next((s for s in names if vp.alive(s)), None)

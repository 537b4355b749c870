"""The cluster-wide pause in the decision core: which of one application's actions wait.

While ``View.paused`` holds (docs/operating.md, "Pause"), ``decide`` passes every
application's actions through ``hold``. An *automatic* action is one that no operator asked
for and that moves, starts again, stops or gives up on a program:

- ``Claim`` (failover), ``Release`` (hand-off, failback, a move off a server in
  maintenance), ``Restart`` (claim 57), ``LoadPaused`` (a paused copy on a primary that
  does not host it), an ``Unload`` of a program this server hosts (the first half of a
  move away), and the states only those decisions write (``failed(...)``, flap damping
  included; ``awaiting-failback``; ``unloading``).

What is not held: everything for an application with a pending ``ndsclustRequest`` (the
operator's request is honoured, with the moves it needs); loading a program whose entry
already names this server as host (it is this server's own: after a restart of this
sentinel, or on the new host of a migrate); unloading a copy whose entry names another host
or none (a double claim after a partition, an operator's removal) or no longer exists; and
fencing, which ``decide`` does before any of this (a cut-off server still stops its
programs, so its peers may take them over safely once the pause ends).

An application whose actions are held gets, instead, one ``paused_hold`` event saying what
would have been done, repeated only after ``Policy.repeat_after`` (``Viewpoint.say``). When
the held decision was to move away a program this server hosts but does not run (its
sentinel has just started, or it stopped the program for a move the pause then held), the
program is loaded here: a paused server keeps running what the directory says it hosts. A
program that exited on its own is not started again (that is a restart).
"""

from __future__ import annotations

from ndsclust.model import App, AppState
from ndsclust.sentinel.actions import (
    Action,
    Claim,
    EventKind,
    Load,
    LoadPaused,
    Notify,
    RecordEvent,
    Release,
    Restart,
    SetState,
    Unload,
)
from ndsclust.sentinel.procs import ProcState
from ndsclust.sentinel.view import Viewpoint

# States written only as part of an automatic decision.
_AUTOMATIC_STATES = frozenset({AppState.FAILED, AppState.AWAITING_FAILBACK, AppState.UNLOADING})


def automatic(vp: Viewpoint, app: App, action: Action) -> bool:
    """True when ``action`` is an automatic one (module docstring)."""
    match action:
        case Claim() | Release() | Restart() | LoadPaused():
            return True
        case Unload():
            return app.host == vp.me
        case SetState(_, value):
            return value.state in _AUTOMATIC_STATES
    return False


def hold(vp: Viewpoint, app: App | None, actions: list[Action]) -> list[Action]:
    """``actions`` of one application as a paused cluster carries them out."""
    if app is None or app.request is not None:
        return actions
    if not any(automatic(vp, app, a) for a in actions):
        return actions
    said = vp.say(app.tag, EventKind.PAUSED_HOLD, f"paused: would {_describe(actions)}")
    proc = vp.proc(app.tag)
    own = app.host == vp.me and vp.me in app.servers()
    if own and (proc is None or (proc.state is ProcState.EXITED and proc.stop_requested)):
        return [Load(app.tag), *said]
    return said


def _describe(actions: list[Action]) -> str:
    """What the held actions would have done, in words that stay the same cycle to cycle."""
    for a in actions:
        if isinstance(a, RecordEvent) and a.kind is not EventKind.REGISTRATION:
            return f"{a.kind.value}: {a.text}"
    for a in actions:
        match a:
            case Unload(_, reason):
                return f"unload: {reason}"
            case LoadPaused():
                return "load a paused copy"
            case SetState(_, value):
                return f"set state {value}"
            case Notify(kind, _, text):
                return f"{kind.value}: {text}"
    return ", ".join(sorted({type(a).__name__.lower() for a in actions}))

"""What the decision core asks the sentinel's shell to do: frozen actions, one per step.

The core (``ndsclust.sentinel.decide``) returns a list of these; the shell executes them in
order (the ordering contract is in ``decide``'s docstring). Each action names its tag, so
the shell can drop the rest of one application's actions when a compare-and-swap fails.

    Claim         one atomic modify: swap ndsclustHostServer from ``expect_host`` to this
                  server (CAS), write ``state`` and consume the request it honours (CAS)
    Release       one atomic modify: swap ndsclustHostServer from ``expect_host`` to ``to``
                  (CAS; None removes it), write ``state``, consume the request it honours
    ConsumeRequest delete ndsclustRequest if it still holds ``request`` (CAS), writing
                  ``state`` in the same modify when one is given
    ForwardRequest stacks: move a member's request to its set's root (add there, then CAS)
    Load          start the program; if the table holds a paused copy, resume that copy
    LoadPaused    start a cluster-aware program paused, ready for failback (FIG. 7B)
    Restart       start again a program that exited on its own (claim 57)
    Unload        begin stopping the local program (the proc table shows when it has ended)
    SetState      replace ndsclustState
    RecordEvent   add an event under ou=events and log it as one ``event=...`` line
    Notify        tell the operators (mail, hook, ...) through the configured notifier
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ndsclust.model import AppState, Request, ServerName, StateValue, Tag, check_server_name


class EventKind(StrEnum):
    """The kinds of events the core records; the value is what ``ndsclustEvent`` stores."""

    REGISTRATION = "registration"  # FIG. 6: what this primary found on start
    FAILOVER = "failover"  # FIGS. 7A, 9: took over from a dead host
    FAILBACK = "failback"  # FIGS. 7B, 8: handed back to the primary
    AWAITING_FAILBACK = "awaiting_failback"  # FIG. 7B, 864: the operator must approve
    HANDOFF = "handoff"  # claim 57: the program kept failing here
    RESTART = "restart"  # claim 57: restarted in place
    RESOURCE_MISSING = "resource_missing"  # claim 57: "sufficient resources" not met here
    FAILED = "failed"  # no server can run it
    FLAP_DAMPED = "flap_damped"  # too many failovers: it stays put
    DOUBLE_CLAIM = "double_claim"  # FIGS. 4E-4H: the loser unloads
    LOAD = "load"
    UNLOAD = "unload"
    MIGRATE = "migrate"
    MAINTENANCE = "maintenance"  # moved off a server in maintenance
    MAINTENANCE_BLOCKED = "maintenance_blocked"
    REQUEST_IGNORED = "request_ignored"  # nothing to do for that request
    REQUEST_REJECTED = "request_rejected"  # the request cannot be honoured
    ERROR = "error"  # the entry contradicts itself
    FENCED = "fenced"  # this server is cut off and stops everything
    REJOIN = "rejoin"  # back from a stall or fencing: the sync barrier
    # Service stacks (ndsclust/sentinel/stacks.py).
    STACK = "stack"  # a member follows its set's root, or a request passes to the root
    AVOIDS_OVERRIDDEN = "avoids_overridden"  # runs next to what it avoids: no other server
    FENCE = "fence"  # another server was fenced by its agent, or confirmed off
    FENCE_FAILED = "fence_failed"  # every fence level failed: nothing starts; retried
    CLEANUP = "cleanup"  # an operator cleared the failure counts (ndsclust cleanup)
    FAILBACK_HELD = "failback_held"  # the primary is back but the application stays
    REPLICATION_PENDING = "replication_pending"  # FIG. 6 step 614: starts wait for it
    INVALID_ENTRY = "invalid_entry"  # an entry every sentinel ignores until it is fixed
    PAUSED_HOLD = "paused_hold"  # the cluster is paused: what would have been done
    SERVER_DOWN = "server_down"  # no live server hears it, or its sentinel stopped
    SERVER_UP = "server_up"  # heard again on the lan (or every channel its peers have)
    SERVER_ISOLATED = "server_isolated"  # heard, but not on the lan: its network is cut


# Kinds worth an operator's attention beyond the audit trail (FIG. 7A process 810 notifies
# every failover; FIG. 7B process 864 prompts for failback approval).
NOTIFY_KINDS: frozenset[EventKind] = frozenset(
    {
        EventKind.FAILOVER,
        EventKind.FAILBACK,
        EventKind.AWAITING_FAILBACK,
        EventKind.HANDOFF,
        EventKind.RESOURCE_MISSING,
        EventKind.FAILED,
        EventKind.FLAP_DAMPED,
        EventKind.DOUBLE_CLAIM,
        EventKind.MAINTENANCE_BLOCKED,
        EventKind.REQUEST_REJECTED,
        EventKind.ERROR,
        EventKind.FENCED,
        EventKind.FENCE,
        EventKind.FENCE_FAILED,
        EventKind.FAILBACK_HELD,
        EventKind.INVALID_ENTRY,
        EventKind.SERVER_DOWN,
        EventKind.SERVER_UP,
        EventKind.SERVER_ISOLATED,
    }
)

# Events of a change of host. Why an application is where it is now is kept on its entry
# (``placed_by``), never read back from the audit trail.
MOVES: frozenset[EventKind] = frozenset(
    {
        EventKind.FAILOVER,
        EventKind.HANDOFF,
        EventKind.FAILBACK,
        EventKind.MIGRATE,
        EventKind.MAINTENANCE,
        EventKind.LOAD,
        EventKind.UNLOAD,
    }
)
# The audit-trail events ``History`` is built from: a hand-off is a real failure (the
# program kept exiting, or could not start, on the server that handed it off), a cleanup
# forgets every failure before it. Nothing else counts: a failover from a dead host, a
# migrate, a maintenance move, a failback or a graceful stop is no failure of the program.
COUNTED: frozenset[EventKind] = frozenset({EventKind.HANDOFF, EventKind.CLEANUP})
# The events the cache keeps per application: the counted ones, and failovers, which only
# the metrics report (``History.failovers``); no decision reads them.
KEPT_MOVES: frozenset[EventKind] = COUNTED | {EventKind.FAILOVER}


# Moves after which the application stays where it was put: no automatic failback.
PINNING: frozenset[EventKind] = frozenset({EventKind.MIGRATE})
# States that carry the move that put the application on its host as their reason:
# ``loading(migrate)`` written with the swap, ``running(migrate)`` kept by the new host.
PLACED_STATES = frozenset({AppState.LOADING, AppState.RUNNING, AppState.REPLICATION_PENDING})


def placed(state: AppState, kind: EventKind | None) -> StateValue:
    """``state`` carrying the move that placed the application, when it is one that pins it
    (``loading`` carries every move, so the new host learns why from the swap itself)."""
    keep = kind is not None and (kind in PINNING or state is AppState.LOADING)
    return StateValue(state, kind.value if keep and kind is not None else "")


def placed_by(state: StateValue) -> EventKind | None:
    """The move that put the application on its host, as its state says (``placed``,
    ``handed_off``)."""
    if state.state not in PLACED_STATES or not state.reason:
        return None
    try:
        kind = EventKind(state.reason.partition(":")[0])
    except ValueError:
        return None
    return kind if kind in MOVES else None


def handed_off(failed: Iterable[ServerName]) -> StateValue:
    """``loading(handoff: alpha beta)``: the state a hand-off writes with its swap, naming
    the servers where the program kept failing, so the next host knows them at once (the
    hand-off events that say the same may arrive after it must decide where to go next)."""
    return StateValue(AppState.LOADING, f"{EventKind.HANDOFF.value}: {' '.join(failed)}")


def handed_off_from(state: StateValue) -> tuple[ServerName, ...]:
    """The servers a ``handed_off`` state names (none for any other state)."""
    kind, _, rest = state.reason.partition(":")
    if state.state is not AppState.LOADING or kind != EventKind.HANDOFF.value:
        return ()
    out = []
    for name in rest.split():
        try:
            out.append(check_server_name(name))
        except ValueError:
            continue
    return tuple(out)


# ``running(failback held: ...)``: a backup keeps it because the program kept failing on
# the primary (``failback.as_backup``); the state itself names the primary as failed.
FAILBACK_HELD_REASON = "failback held"


@dataclass(frozen=True, slots=True)
class Claim:
    """This server takes the application: host swap, ``state`` and the consumed request
    ``consumes`` in one compare-and-swap modify (both the host and the request must still
    hold what the view showed)."""

    tag: Tag
    expect_host: ServerName | None
    reason: str
    state: StateValue
    consumes: Request | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """This server hands the application to ``to`` (None: nobody), with ``state`` and the
    consumed request in the same compare-and-swap modify."""

    tag: Tag
    to: ServerName | None
    expect_host: ServerName
    reason: str
    state: StateValue
    consumes: Request | None = None


@dataclass(frozen=True, slots=True)
class ConsumeRequest:
    tag: Tag
    request: Request
    state: StateValue | None = None


@dataclass(frozen=True, slots=True)
class Load:
    tag: Tag


@dataclass(frozen=True, slots=True)
class LoadPaused:
    tag: Tag


@dataclass(frozen=True, slots=True)
class Restart:
    tag: Tag


@dataclass(frozen=True, slots=True)
class Unload:
    tag: Tag
    reason: str


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """Stacks: pass ``request`` from member ``tag`` to its set's root ``to`` (added there
    only while the root holds none, then removed from ``tag`` by compare-and-swap)."""

    tag: Tag
    to: Tag
    request: Request


@dataclass(frozen=True, slots=True)
class SetState:
    tag: Tag
    value: StateValue


@dataclass(frozen=True, slots=True)
class RecordEvent:
    kind: EventKind
    tag: Tag
    text: str


@dataclass(frozen=True, slots=True)
class Notify:
    kind: EventKind
    tag: Tag
    text: str


Action = (
    Claim
    | Release
    | ConsumeRequest
    | Load
    | LoadPaused
    | Restart
    | Unload
    | SetState
    | RecordEvent
    | Notify
    | ForwardRequest
)

# Actions that make this server run a program; while the local provider has not caught up
# (FIG. 6 step 614) the core withholds them and shows replication-pending instead.
STARTS = (Claim, Load, Restart)


def announce(kind: EventKind, tag: Tag, text: str) -> list[Action]:
    """The event, plus a notification when operators should hear of it."""
    out: list[Action] = [RecordEvent(kind, tag, text)]
    if kind in NOTIFY_KINDS:
        out.append(Notify(kind, tag, text))
    return out

"""A server whose sentinel is stopping (SIGTERM) in the decision core: its moves say it is
stopping, not in maintenance, and no backup fails back or asks to fail back to it while
the shell shows it in maintenance (``View.stopping``)."""

from __future__ import annotations

from ndsclust.model import App, AppState, AppType, Server, ServerName, ServerState, StateValue, Tag
from ndsclust.sentinel.actions import EventKind, RecordEvent, SetState, Unload
from ndsclust.sentinel.decide import decide
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.view import Policy, View

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
WEB = Tag("web")
CHANNELS = frozenset({"lan", "disk"})


def view(me: ServerName, host: ServerName, *, auto: bool, stopping: frozenset[ServerName]) -> View:
    web = App(
        WEB,
        AppType.CAPABLE,
        ("/usr/bin/web",),
        A,
        (B, C),
        host=host,
        auto_recover=auto,
        state=StateValue(AppState.RUNNING),
    )
    servers = {
        s: Server(s, state=ServerState.MAINTENANCE if s in stopping else ServerState.UP)
        for s in (A, B, C)
    }
    proc = ProcInfo(WEB, ProcState.RUNNING, 42, 0.0, None, (), False, False, "")
    return View(
        apps={WEB: web},
        servers=servers,
        liveness=Liveness(me, CHANNELS, {p: CHANNELS for p in (A, B, C) if p != me}),
        procs={WEB: proc},
        stopping=stopping,
    )


def test_a_stopping_host_says_it_is_stopping() -> None:
    out = decide(view(A, A, auto=True, stopping=frozenset({A})), A, 100.0, Policy())
    assert out[0] == Unload(WEB, "alpha is stopping: moving to beta")
    assert not [a for a in out if "in maintenance" in str(a)]


def test_no_failback_and_no_approval_asked_for_a_stopping_primary() -> None:
    for auto in (True, False):
        out = decide(view(B, B, auto=auto, stopping=frozenset({A})), B, 100.0, Policy())
        assert out == [], out
    # once alpha's sentinel runs again, the backup asks (auto-recover FALSE)
    out = decide(view(B, B, auto=False, stopping=frozenset()), B, 100.0, Policy())
    assert SetState(WEB, StateValue(AppState.AWAITING_FAILBACK)) in out
    assert any(isinstance(a, RecordEvent) and a.kind is EventKind.AWAITING_FAILBACK for a in out)

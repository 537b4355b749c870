"""The sentinel's shell parts with fakes, without slapd: the executor (one atomic modify
per move, a failed swap drops the rest of its group) and the rejoin runner (view check,
barrier, echo)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pytest

from ndsclust.errors import StoreError, SupervisorError, SwapConflict, Withdrawn
from ndsclust.fencing.fencer import FencePending
from ndsclust.model import App, AppState, AppType, Request, ServerName, StateValue, Tag
from ndsclust.sentinel.actions import (
    Action,
    Claim,
    ConsumeRequest,
    EventKind,
    Load,
    Notify,
    RecordEvent,
    Release,
    SetState,
    Unload,
)
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.executor import Executor
from ndsclust.sentinel.procs import ProcInfo
from ndsclust.sentinel.recorder import Record
from ndsclust.sentinel.rejoin import Rejoin
from ndsclust.sentinel.rejoin_runner import RejoinRunner, is_rejoin_of
from ndsclust.sentinel.view import Policy, View

A, B, G = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
WEB = Tag("web")
LOADING = StateValue(AppState.LOADING, "failover")


def web(host: ServerName | None = A) -> App:
    return App(WEB, AppType.CAPABLE, ("/bin/true",), A, (B, G), host=host)


def view(*apps: App, heard: Collection[ServerName] = (A, G)) -> View:
    seen = {s: frozenset({"lan"}) if s in heard else frozenset() for s in (A, G)}
    return View(
        apps={a.tag: a for a in apps},
        servers={},
        liveness=Liveness(me=B, configured=frozenset({"lan"}), seen=seen),
    )


class FakeStore:
    """One connection's writes; ``fail`` makes the next swap raise."""

    def __init__(self) -> None:
        self.swaps: list[dict[str, Any]] = []
        self.states: list[tuple[str, StateValue]] = []
        self.fail: Exception | None = None
        self.read_backs = 0

    def swap_app(
        self,
        tag: str,
        *,
        host: tuple[ServerName | None, ServerName | None] | None = None,
        consume: Request | None = None,
        state: StateValue | None = None,
        post_read: Sequence[str] | None = None,
        unless: Callable[[], str | None] | None = None,
    ) -> dict[str, list[Any]] | None:
        if unless is not None and (why := unless()):
            raise Withdrawn(self.app_dn(tag), why)
        if self.fail is not None:
            raise self.fail
        self.swaps.append({"tag": tag, "host": host, "consume": consume, "state": state})
        return {"entryUUID": [b"u-1"], "entryCSN": [b"csn"]}

    def set_state(
        self, tag: str, state: StateValue, *, post_read: Sequence[str] | None = None
    ) -> dict[str, list[Any]] | None:
        self.states.append((tag, state))
        return None  # no post-read: the executor reads the entry back

    def app_entry(self, tag: str) -> tuple[str, str, Mapping[str, Sequence[Any]]] | None:
        self.read_backs += 1
        return "u-1", self.app_dn(tag), {"entryUUID": [b"u-1"]}

    def app_dn(self, tag: str) -> str:
        return f"ndsclustTag={tag},ou=applications"


class FakeCache:
    def __init__(self) -> None:
        self.local: list[tuple[str, str]] = []

    def put(
        self, uuid: str, dn: str, attrs: Mapping[str, Sequence[Any]], *, local: bool = False
    ) -> None:
        assert local
        self.local.append((uuid, dn))


class FakePrograms:
    def __init__(self) -> None:
        self.started: list[tuple[Tag, bool]] = []
        self.unloaded: list[Tag] = []
        self.fail: SupervisorError | None = None

    def start(self, app: App, proc: ProcInfo | None, *, paused: bool) -> None:
        if self.fail is not None:
            raise self.fail
        self.started.append((app.tag, paused))

    def unload(self, tag: Tag, reason: str) -> None:
        self.unloaded.append(tag)


class FakeRecords:
    def __init__(self) -> None:
        self.got: list[Record] = []

    def put(self, record: Record) -> None:
        self.got.append(record)


class Shell:
    def __init__(self, heard: Collection[ServerName] = ()) -> None:
        self.store = FakeStore()
        self.cache = FakeCache()
        self.programs = FakePrograms()
        self.records = FakeRecords()
        self.heard = set(heard)
        self.executor = Executor(
            B,
            writer=lambda: self.store,
            cache=self.cache,
            programs=self.programs,
            records=self.records,
            heard_now=lambda s: s in self.heard,
            policy=Policy,
            post_read=["*"],
        )

    def run(self, actions: list[Action], v: View, now: float = 100.0) -> None:
        self.executor.run(actions, v, now)


def failover() -> list[Action]:
    text = "failover from alpha"
    return [
        Claim(WEB, A, text, LOADING, Request.parse("load")),
        Load(WEB),
        RecordEvent(EventKind.FAILOVER, WEB, text),
        Notify(EventKind.FAILOVER, WEB, text),
    ]


def test_a_claim_is_one_modify_then_the_load_then_the_events() -> None:
    sh = Shell()
    sh.run(failover(), view(web(A), heard=()))
    assert sh.store.swaps == [
        {"tag": WEB, "host": (A, B), "consume": Request.parse("load"), "state": LOADING}
    ]
    assert sh.cache.local == [("u-1", "ndsclustTag=web,ou=applications")]
    assert sh.programs.started == [(WEB, False)]
    assert [(r.kind, r.notify) for r in sh.records.got] == [
        (EventKind.FAILOVER, False),
        (EventKind.FAILOVER, True),
    ]
    assert sh.executor.said == {(WEB, EventKind.FAILOVER, "failover from alpha"): 100.0}


def test_a_lost_swap_drops_the_rest_of_the_group_and_reads_the_entry_back() -> None:
    sh = Shell()
    sh.store.fail = SwapConflict("dn", "ndsclustHostServer", A, B)
    other = Tag("db")
    sh.run([*failover(), SetState(other, LOADING)], view(web(A), heard=()))
    assert sh.programs.started == [] and sh.records.got == []
    assert sh.store.read_backs == 2  # web after its conflict; db after a write without post-read
    assert sh.store.states == [(other, LOADING)]  # another group goes on


def test_a_claim_is_withdrawn_when_the_host_is_heard_again() -> None:
    sh = Shell(heard=[A])
    sh.run(failover(), view(web(A), heard=()))
    assert sh.store.swaps == [] and sh.programs.started == []


def test_provider_trouble_leaves_the_group() -> None:
    sh = Shell()
    sh.store.fail = StoreError("no provider answered")
    sh.run(failover(), view(web(A), heard=()))
    assert sh.programs.started == [] and sh.records.got == []


def test_provider_trouble_is_logged_when_it_begins_changes_and_clears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sh = Shell()

    def lines() -> list[str]:
        got = [r.getMessage() for r in caplog.records if "store_error" in r.getMessage()]
        caplog.clear()
        return got

    with caplog.at_level(logging.INFO, logger="ndsclust.sentinel"):
        sh.store.fail = StoreError("no provider answered")
        for _ in range(3):  # three cycles deciding the same claim again
            sh.run(failover(), view(web(A), heard=()))
        assert lines() == ['event=store_error tag=web server=beta error="no provider answered"']
        sh.store.fail = StoreError("busy")
        sh.run(failover(), view(web(A), heard=()))
        sh.run(failover(), view(web(A), heard=()))
        assert lines() == ["event=store_error tag=web server=beta error=busy"]
        sh.store.fail = None
        sh.run(failover(), view(web(A), heard=()))
        sh.run([SetState(WEB, LOADING)], view(web(B)))
        assert lines() == ["event=store_error_cleared tag=web server=beta was=busy"]
    assert sh.programs.started == [(WEB, False)]


def test_release_and_consume_carry_their_state_and_request() -> None:
    sh = Shell()
    stopped = StateValue(AppState.STOPPED)
    unload = Request.parse("unload")
    sh.run(
        [Release(WEB, None, B, "unload requested", stopped, unload)],
        view(web(B)),
    )
    sh.run([ConsumeRequest(WEB, unload)], view(web(None)))
    assert [(s["host"], s["consume"], s["state"]) for s in sh.store.swaps] == [
        ((B, None), unload, stopped),
        (None, unload, None),
    ]


def test_a_supervisor_error_is_said_once_per_repeat_interval() -> None:
    sh = Shell()
    sh.programs.fail = SupervisorError("/bin/true is not allowed")
    mine = web(B)
    sh.run([Load(WEB), Unload(WEB, "never reached")], view(mine), now=100.0)
    assert sh.programs.unloaded == []
    assert [(r.kind, r.notify) for r in sh.records.got] == [
        (EventKind.ERROR, False),
        (EventKind.ERROR, True),
    ]
    sh.run([Load(WEB)], view(mine), now=101.0)
    assert len(sh.records.got) == 2
    sh.run([Load(WEB)], view(mine), now=100.0 + Policy().repeat_after)
    assert len(sh.records.got) == 4


class HeldPool:
    """A pool whose jobs run only when the test says so."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., None], /, *args: Any, **kwargs: Any) -> object:
        self.jobs.append((fn, args))
        return None

    def drain(self) -> None:
        jobs, self.jobs = self.jobs, []
        for fn, args in jobs:
            fn(*args)


def test_the_loop_does_not_wait_and_one_group_per_application_is_in_flight() -> None:
    sh = Shell()
    pool = HeldPool()
    sh.executor._pool = pool
    v = view(web(A), heard=())
    sh.run(failover(), v)
    assert sh.executor.busy(WEB) and sh.store.swaps == []  # submitted, not waited for
    sh.run(failover(), v)  # decided again before the first answered: dropped
    assert len(pool.jobs) == 1
    before = sh.executor.finished
    pool.drain()
    assert not sh.executor.busy(WEB) and sh.executor.finished == before + 1
    assert len(sh.store.swaps) == 1 and sh.programs.started == [(WEB, False)]


def test_a_load_of_an_application_gone_from_the_directory_is_an_error() -> None:
    sh = Shell()
    sh.run([Load(WEB)], view())
    assert sh.programs.started == []
    assert "no longer in the directory" in sh.records.got[0].text


# ----------------------------------------------------------------------------- rejoin runner


class FakeProviders:
    uris = ("ldaps://a", "ldaps://b", "ldaps://g")
    servers: Mapping[int, str | None] = {0: "alpha", 1: "beta", 2: "gamma"}

    def dead(self, index: int) -> bool:
        return index == 0


class Runner:
    def __init__(self, current: bool = True) -> None:
        self.now = 10.0
        self.current = current
        self.probes: list[tuple[str, Sequence[str], Collection[str], int]] = []
        self.barriers = 0
        self.rejoined = 0
        self.jobs: list[Callable[[], None]] = []
        self.runner = RejoinRunner(
            B,
            Rejoin(barrier_retry=5.0, recheck=0.5),
            providers=FakeProviders(),
            probe=self.probe,
            write_barrier=self.write,
            watch_provider=lambda: "ldaps://b",
            submit=self.jobs.append,
            clock=lambda: self.now,
            on_rejoined=self.done,
            grace=8.0,
        )

    def probe(
        self, uri: str, peers: Sequence[str], *, required: Collection[str], quorum: int
    ) -> tuple[bool, str]:
        self.probes.append((uri, peers, required, quorum))
        return self.current, "" if self.current else "behind gamma's provider"

    def write(self, text: str) -> str:
        self.barriers += 1
        return f"ndsclustEventId=e{self.barriers},ou=events"

    def done(self) -> None:
        self.rejoined += 1

    def step(self, v: View) -> None:
        """One loop cycle: advance, then let the pool run what was submitted."""
        self.runner.advance(self.now, v)
        jobs = list(self.jobs)
        self.jobs.clear()
        for job in jobs:
            job()


def test_rejoin_runner_checks_the_view_writes_the_barrier_and_waits_for_its_echo() -> None:
    r = Runner()
    v = view(heard=(G,))
    r.runner.begin(r.now, "unfenced")
    assert r.runner.pending and r.runner.in_grace(r.now + 7.9)
    r.step(v)
    # Alpha's provider is dead on every channel: not compared; gamma is heard: required.
    assert r.probes == [("ldaps://b", ["ldaps://b", "ldaps://g"], {"ldaps://g"}, 1)]
    r.step(v)  # the answer: current; the barrier is written
    assert r.barriers == 1 and r.runner.pending
    r.step(v)  # the write's answer: still waiting for the echo
    assert r.rejoined == 0 and r.runner.pending
    r.runner.echo("NDSCLUSTEVENTID=E1,ou=events")
    assert r.rejoined == 1 and not r.runner.pending


def test_rejoin_runner_probes_again_while_the_view_is_behind() -> None:
    r = Runner(current=False)
    v = view(heard=(G,))
    r.runner.begin(r.now, "stall")
    r.step(v)
    r.step(v)  # answer: behind; the next probe waits for recheck
    assert len(r.probes) == 1 and r.barriers == 0
    r.now += 0.5
    r.current = True
    r.step(v)
    r.step(v)
    assert len(r.probes) == 2 and r.barriers == 1


def test_rejoin_runner_without_a_watch_provider_waits() -> None:
    r = Runner()
    r.runner = RejoinRunner(
        B,
        Rejoin(barrier_retry=5.0, recheck=0.5),
        providers=FakeProviders(),
        probe=r.probe,
        write_barrier=r.write,
        watch_provider=lambda: None,
        submit=r.jobs.append,
        clock=lambda: r.now,
        on_rejoined=r.done,
        grace=8.0,
    )
    r.runner.begin(r.now, "stall")
    r.step(view())
    r.step(view())
    assert r.probes == [] and r.barriers == 0 and r.runner.pending


def test_is_rejoin_of_reads_kind_and_server_case_insensitively() -> None:
    mine = {"ndsclustEventKind": ["rejoin"], "NDSCLUSTEVENTSERVER": ["beta"]}
    assert is_rejoin_of(mine, B)
    assert not is_rejoin_of(mine, A)
    assert not is_rejoin_of({"ndsclustEventKind": ["failover"], "ndsclustEventServer": ["beta"]}, B)


class FakeGate:
    """The executor's fencing gate (``fencing.fencer.Gate``): what it was asked, in order."""

    def __init__(self, pending: FencePending | None = None) -> None:
        self.calls: list[str] = []
        self.pending = pending

    def claiming(self, host: ServerName) -> object | None:
        self.calls.append(f"claiming {host}")
        return "before"

    def claim_failed(self, host: ServerName, before: Any) -> None:
        self.calls.append(f"claim_failed {host} {before}")

    def before_start(self, app: App) -> None:
        self.calls.append(f"before_start {app.tag}")
        if self.pending is not None:
            raise self.pending

    def cycle(self) -> None:
        self.calls.append("cycle")


def test_with_fencing_a_takeover_owes_the_fence_before_its_swap_and_starts_after_the_gate() -> None:
    sh = Shell()
    gate = sh.executor.fence_gate = FakeGate()
    sh.run(failover(), view(web(A), heard=()))
    assert gate.calls == ["cycle", "claiming alpha", "before_start web"]
    assert sh.programs.started == [(WEB, False)]


def test_a_start_waiting_for_a_fence_drops_its_group_and_shows_the_failure() -> None:
    sh = Shell()
    failed = StateValue(AppState.FAILED, "fencing alpha failed: level 1 fence_x: exit 1")
    sh.executor.fence_gate = FakeGate(FencePending("waiting", failed))
    sh.run([*failover(), SetState(WEB, LOADING)], view(web(A), heard=()))
    assert sh.programs.started == [] and sh.records.got == []
    assert sh.store.states == [(WEB, failed)]  # the loading state after the Load is not written


def test_a_lost_swap_takes_the_fence_debt_back_and_a_dead_hosts_unload_owes_one() -> None:
    sh = Shell()
    gate = sh.executor.fence_gate = FakeGate()
    sh.store.fail = SwapConflict("dn", "ndsclustHostServer", A, B)
    sh.run(failover(), view(web(A), heard=()))
    assert gate.calls == ["cycle", "claiming alpha", "claim_failed alpha before"]
    sh.store.fail = None
    gate.calls.clear()
    unload = Release(
        WEB, None, A, "unload requested; host alpha is dead", StateValue(AppState.STOPPED)
    )
    sh.run([unload], view(web(A), heard=()))
    assert gate.calls == ["cycle", "claiming alpha"]

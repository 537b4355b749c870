"""Real sentinels, real programs, real faults (issue: sentinel). Every test's ledger is
checked for double runs by the ``lab`` fixture."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.model import AppState, Request, RequestKind, ServerName, Tag

LabFactory = Callable[..., LabCluster]

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


def test_host_sentinel_and_programs_sigkilled_backup_runs_it(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    c.kill_sentinel(A)  # the guard sees the socket close: programs die
    c.wait_running("web", B)
    wait_until(lambda: c.app("web").host == B, timeout=10, what="host is beta")


def test_host_sentinel_sigstopped_lease_guard_kills_and_backup_runs(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C], auto_recover=False)
    c.wait_running("web", A)
    c.kill_sentinel(A, signal.SIGSTOP)
    try:
        c.wait_running("web", B)
        assert c.app("web").host == B
    finally:
        c.kill_sentinel(A, signal.SIGCONT)
    resumed = time.monotonic()
    # Back from the stop, alpha's picture still says it hosts web and its guard killed the
    # program: it must learn that beta took over before deciding anything (a local restart
    # would be a second copy).
    wait_until(
        lambda: c.app("web").state.state is AppState.AWAITING_FAILBACK,
        timeout=20,
        what="web awaiting failback on beta",
    )
    log = c.servers[A].log_path
    wait_until(
        lambda: b"event=rejoined server=alpha" in log.read_bytes(),
        timeout=20,
        what="alpha rejoined",
    )
    assert c.first_start_after("web", resumed, server=A) is None
    assert b"event=restart tag=web server=alpha" not in log.read_bytes()
    assert c.running_on("web") == {B}


def test_primary_returns_with_auto_recover_fails_back(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C], auto_recover=True)
    c.wait_running("web", A)
    c.kill_server(A)
    c.wait_running("web", B)
    c.restart_server(A)
    c.wait_running("web", A, timeout=30)
    wait_until(
        lambda: c.app("web").state.state is AppState.RUNNING and c.app("web").host == A,
        timeout=10,
        what="web running on alpha in the directory",
    )


def test_without_auto_recover_waits_for_the_operator(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C], auto_recover=False)
    c.wait_running("web", A)
    c.kill_server(A)
    c.wait_running("web", B)
    c.restart_server(A)
    wait_until(
        lambda: c.app("web").state.state is AppState.AWAITING_FAILBACK,
        timeout=30,
        what="awaiting-failback",
    )
    assert c.running_on("web") == {B}
    c.store().set_request(Tag("web"), Request(RequestKind.FAILBACK))
    c.wait_running("web", A, timeout=30)
    wait_until(lambda: c.app("web").request is None, timeout=10, what="request consumed")


def test_first_backup_lacking_a_resource_is_skipped(lab: LabFactory) -> None:
    c = lab(3, resources={"alpha": ["san1"], "gamma": ["san1"]})
    c.add_app("db", A, [B, C], resources=["san1"])
    c.wait_running("db", A)
    c.kill_server(A)
    c.wait_running("db", C)
    wait_until(
        lambda: any(
            e.kind == "resource_missing" and "beta lacks san1" in e.text
            for e in c.store().events(tag="db")
        ),
        timeout=10,
        what="resource_missing event from beta naming san1",
    )


def test_crashing_program_is_restarted_then_handed_off(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("flaky", A, [B, C], extra=["--crash-after", "0.3"])
    wait_until(
        lambda: c.first_start_after("flaky", 0.0, server=B) is not None,
        timeout=40,
        what="flaky handed off to beta",
    )
    starts_on_a = [ln for ln in c.ledger_lines() if ln.startswith("alpha ") and " start " in ln]
    assert len(starts_on_a) == 4, starts_on_a  # first start + 3 restarts (claim 57)
    assert any(e.kind == "handoff" for e in c.store().events(tag="flaky"))


def test_killed_provider_of_the_host_changes_nothing(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    c.directory.providers[0].kill()
    try:
        time.sleep(5)  # an outcome that must NOT happen: give failover every chance
        assert c.running_on("web") == {A}
        c.store().set_request(Tag("web"), Request(RequestKind.MIGRATE, C))
        c.wait_running("web", C, timeout=30)  # alpha's sentinel still acts, via beta
    finally:
        c.directory.providers[0].start()


def test_migrate_of_an_auto_recover_app_sticks_without_its_event(lab: LabFactory) -> None:
    # An operator's migrate of an auto-recover application must not bounce back
    # to the primary, even when the audit trail's migrate event never reaches the new
    # host. The entry alone says why it is there: removing every event from the directory
    # (the watch drops them from beta's cache) changes nothing.
    c = lab(3)
    c.add_app("web", A, [B, C], auto_recover=True)
    c.wait_running("web", A)
    st = c.store()
    st.set_request(Tag("web"), Request(RequestKind.MIGRATE, B))
    c.wait_running("web", B, timeout=30)
    wait_until(
        lambda: str(c.app("web").state) == "running(migrate)" and c.app("web").request is None,
        timeout=10,
        what="web running(migrate) on beta, request consumed",
    )
    for event in st.events(tag="web"):
        st.delete(event.dn)
    migrated = time.monotonic()
    time.sleep(5)  # an outcome that must NOT happen: give a failback every chance
    assert c.app("web").host == B
    assert c.running_on("web") == {B}
    assert c.first_start_after("web", migrated, server=A) is None
    # The way home is an operator's request.
    st.set_request(Tag("web"), Request(RequestKind.FAILBACK))
    c.wait_running("web", A, timeout=30)
    wait_until(lambda: c.app("web").host == A, timeout=10, what="web back on alpha")

"""``--wait`` of the request verbs: when has the sentinel acted, refused, or not yet."""

from __future__ import annotations

from dataclasses import replace

from ndsclust.cli.request_cmd import Outcome, judge_maintenance, judge_request
from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore.store import Snapshot
from ndsclust.model import (
    App,
    AppState,
    AppType,
    Event,
    Request,
    RequestKind,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
)

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
WEB = Tag("web")
CSN0 = "20261125120000.000000Z#000000#001#000000"
CSN1 = "20261125120001.000000Z#000000#001#000000"
CSN2 = "20261125120002.000000Z#000000#001#000000"
MIGRATE_B = Request(RequestKind.MIGRATE, B)
RUNNING = StateValue(AppState.RUNNING)


def web(
    host: ServerName | None = A,
    state: StateValue = RUNNING,
    request: Request | None = None,
    csn: str = CSN0,
) -> App:
    return App(
        WEB,
        AppType.CAPABLE,
        ("/bin/true",),
        A,
        (B, C),
        host=host,
        state=state,
        request=request,
        dn="ndsclustTag=web,ou=applications,ou=t,dc=x",
        csn=csn,
    )


def snap(
    *apps: App,
    servers: dict[ServerName, Server] | None = None,
    invalid: tuple[EntryInvalid, ...] = (),
) -> Snapshot:
    srv = servers if servers is not None else {n: Server(n, csn=CSN0) for n in (A, B, C)}
    return Snapshot({a.tag: a for a in apps}, srv, invalid)


def event(kind: str, text: str = "", tag: Tag | None = WEB) -> Event:
    return Event("e1", "20261125120002.000000Z", kind, B, tag, text)


def test_copy_older_than_the_write_is_pending_whatever_it_holds() -> None:
    before = web()
    # The watch still shows the entry from before the request: it must not count as done.
    v = judge_request(before, Request(RequestKind.LOAD), CSN1, snap(web(csn=CSN0)), [])
    assert v.outcome is Outcome.PENDING


def test_request_not_taken_yet_is_pending() -> None:
    v = judge_request(web(), MIGRATE_B, CSN1, snap(web(request=MIGRATE_B, csn=CSN1)), [])
    assert v.outcome is Outcome.PENDING and "not taken yet" in v.text


def test_migrate_done_when_consumed_and_running_on_target() -> None:
    v = judge_request(web(), MIGRATE_B, CSN1, snap(web(host=B, csn=CSN2)), [])
    assert v.outcome is Outcome.DONE and v.text == "running on beta"


def test_migrate_consumed_but_still_loading_is_pending() -> None:
    loading = web(host=B, state=StateValue(AppState.LOADING), csn=CSN2)
    assert judge_request(web(), MIGRATE_B, CSN1, snap(loading), []).outcome is Outcome.PENDING


def test_refusal_event_fails_with_its_text() -> None:
    v = judge_request(
        web(),
        MIGRATE_B,
        CSN1,
        snap(web(csn=CSN2)),
        [event("request_rejected", "beta lacks resource san1")],
    )
    assert v.outcome is Outcome.FAILED and "beta lacks resource san1" in v.text
    other = judge_request(
        web(),
        MIGRATE_B,
        CSN1,
        snap(web(request=MIGRATE_B, csn=CSN1)),
        [event("request_rejected", "x", tag=Tag("db"))],
    )
    assert other.outcome is Outcome.PENDING  # another application's refusal


def test_ignored_request_fails_only_when_target_not_reached() -> None:
    ignored = [event("request_ignored", "already running")]
    done = judge_request(web(), Request(RequestKind.LOAD), CSN1, snap(web(csn=CSN2)), ignored)
    assert done.outcome is Outcome.DONE
    stopped = web(host=None, state=StateValue(AppState.STOPPED), csn=CSN2)
    v = judge_request(web(host=None), Request(RequestKind.LOAD), CSN1, snap(stopped), ignored)
    assert v.outcome is Outcome.FAILED and "ignored" in v.text


def test_unload_done_when_no_host_and_stopped() -> None:
    gone = web(host=None, state=StateValue(AppState.STOPPED), csn=CSN2)
    v = judge_request(web(), Request(RequestKind.UNLOAD), CSN1, snap(gone), [])
    assert v.outcome is Outcome.DONE and "unloaded" in v.text


def test_failback_done_on_primary() -> None:
    before = web(host=B, state=StateValue(AppState.AWAITING_FAILBACK))
    v = judge_request(before, Request(RequestKind.FAILBACK), CSN1, snap(web(host=A, csn=CSN2)), [])
    assert v.outcome is Outcome.DONE and v.text == "running on alpha"


def test_new_error_state_fails_but_an_old_one_does_not() -> None:
    err = StateValue(AppState.ERROR, "no eligible server")
    v = judge_request(web(), MIGRATE_B, CSN1, snap(web(state=err, csn=CSN2)), [])
    assert v.outcome is Outcome.FAILED and "error(no eligible server)" in v.text
    # Loading an application that was already in error: the old state is no verdict.
    before = web(state=err)
    v = judge_request(before, Request(RequestKind.LOAD), CSN1, snap(web(state=err, csn=CSN2)), [])
    assert v.outcome is Outcome.PENDING


def test_replaced_request_and_invalid_entry_fail() -> None:
    other = Request(RequestKind.UNLOAD)
    v = judge_request(web(), MIGRATE_B, CSN1, snap(web(request=other, csn=CSN2)), [])
    assert v.outcome is Outcome.FAILED and "unload" in v.text
    bad = EntryInvalid(web().dn, "ndsclustType", "'x' is not an application type")
    v = judge_request(web(), MIGRATE_B, CSN1, snap(invalid=(bad,)), [])
    assert v.outcome is Outcome.FAILED and "ndsclustType" in v.text


def test_maintenance_done_when_hosted_apps_run_elsewhere() -> None:
    srv = {A: Server(A, state=ServerState.MAINTENANCE, csn=CSN2), B: Server(B), C: Server(C)}
    moving = frozenset({WEB})
    pending = judge_maintenance(A, True, moving, CSN1, snap(web(host=A), servers=srv), [])
    assert pending.outcome is Outcome.PENDING and "web" in pending.text
    done = judge_maintenance(A, True, moving, CSN1, snap(web(host=B), servers=srv), [])
    assert done.outcome is Outcome.DONE and "web->beta" in done.text


def test_maintenance_blocked_fails_and_state_changed_back_fails() -> None:
    srv = {A: Server(A, state=ServerState.MAINTENANCE, csn=CSN2), B: Server(B), C: Server(C)}
    v = judge_maintenance(
        A,
        True,
        frozenset({WEB}),
        CSN1,
        snap(web(), servers=srv),
        [event("maintenance_blocked", "no backup can take web")],
    )
    assert v.outcome is Outcome.FAILED and "no backup can take web" in v.text
    up = {**srv, A: replace(srv[A], state=ServerState.UP)}
    v = judge_maintenance(A, True, frozenset(), CSN1, snap(web(), servers=up), [])
    assert v.outcome is Outcome.FAILED and "meanwhile" in v.text


def test_maintenance_off_done_when_up_and_not_before_the_write_shows() -> None:
    old = {A: Server(A, state=ServerState.MAINTENANCE, csn=CSN0)}
    assert (
        judge_maintenance(A, False, frozenset(), CSN1, snap(servers=old), []).outcome
        is Outcome.PENDING
    )
    up = {A: Server(A, state=ServerState.UP, csn=CSN1)}
    assert (
        judge_maintenance(A, False, frozenset(), CSN1, snap(servers=up), []).outcome is Outcome.DONE
    )


def test_an_ignored_failback_fails_even_when_the_application_is_on_its_primary() -> None:
    # The sentinel ignored the operator's failback; the application reached its primary
    # anyway (or was there already): the request did nothing, so --wait does not exit 0.
    ignored = [event("request_ignored", "already on its primary")]
    v = judge_request(web(), Request(RequestKind.FAILBACK), CSN1, snap(web(csn=CSN2)), ignored)
    assert v.outcome is Outcome.FAILED and "ignored" in v.text

"""The store against a real 3-provider cluster: typed CRUD, compare-and-swap, failover."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest

from ndsclust.errors import EntryExists, NoSuchEntry, SwapConflict
from ndsclust.lab.directory import DirectoryCluster, wait_until
from ndsclust.ldapstore import replication
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import (
    App,
    AppState,
    AppType,
    LivenessReport,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
)

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


def make_store(directory: DirectoryCluster, base: str, uris: list[str] | None = None) -> Store:
    creds = directory.admin_credentials()
    return Store(
        Providers(uris or directory.uris, creds, timeout=1.0),
        directory.suffix,
        base=base,
        pulse_base=directory.pulse_suffix,
    )


@pytest.fixture
def store(directory: DirectoryCluster) -> Iterator[Store]:
    base = f"ou=t{uuid.uuid4().hex[:8]},{directory.suffix}"
    s = make_store(directory, base)
    s.ensure_base()
    for name in (A, B, C):
        s.add_server(Server(name=name, addresses=(f"127.0.0.1:{7000 + len(name)}",)))
    try:
        yield s
    finally:
        s.close()


def web(host: ServerName | None = A) -> App:
    return App(
        tag=Tag("web"),
        type=AppType.CAPABLE,
        command=("/bin/sleep", "1000"),
        primary=A,
        backups=(B, C),
        host=host,
        state=StateValue(AppState.RUNNING),
    )


def test_ensure_base_is_idempotent(store: Store) -> None:
    store.ensure_base()
    store.ensure_base()
    servers, bad = store.servers()
    assert set(servers) == {A, B, C} and bad == []


def test_app_round_trip_as_typed_object(store: Store) -> None:
    store.add_app(web())
    app = store.app("web")
    assert app.host == A and app.backups == (B, C) and app.command == ("/bin/sleep", "1000")
    assert app.uuid and app.csn
    with pytest.raises(EntryExists):
        store.add_app(web())
    with pytest.raises(NoSuchEntry, match="no application with tag 'nope'"):
        store.app("nope")


def test_swap_with_wrong_expected_host_is_a_conflict_and_changes_nothing(store: Store) -> None:
    store.add_app(web(host=A))
    with pytest.raises(SwapConflict, match="no longer 'beta'"):
        store.swap_host(Tag("web"), expected=B, new=C, state=StateValue(AppState.LOADING))
    app = store.app("web")
    assert app.host == A and app.state.state is AppState.RUNNING
    with pytest.raises(SwapConflict):
        store.swap_host(Tag("web"), expected=None, new=C)  # expects no host: there is one
    assert store.app("web").host == A


def test_swap_moves_host_and_state_in_one_request(store: Store) -> None:
    store.add_app(web(host=A))
    store.swap_host(Tag("web"), expected=A, new=B, state=StateValue(AppState.LOADING))
    app = store.app("web")
    assert app.host == B and app.state.state is AppState.LOADING
    store.swap_host(Tag("web"), expected=B, new=None, state=StateValue(AppState.STOPPED))
    assert store.app("web").host is None
    store.swap_host(Tag("web"), expected=None, new=C)
    assert store.app("web").host == C


def test_racing_swaps_on_the_write_provider_have_one_winner(
    directory: DirectoryCluster, store: Store
) -> None:
    store.add_app(web(host=A))
    winners: list[ServerName] = []
    conflicts: list[ServerName] = []
    barrier = threading.Barrier(2)

    def claim(me: ServerName) -> None:
        s = make_store(directory, store.base)
        try:
            barrier.wait(5)
            s.swap_host(Tag("web"), expected=A, new=me)
            winners.append(me)
        except SwapConflict:
            conflicts.append(me)
        finally:
            s.close()

    threads = [threading.Thread(target=claim, args=(n,)) for n in (B, C)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(winners) == 1 and len(conflicts) == 1
    assert store.app("web").host == winners[0]


def test_invalid_entry_is_reported_and_the_rest_still_read(store: Store) -> None:
    store.add_app(web())
    store.add(
        store.app_dn("broken"),
        {
            "objectClass": ["top", "ndsclustApplication"],
            "ndsclustTag": ["broken"],
            "ndsclustType": ["daemon"],
            "ndsclustCommand": ["/bin/true"],
            "ndsclustPrimaryServer": ["alpha"],
        },
    )
    store.add(
        store.app_dn("orphan"),
        {
            "objectClass": ["top", "ndsclustApplication"],
            "ndsclustTag": ["orphan"],
            "ndsclustType": ["capable"],
            "ndsclustCommand": ["/bin/true"],
            "ndsclustPrimaryServer": ["alpha"],
            "ndsclustBackupServer": ["{0}nowhere"],
        },
    )
    snap = store.snapshot()
    assert set(snap.apps) == {"web"}
    problems = {(e.dn.split(",")[0], e.attribute) for e in snap.invalid}
    assert problems == {
        ("ndsclustTag=broken", "ndsclustType"),
        ("ndsclustTag=orphan", "ndsclustBackupServer"),
    }


def test_requests_are_consumed_exactly_once(store: Store) -> None:
    from ndsclust.model import Request

    store.add_app(web())
    req = Request.parse("migrate:gamma")
    store.set_request(Tag("web"), req)
    assert store.app("web").request == req
    store.consume_request(Tag("web"), req)
    assert store.app("web").request is None
    with pytest.raises(SwapConflict):
        store.consume_request(Tag("web"), req)


def test_events_are_recorded_listed_and_pruned(store: Store) -> None:
    store.event_limit = 5
    for i in range(8):
        store.record_event("failover", server=B, tag="web", text=f"n{i}")
    assert [e.text for e in store.events(tag="web")][-1] == "n7"
    assert store.prune_events() == 3
    assert [e.text for e in store.events()] == [f"n{i}" for i in range(3, 8)]


def test_events_of_several_applications_share_an_entry_and_read_one_per_application(
    store: Store,
) -> None:
    store.record_events(
        [
            ("failover", "a", "failover from alpha"),
            ("failover", "b", "failover from alpha"),
            ("server_down", None, "alpha"),
            ("failover", "c", "failover from alpha"),
            ("restart", "b", "exit code 1"),
        ],
        server=B,
    )
    found = store.search(store.events_dn, "(objectClass=ndsclustEvent)", attributes=["1.1"])
    assert len(found) == 3  # a b c; the server's event; b's restart
    assert sorted((e.kind, e.tag) for e in store.events()) == [
        ("failover", "a"),
        ("failover", "b"),
        ("failover", "c"),
        ("restart", "b"),
        ("server_down", None),
    ]
    assert [(e.kind, e.text) for e in store.events(tag="B")] == [
        ("failover", "failover from alpha"),
        ("restart", "exit code 1"),
    ]
    assert store.events(tag="nothing") == []
    store.record_event("failover", server=B, tag="a", text="one entry as before")
    assert [e.text for e in store.events(tag="a")][-1] == "one entry as before"


def test_pulse_written_and_read_back(store: Store) -> None:
    store.write_pulse(A, 1)
    store.write_pulse(A, 2)
    assert store.pulses()[A].counter == 2


def test_networks_published_on_the_pulse_entry_and_kept_by_later_pulses(store: Store) -> None:
    store.write_pulse(B, 1)
    nets = frozenset({"net:198.18.5.0/24", "iface:lan0"})
    store.write_networks(B, nets)
    store.write_pulse_report(B, 2, LivenessReport(channels=frozenset({"lan"})))
    store.write_pulse(B, 3)
    assert store.pulses()[B].networks == nets
    store.write_networks(B, frozenset())
    assert store.pulses()[B].networks == frozenset()  # published: none ("-")
    with pytest.raises(NoSuchEntry):
        store.write_networks(ServerName("nosuch"), nets)


def test_server_state(store: Store) -> None:
    store.set_server_state(B, ServerState.MAINTENANCE)
    assert store.servers()[0][B].state is ServerState.MAINTENANCE


def test_store_fails_over_when_the_write_provider_is_killed(
    directory: DirectoryCluster, store: Store
) -> None:
    store.add_app(web(host=A))
    assert store.provider == directory.uris[0]
    # The entry must have reached the other providers before its write provider dies: an
    # add that never replicated is lost with it, and that is not what this test is about.
    directory.wait_converged()
    first = directory.providers[0]
    first.kill()
    try:
        store.swap_host(Tag("web"), expected=A, new=B)
        assert store.provider == directory.uris[1]
        assert store.app("web").host == B
    finally:
        first.start()
    directory.wait_converged()
    wait_until(lambda: store.app("web").host == B, timeout=10, what="app readable after restart")


def test_schema_install_twice_succeeds(directory: DirectoryCluster) -> None:
    args = [sys.executable, "-m", "ndsclust", "-Y"]
    for p in directory.providers:
        args += ["--uri", p.ldapi_url]
    for _ in range(2):
        out = subprocess.run(
            args + ["schema", "install"], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("already loaded") == len(directory.providers)


def test_schema_install_loads_a_provider_that_lacks_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    bare = DirectoryCluster(n=1, base_dir=tmp_path_factory.mktemp("bare"), with_schema=False)
    try:
        bare.start()
        args = [
            sys.executable,
            "-m",
            "ndsclust",
            "-Y",
            "--uri",
            bare.providers[0].ldapi_url,
            "schema",
            "install",
        ]
        first = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert first.returncode == 0, first.stderr
        assert "installed" in first.stdout and "already" not in first.stdout
        second = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert second.returncode == 0 and "already loaded" in second.stdout
    finally:
        bare.stop()


def test_entry_csns_name_every_answering_provider(
    store: Store, directory: DirectoryCluster
) -> None:
    store.add_app(web())
    dn = store.app_dn("web")
    creds = directory.admin_credentials()
    unanswered = "ldap://127.0.0.1:1"  # nothing listens: left out, not an error
    uris = [*directory.uris, unanswered]

    def csns() -> dict[str, str | None]:
        return replication.entry_csns(uris, creds, dn, timeout=1.0)

    wait_until(lambda: len(set(csns().values())) == 1, timeout=10, what="one copy everywhere")
    found = csns()
    assert set(found) == set(directory.uris)
    assert all(c and c.count("#") == 3 for c in found.values())
    store.delete_app("web")
    wait_until(
        lambda: csns() == dict.fromkeys(directory.uris), timeout=10, what="absent everywhere"
    )

"""Provider order from what the channels say of the providers' servers (connection.py)."""

from __future__ import annotations

import threading

import pytest

from ndsclust.errors import ProviderUnreachable
from ndsclust.ldapstore import connection
from ndsclust.ldapstore import session as session_module
from ndsclust.ldapstore.connection import Credentials, Providers
from ndsclust.ldapstore.session import Session

URIS = ("ldaps://p1:636", "ldaps://p2:636", "ldaps://p3:636")
SERVERS = dict(zip(URIS, ("alpha", "beta", "gamma"), strict=False))


def test_provider_of_a_dead_server_is_tried_last() -> None:
    p = Providers(URIS, Credentials(), servers=SERVERS)
    assert p.order() == [0, 1, 2]
    assert p.set_liveness({"alpha"}, {"beta", "gamma"})
    assert p.order() == [1, 2, 0] and p.dead(0)
    assert p.order(prefer=2) == [2, 1, 0]
    assert not p.set_liveness({"alpha"}, {"beta"})
    assert p.set_liveness(set(), {"alpha", "beta"})
    assert p.order() == [0, 1, 2]


def test_a_shared_list_follows_the_liveness_but_has_its_own_timeout_and_close() -> None:
    # The pulse writer's and the control socket's connections (sentinel/build.py).
    p = Providers(URIS, Credentials(), servers=SERVERS)
    q = p.sharing(timeout=1.0)
    assert q.timeout == 1.0 and q.uris == p.uris
    assert p.set_liveness({"alpha"}, {"beta", "gamma"})
    assert q.dead(0) and q.order() == [1, 2, 0]
    q.close()
    assert q.closed and not p.closed
    assert p.set_liveness(set(), {"alpha", "beta", "gamma"})
    assert q.order() == [0, 1, 2]


def test_without_the_map_liveness_changes_nothing() -> None:
    p = Providers(URIS, Credentials())
    assert not p.set_liveness({"alpha"}, set())
    assert p.order() == [0, 1, 2]


def fake_open(silent: set[str], refused: set[str]):  # type: ignore[no-untyped-def]
    tried: list[str] = []

    def open_connection(uri: str, creds: Credentials, **kw: object) -> object:
        tried.append(uri)
        if uri in silent:
            raise ProviderUnreachable(f"{uri}: timed out")
        if uri in refused:
            raise ProviderUnreachable(f"{uri}: refused", answered=True)
        return uri

    return tried, open_connection


def test_patient_pass_stays_with_a_silent_provider_whose_server_is_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried, fake = fake_open(silent={URIS[0]}, refused=set())
    monkeypatch.setattr(connection, "open_connection", fake)
    p = Providers(URIS, Credentials(), servers=SERVERS)
    p.set_liveness(set(), {"alpha", "beta", "gamma"})
    with pytest.raises(ProviderUnreachable, match="alive"):
        p.connect(patient=True)
    assert tried == [URIS[0]]
    # Not patient (reads), or its server dead: the pass moves on.
    assert p.connect() == (1, URIS[1])
    p.set_liveness({"alpha"}, {"beta", "gamma"})
    tried.clear()
    assert p.connect(patient=True) == (1, URIS[1]) and tried == [URIS[1]]


def test_patient_pass_leaves_a_provider_that_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    tried, fake = fake_open(silent=set(), refused={URIS[0]})
    monkeypatch.setattr(connection, "open_connection", fake)
    p = Providers(URIS, Credentials(), servers=SERVERS)
    p.set_liveness(set(), {"alpha", "beta"})
    assert p.connect(patient=True) == (1, URIS[1])
    assert tried == [URIS[0], URIS[1]]


class _Conn:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.result = {"result": 0}
        self.closed = False

    def modify(self, dn: str, changes: object, controls: object = None) -> bool:
        self.sent.append(dn)
        return True


def test_a_claim_withdrawn_at_the_last_moment_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reason is asked once the provider is connected, however long that took: a claim
    whose host is heard again meanwhile never leaves."""
    from ndsclust.errors import Withdrawn
    from ndsclust.ldapstore.store import Store
    from ndsclust.model import ServerName

    conn = _Conn()
    store = Store(Providers(URIS, Credentials()), "dc=example,dc=com")
    monkeypatch.setattr(store, "_connection", lambda: conn)
    heard = [False]

    def unless() -> str | None:
        return "the host is heard again" if heard[0] else None

    store.swap_host("web", ServerName("alpha"), ServerName("beta"), unless=unless)
    assert len(conn.sent) == 1
    heard[0] = True
    with pytest.raises(Withdrawn, match="heard again"):
        store.swap_host("web", ServerName("alpha"), ServerName("beta"), unless=unless)
    assert len(conn.sent) == 1


def test_ldapi_without_a_path_means_the_default_socket() -> None:
    # ldap3 alone would connect to the socket "//" (docs/platform.md fact 33).
    assert connection._server_uri("ldapi:///") == "ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi"
    assert connection._server_uri("ldapi://%2Ftmp%2Fs") == "ldapi://%2Ftmp%2Fs"
    assert connection._server_uri("ldaps://a:636") == "ldaps://a:636"


def test_a_reconnect_waiting_out_its_backoff_retries_once_a_server_is_found_dead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A patient pass stays with alpha's silent provider while alpha is heard; the backoff
    # after it (here far longer than the test may take) ends the moment alpha is found dead.
    _, fake = fake_open(silent={URIS[0]}, refused=set())
    first_pass = threading.Event()

    def open_connection(uri: str, creds: Credentials, **kw: object) -> object:
        try:
            return fake(uri, creds, **kw)
        finally:
            first_pass.set()

    monkeypatch.setattr(connection, "open_connection", open_connection)
    p = Providers(URIS, Credentials(), servers=SERVERS, backoff_initial=600.0)
    p.set_liveness(set(), {"alpha", "beta", "gamma"})
    got: list[tuple[int, object]] = []
    t = threading.Thread(target=lambda: got.append(p.connect_retrying(patient=True)))
    t.start()
    try:
        assert first_pass.wait(30), "the first pass never ran"
        p.set_liveness({"alpha"}, {"beta", "gamma"})
        t.join(timeout=30)
        assert not t.is_alive(), "the reconnect waited out its backoff"
        assert got == [(1, URIS[1])]
    finally:
        p.close()
        t.join(timeout=30)


def test_the_write_session_does_not_probe_a_dead_servers_provider_to_go_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On the second provider, the session checks now and then whether it can go back to
    # the first; to a provider whose server is dead that probe would only time out, in the
    # middle of a takeover's claim.
    probed: list[str] = []

    def probe(uri: str, creds: Credentials, **kw: object) -> object:
        probed.append(uri)
        raise ProviderUnreachable(f"{uri}: timed out")

    monkeypatch.setattr(session_module, "open_connection", probe)
    p = Providers(URIS, Credentials(), servers=SERVERS)
    s = Session(p, "dc=test")
    s._conn, s._index = object(), 1  # type: ignore[assignment]
    p.set_liveness({"alpha"}, {"beta", "gamma"})
    s._try_return()
    assert probed == []
    p.set_liveness(set(), {"alpha", "beta", "gamma"})
    s._try_return()
    assert probed == [URIS[0]]

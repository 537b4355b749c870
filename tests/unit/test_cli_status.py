"""``status``: what the view shows, from a snapshot, pulses, events and a given time."""

from __future__ import annotations

from datetime import UTC, datetime

from ndsclust.cli.status_cmd import (
    app_rows,
    change_key,
    last_events,
    server_rows,
    status_data,
)
from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore.store import Snapshot
from ndsclust.model import (
    App,
    AppState,
    AppType,
    Event,
    Pulse,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
)

A, B = ServerName("alpha"), ServerName("beta")
STAMP = "20261119110640.000000Z"
NOW = datetime(2026, 11, 19, 11, 6, 42, tzinfo=UTC).timestamp()  # STAMP + 2 s


def snapshot() -> Snapshot:
    web = App(
        Tag("web"),
        AppType.CAPABLE,
        ("/bin/sleep", "9"),
        A,
        (B,),
        host=B,
        state=StateValue(AppState.RUNNING),
        resources=frozenset({"san1"}),
    )
    db = App(
        Tag("db"),
        AppType.AWARE,
        ("/bin/db",),
        B,
        (),
        host=None,
        state=StateValue(AppState.ERROR, "no server"),
    )
    servers = {A: Server(A, ("127.0.0.1:1",)), B: Server(B, state=ServerState.MAINTENANCE)}
    bad = EntryInvalid("ndsclustTag=x,ou=applications,ou=ndsclust,dc=x", "ndsclustType", "bad")
    return Snapshot({web.tag: web, db.tag: db}, servers, (bad,))


EVENTS = [
    Event("2", "20261119110630.000000Z", "failover", B, Tag("web"), "alpha died"),
    Event("1", "20261119110600.000000Z", "load", A, Tag("web")),
    Event("3", "20261119110500.000000Z", "server_add", None, None),
]


def test_last_event_per_tag_is_the_newest() -> None:
    latest = last_events(EVENTS)
    assert latest[Tag("web")].kind == "failover" and set(latest) == {Tag("web")}


def test_status_json_has_stable_keys_and_values() -> None:
    data = status_data(snapshot(), {A: Pulse(A, 41, STAMP)}, EVENTS, NOW, stale=5.0)
    assert set(data) == {"servers", "applications", "invalid", "pause"}
    assert data["pause"] is None
    alpha, beta = data["servers"]
    assert set(alpha) == {
        "name",
        "state",
        "entry_state",
        "liveness",
        "reason",
        "heard_by",
        "addresses",
        "resources",
        "hosting",
        "pulse",
        "pulse_fresh",
        "seen",
    }
    assert alpha["pulse"] == {"counter": 41, "time": "2026-11-19T11:06:40.000000Z", "age": 2.0}
    assert alpha["pulse_fresh"] and alpha["seen"] == ["directory"]
    # beta publishes no pulse and nobody reports hearing it: down, whatever its entry says
    assert beta["state"] == "down" and beta["entry_state"] == "maintenance"
    assert beta["pulse"] is None and beta["seen"] == []
    assert beta["hosting"] == ["web"]
    db, web = data["applications"]
    assert db["state"] == "error(no server)" and db["host"] is None
    assert web["backups"] == ["beta"] and web["resources"] == ["san1"]
    assert web["last_event"]["kind"] == "failover"
    assert web["last_event"]["time"] == "2026-11-19T11:06:30.000000Z"
    assert data["invalid"] == [
        {
            "dn": "ndsclustTag=x,ou=applications,ou=ndsclust,dc=x",
            "attribute": "ndsclustType",
            "problem": "bad",
        }
    ]


def test_old_pulse_is_silent_and_not_seen() -> None:
    data = status_data(snapshot(), {A: Pulse(A, 41, STAMP)}, [], NOW + 10, stale=5.0)
    alpha = data["servers"][0]
    assert not alpha["pulse_fresh"] and alpha["seen"] == []
    assert server_rows(data)[0]["pulse_age"] == "12s (silent)"


def test_rows_for_the_table() -> None:
    data = status_data(snapshot(), {A: Pulse(A, 41, STAMP)}, EVENTS, NOW)
    assert server_rows(data)[0] == {
        "server": "alpha",
        "state": "up",
        "seen": ["directory"],
        "pulse_age": "2.0s",
        "hosting": [],
        "reason": "no peer reports on it; it is alive",
    }
    web = app_rows(data, NOW)[1]
    assert web["last_event"] == "failover (12s ago)" and web["host"] == "beta"


def test_a_new_pulse_alone_is_no_change_but_going_silent_is() -> None:
    before = status_data(snapshot(), {A: Pulse(A, 41, STAMP)}, [], NOW)
    beat = status_data(snapshot(), {A: Pulse(A, 42, "20261119110641.000000Z")}, [], NOW + 1)
    assert change_key(before) == change_key(beat)
    silent = status_data(snapshot(), {A: Pulse(A, 41, STAMP)}, [], NOW + 30)
    assert change_key(before) != change_key(silent)

"""The console's pure part: actions checked against the snapshot, sessions, CSRF, origin."""

from __future__ import annotations

import pytest

from ndsclust.cli import build_parser
from ndsclust.cli.web_cmd import listen_address
from ndsclust.errors import ConfigError
from ndsclust.ldapstore.connection import Credentials
from ndsclust.ldapstore.store import Snapshot
from ndsclust.model import Event, Server, ServerName, Tag
from ndsclust.web.state import (
    Action,
    Sessions,
    console_state,
    cookie,
    csrf_ok,
    parse_action,
    parse_cookies,
    same_origin,
)
from tests.unit.test_decide import A, B, G, app

SNAP = Snapshot(apps={Tag("web"): app(A)}, servers={s: Server(s) for s in (A, B, G)})


def test_application_verbs_write_their_request() -> None:
    for verb in ("load", "unload", "failback", "cleanup"):
        a = parse_action({"verb": verb, "tag": "web"}, SNAP)
        assert a == Action(verb, Tag("web")) and a.request == verb
        assert a.audit_kind == f"request_{verb}" and a.text == f"request={verb}"
    m = parse_action({"verb": "migrate", "tag": "web", "server": "beta"}, SNAP)
    assert m.request == "migrate:beta" and m.server == B


def test_maintenance_names_a_server_and_a_mode() -> None:
    a = parse_action({"verb": "maintenance", "server": "gamma", "mode": "on"}, SNAP)
    assert a.on and a.server == G and a.audit_kind == "maintenance_on"
    off = parse_action({"verb": "maintenance", "server": "gamma", "mode": "off"}, SNAP)
    assert not off.on and off.audit_kind == "maintenance_off"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON object"),
        ({"verb": "reboot", "tag": "web"}, "unknown action"),
        ({"verb": "load", "tag": "nope"}, "unknown application"),
        ({"verb": "load"}, "unknown application"),
        ({"verb": "migrate", "tag": "web"}, "needs a server"),
        ({"verb": "migrate", "tag": "web", "server": "delta"}, "unknown server"),
        ({"verb": "migrate", "tag": "web", "server": 3}, "unknown server"),
        ({"verb": "maintenance", "mode": "on"}, "needs a server"),
        ({"verb": "maintenance", "server": "beta", "mode": "maybe"}, "mode"),
    ],
)
def test_bad_actions_say_what_is_wrong(body: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_action(body, SNAP)


def test_sessions_expire_and_are_bounded() -> None:
    n = iter(range(1000))
    s = Sessions(ttl=10, limit=2, token=lambda: f"t{next(n)}")
    creds = Credentials(bind_dn="cn=op")
    one = s.create("cn=op", creds, 0.0)
    assert s.get(one.id, 5.0) == one and s.get(one.id, 10.0) is None
    a, b, c = (s.create("cn=op", creds, 20.0) for _ in range(3))
    assert s.get(a.id, 21.0) is None and s.get(b.id, 21.0) == b and s.get(c.id, 21.0) == c
    s.drop(b.id)
    assert s.get(b.id, 21.0) is None and s.get(None, 21.0) is None


def test_csrf_needs_the_sessions_own_token() -> None:
    s = Sessions(token=iter(["id", "secret"]).__next__).create("cn=op", Credentials(), 0.0)
    assert csrf_ok(s, "secret")
    assert not csrf_ok(s, "other") and not csrf_ok(s, None) and not csrf_ok(None, "secret")


def test_only_the_consoles_own_origin_may_post() -> None:
    assert same_origin("http://127.0.0.1:8470", "127.0.0.1:8470", "http")
    assert not same_origin("http://evil.example", "127.0.0.1:8470", "http")
    assert not same_origin("http://127.0.0.1:8470", "127.0.0.1:8470", "https")
    assert not same_origin("null", "127.0.0.1:8470", "http")
    assert same_origin(None, "127.0.0.1:8470", "http")  # no browser: the token still counts


def test_cookies() -> None:
    text = cookie("c", "abc", secure=True, max_age=60)
    assert "HttpOnly" in text and "SameSite=Strict" in text and text.endswith("Secure")
    assert parse_cookies("a=1; c=abc; junk") == {"a": "1", "c": "abc"}


def test_console_state_lists_applications_servers_and_latest_events_first() -> None:
    events = [
        Event(id=str(i), time=f"2026120203000{i}Z", kind="failover", tag=Tag("web"))
        for i in range(3)
    ]
    data = console_state(SNAP, {}, events, 0.0)
    assert [a["tag"] for a in data["applications"]] == ["web"]
    assert data["applications"][0]["host"] == "alpha"
    assert [s["name"] for s in data["servers"]] == [
        ServerName(n) for n in ("alpha", "beta", "gamma")
    ]
    assert [e["id"] for e in data["events"]] == ["2", "1", "0"]


def test_the_console_listens_on_loopback_unless_told_otherwise() -> None:
    assert listen_address("127.0.0.1:8470", tls=False, plain=False) == ("127.0.0.1", 8470)
    assert listen_address("[::1]:0", tls=False, plain=False) == ("::1", 0)
    assert listen_address("198.18.0.9:8470", tls=True, plain=False) == ("198.18.0.9", 8470)
    assert listen_address("198.18.0.9:8470", tls=False, plain=True) == ("198.18.0.9", 8470)
    with pytest.raises(ConfigError, match="not loopback"):
        listen_address("198.18.0.9:8470", tls=False, plain=False)
    for bad in ("localhost:8470", "127.0.0.1", "127.0.0.1:99999"):
        with pytest.raises(ConfigError, match="ADDR:PORT"):
            listen_address(bad, tls=False, plain=False)


def test_web_is_a_command() -> None:
    args = build_parser().parse_args(["web", "--listen", "127.0.0.1:0"])
    assert args.listen == "127.0.0.1:0" and args.handler.__name__ == "cmd_web"

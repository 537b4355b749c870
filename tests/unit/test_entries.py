"""Parsing and validation of what operators write into application and server entries."""

import pytest

from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore import entries
from ndsclust.model import (
    App,
    AppState,
    AppType,
    Request,
    RequestKind,
    ServerName,
    StateValue,
    Tag,
)

DN = "ndsclustTag=web,ou=applications,ou=ndsclust,dc=x"


def attrs(**over: object) -> dict[str, list[str]]:
    base: dict[str, list[str]] = {
        "objectClass": ["top", "ndsclustApplication"],
        "ndsclustTag": ["web"],
        "ndsclustType": ["capable"],
        "ndsclustCommand": ["/usr/bin/python3 -m http.server 8080"],
        "ndsclustPrimaryServer": ["alpha"],
        "ndsclustBackupServer": ["{0}beta", "{1}gamma"],
        "ndsclustHostServer": ["alpha"],
        "ndsclustAutoRecover": ["TRUE"],
        "ndsclustState": ["running"],
        "entryUUID": ["0b9c6a52-0000-4000-8000-000000000001"],
    }
    for k, v in over.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v if isinstance(v, list) else [str(v)]
    return base


def test_valid_entry_parses_to_typed_app() -> None:
    app = entries.parse_app(DN, attrs())
    assert app.tag == "web" and app.type is AppType.CAPABLE
    assert app.command == ("/usr/bin/python3", "-m", "http.server", "8080")
    assert app.backups == ("beta", "gamma")
    assert app.host == "alpha" and app.auto_recover is True
    assert app.state == StateValue(AppState.RUNNING)
    assert app.uuid.startswith("0b9c6a52")


def test_backups_keep_the_operators_order_from_x_ordered_prefixes() -> None:
    app = entries.parse_app(DN, attrs(ndsclustBackupServer=["{1}gamma", "{0}delta"]))
    assert app.backups == ("delta", "gamma")


def test_attribute_names_match_case_insensitively_and_bytes_decode() -> None:
    a = {k.lower(): [v.encode() for v in vs] for k, vs in attrs().items()}
    assert entries.parse_app(DN, a).tag == "web"


@pytest.mark.parametrize(
    "attr,value,words",
    [
        ("ndsclustType", "daemon", "allowed: capable, aware"),
        ("ndsclustCommand", "", "is empty"),
        ("ndsclustCommand", "   ", "is empty"),
        ("ndsclustCommand", "myapp --serve", "absolute path"),
        ("ndsclustCommand", "/bin/x 'unclosed", "quotes"),
        ("ndsclustCommand", "/bin/x\x07", "control characters"),
        ("ndsclustPrimaryServer", "Alpha", "lower case: 'alpha'"),
        ("ndsclustPrimaryServer", None, "required"),
        ("ndsclustBackupServer", ["{0}beta", "{1}beta"], "twice"),
        ("ndsclustBackupServer", ["{0}alpha"], "primary"),
        ("ndsclustHostServer", "no such!", "not a server name"),
        ("ndsclustAutoRecover", "yes", "allowed: TRUE, FALSE"),
        ("ndsclustState", "sleeping", "allowed: loading"),
        ("ndsclustRequest", "reboot", "allowed: load, unload, failback, cleanup, migrate:<server>"),
        ("ndsclustRequest", "migrate:", "not a server name"),
        ("ndsclustResource", "bad resource", "not a resource name"),
        ("ndsclustTag", ["web", "www"], "exactly one"),
    ],
)
def test_malformed_attribute_names_dn_attribute_and_what_is_allowed(
    attr: str, value: object, words: str
) -> None:
    with pytest.raises(EntryInvalid) as err:
        entries.parse_app(DN, attrs(**{attr: value}))
    assert err.value.dn == DN and err.value.attribute == attr
    assert words in str(err.value)


def test_huge_value_is_refused() -> None:
    with pytest.raises(EntryInvalid, match="too long"):
        entries.parse_app(DN, attrs(ndsclustCommand="/bin/x " + "a" * 10000))


def test_state_with_reason_round_trips() -> None:
    s = StateValue.parse("failed(no backup offers san1)")
    assert s.state is AppState.FAILED and s.reason == "no backup offers san1"
    assert StateValue.parse(str(s)) == s


def test_request_values() -> None:
    assert Request.parse("migrate:gamma") == Request(RequestKind.MIGRATE, ServerName("gamma"))
    assert str(Request(RequestKind.MIGRATE, ServerName("gamma"))) == "migrate:gamma"
    assert Request.parse("failback").kind is RequestKind.FAILBACK
    with pytest.raises(ValueError, match="needs a server"):
        Request.parse("migrate")


def test_reference_to_unknown_server_is_reported() -> None:
    app = entries.parse_app(DN, attrs(ndsclustBackupServer=["{0}beta", "{1}nowhere"]))
    with pytest.raises(EntryInvalid, match="unknown server 'nowhere'") as err:
        entries.check_references(app, {"alpha", "beta"})
    assert err.value.attribute == "ndsclustBackupServer"


def test_app_attributes_round_trip_through_the_parser() -> None:
    app = App(
        tag=Tag("db"),
        type=AppType.AWARE,
        command=("/usr/bin/db", "--data", "/srv/a b"),
        primary=ServerName("alpha"),
        backups=(ServerName("gamma"), ServerName("beta")),
        host=ServerName("gamma"),
        resources=frozenset({"san1"}),
        auto_recover=False,
        marker="42",
        request=Request(RequestKind.FAILBACK),
    )
    back = entries.parse_app("ndsclustTag=db,ou=applications", entries.app_attributes(app))
    assert back.command == app.command and back.backups == app.backups
    assert back.resources == app.resources and back.marker == "42"
    assert back.auto_recover is False and back.request == app.request


def test_server_entry_validation() -> None:
    ok = entries.parse_server(
        "cn=alpha,ou=servers",
        {
            "cn": ["alpha"],
            "ndsclustAddress": ["198.18.0.2:7946"],
            "ndsclustServerState": ["maintenance"],
        },
    )
    assert ok.addresses == ("198.18.0.2:7946",) and ok.state.value == "maintenance"
    with pytest.raises(EntryInvalid, match="ip:port"):
        entries.parse_server("cn=a,ou=servers", {"cn": ["a"], "ndsclustAddress": ["host"]})
    with pytest.raises(EntryInvalid, match="allowed: up, down, maintenance"):
        entries.parse_server("cn=a,ou=servers", {"cn": ["a"], "ndsclustServerState": ["gone"]})


def test_entry_is_case_insensitive_and_decodes_on_demand() -> None:
    e = entries.Entry(
        DN,
        {
            "objectClass": [b"top", b"ndsclustApplication"],
            "entryCSN": [b"20261125120000.000001Z#000000#001#000000"],
            "EntryUUID": [b"0b9c6a52"],
            "ndsclustTag": [b"caf\xc3\xa9", b"\xff"],
        },
    )
    assert e.csn.startswith("20261125120000") and e.uuid == "0b9c6a52"
    assert e.classes == {"top", "ndsclustapplication"}
    assert e.all("NDSCLUSTTAG") == ("café", "\ufffd") and e.first("absent") is None
    assert e.attributes["EntryUUID"] == ("0b9c6a52",)  # names as received


def test_entries_share_the_values_many_of_them_hold() -> None:
    a = entries.parse_app(DN, attrs())
    b = entries.parse_app(DN.replace("web", "db"), attrs(ndsclustTag="db"))
    assert a.primary is b.primary and a.backups is b.backups and a.state is b.state
    assert a.command[0] is b.command[0]


# -- events naming several applications --------------------------------------------------

EVENT_DN = "ndsclustEventId=e1,ou=events,ou=ndsclust,dc=x"


def event_attrs(
    text: str, *, tag: str | None = None, server: str | None = "beta"
) -> dict[str, list[str]]:
    attrs = {
        "objectClass": ["top", "ndsclustEvent"],
        "ndsclustEventId": ["e1"],
        "ndsclustEventTime": ["20261202010000.000000Z"],
        "ndsclustEventKind": ["failover"],
        "ndsclustEventText": [text],
    }
    if tag:
        attrs["ndsclustEventTag"] = [tag]
    if server:
        attrs["ndsclustEventServer"] = [server]
    return attrs


def test_events_of_one_kind_and_text_share_an_entry_and_keep_each_applications_order() -> None:
    got = entries.batch_events(
        [
            ("failover", "a", "from alpha"),
            ("failover", "b", "from alpha"),
            ("server_down", None, "alpha"),
            ("restart", "a", "exit code 1"),
            ("failover", "c", "from alpha"),
            ("failover", "a", "from alpha"),  # after a's restart: not before it
            ("failover", "d", "from gamma"),
        ]
    )
    assert got == [
        ("failover", ("a", "b", "c"), "from alpha"),
        ("server_down", (), "alpha"),
        ("restart", ("a",), "exit code 1"),
        ("failover", ("a",), "from alpha"),
        ("failover", ("d",), "from gamma"),
    ]


def test_an_entry_naming_applications_stays_within_the_value_limit() -> None:
    tags = [f"app{i:04d}" for i in range(1000)]
    got = entries.batch_events([("failover", t, "x" * 5000) for t in tags], limit=4096)
    assert [t for _, group, _ in got for t in group] == tags
    for _, group, text in got:
        assert len(text) == entries.EVENT_TEXT_LIMIT
        assert len(entries.event_text(text, group)) <= 4096
    assert len(got) == 1000 // len(got[0][1]) + (1000 % len(got[0][1]) > 0)


def test_an_entry_naming_applications_reads_as_one_event_per_application() -> None:
    text = entries.event_text("failover from alpha", ["a", "b"])
    event = entries.parse_event(EVENT_DN, event_attrs(text))
    assert event.tag is None and event.tags == ("a", "b") and event.text == "failover from alpha"
    each = event.each()
    assert [(e.tag, e.text, e.id, e.dn, e.tags) for e in each] == [
        ("a", "failover from alpha", "e1/a", EVENT_DN, ()),
        ("b", "failover from alpha", "e1/b", EVENT_DN, ()),
    ]


@pytest.mark.parametrize(
    ("text", "tag", "server"),
    [
        ("failover from alpha\napplications: a b", "web", "beta"),  # tagged: as written
        ("failover from alpha\napplications: a b", None, None),  # no server: an operator's
        ("rejoin\napplications: a *b", None, "beta"),  # not tags
        ("failover from alpha\napplications: a", None, "beta"),  # one: never written so
        ("failover from alpha", None, "beta"),
    ],
)
def test_other_event_texts_read_as_they_are(text: str, tag: str | None, server: str | None) -> None:
    event = entries.parse_event(EVENT_DN, event_attrs(text, tag=tag, server=server))
    assert event.text == text and event.tags == () and event.each() == (event,)

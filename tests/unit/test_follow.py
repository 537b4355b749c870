"""Watch events as typed updates: what the follower, the CLI and the sentinel read."""

from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.follow import (
    EntryChanged,
    EventSeen,
    Gone,
    Invalid,
    PulseSeen,
    Ready,
    Resumed,
    event_filter,
    typed,
)
from ndsclust.ldapstore.syncsession import (
    Changed,
    ChangeKind,
    Deleted,
    Reconnected,
    RefreshDone,
    SyncEntry,
)

CSN = "20261202010000.000001Z#000000#001#000000"


def changed(dn: str, kind: ChangeKind = ChangeKind.ADD, **attrs: list[bytes]) -> Changed:
    return Changed(SyncEntry(dn, "u1", Entry(dn, {"entryCSN": [CSN.encode()], **attrs})), kind)


def test_events_and_pulses_arrive_parsed_and_other_entries_as_they_are() -> None:
    event = typed(
        "cluster",
        changed(
            "ndsclustEventId=e1,ou=events",
            objectClass=[b"ndsclustEvent"],
            ndsclustEventId=[b"e1"],
            ndsclustEventTime=[b"20261202010000.000001Z"],
            ndsclustEventKind=[b"failover"],
            ndsclustEventTag=[b"web"],
        ),
    )
    assert isinstance(event, EventSeen) and event.added and event.csn == CSN
    assert event.event.kind == "failover" and event.event.tag == "web"
    pulse = typed(
        "pulses",
        changed(
            "cn=alpha,o=p",
            ChangeKind.MODIFY,
            objectClass=[b"ndsclustPulseEntry"],
            cn=[b"alpha"],
            ndsclustPulse=[b"7"],
        ),
    )
    assert isinstance(pulse, PulseSeen) and pulse.pulse.counter == 7
    other = typed("cluster", changed("ndsclustTag=web", objectClass=[b"ndsclustApplication"]))
    assert isinstance(other, EntryChanged) and other.entry.dn == "ndsclustTag=web"


def test_bad_event_and_pulse_entries_are_reported_with_their_dn() -> None:
    bad = typed(
        "pulses",
        changed("cn=alpha,o=p", objectClass=[b"ndsclustPulseEntry"], cn=[b"alpha"]),
    )
    assert isinstance(bad, Invalid) and bad.error.attribute == "ndsclustPulse"
    bad_tag = typed(
        "cluster",
        changed(
            "ndsclustEventId=e2",
            objectClass=[b"ndsclustEvent"],
            ndsclustEventId=[b"e2"],
            ndsclustEventTime=[b"t"],
            ndsclustEventKind=[b"x"],
            ndsclustEventTag=[b"not a tag!"],
        ),
    )
    assert isinstance(bad_tag, Invalid) and bad_tag.error.dn == "ndsclustEventId=e2"


def test_the_watchs_own_events_are_named() -> None:
    assert typed("cluster", Deleted("u1", "cn=x")) == Gone("cluster", "u1", "cn=x")
    assert typed("pulses", RefreshDone()) == Ready("pulses")
    assert typed("cluster", Reconnected("ldap://b", True)) == Resumed("cluster", "ldap://b", True)


def test_event_filter_escapes_the_tag() -> None:
    assert event_filter() == "(objectClass=ndsclustEvent)"
    # Those naming several applications have no tag: the reader picks the application's.
    assert event_filter("a*b") == (
        "(&(objectClass=ndsclustEvent)(|(ndsclustEventTag=a\\2ab)(!(ndsclustEventTag=*))))"
    )

"""The typed cache folded from watch events: newer copies win, bad entries stay aside."""

from ndsclust.ldapstore.cache import ClusterCache
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.syncsession import Changed, ChangeKind, Deleted, RefreshDone, SyncEntry
from ndsclust.model import Event, Tag


def app_attrs(host: str, csn: str, **extra: list[str]) -> dict[str, list[str]]:
    a = {
        "objectClass": ["ndsclustApplication"],
        "ndsclustTag": ["web"],
        "ndsclustType": ["capable"],
        "ndsclustCommand": ["/bin/true"],
        "ndsclustPrimaryServer": ["alpha"],
        "ndsclustBackupServer": ["{0}beta"],
        "ndsclustHostServer": [host],
        "entryCSN": [csn],
    }
    a.update(extra)
    return a


def servers(cache: ClusterCache) -> None:
    for i, name in enumerate(("alpha", "beta")):
        cache.put(
            f"s{i}",
            f"cn={name},ou=servers",
            {"objectClass": ["ndsclustServer"], "cn": [name], "entryCSN": ["1"]},
        )


def test_own_write_shows_until_the_watch_echoes_it() -> None:
    t = [0.0]
    c = ClusterCache(clock=lambda: t[0])
    servers(c)
    c.put("u1", "ndsclustTag=web", app_attrs("alpha", "20261125120000.000001Z#000000#001#000000"))
    # Our claim, as the write left it.
    c.put(
        "u1",
        "ndsclustTag=web",
        app_attrs("beta", "20261125120000.000005Z#000000#002#000000"),
        local=True,
    )
    # A watch event queued from before the write must not hide the claim...
    c.put("u1", "ndsclustTag=web", app_attrs("alpha", "20261125120000.000003Z#000000#001#000000"))
    assert c.snapshot().apps["web"].host == "beta"
    # ...and the echo of the write takes over from the local copy.
    c.put("u1", "ndsclustTag=web", app_attrs("beta", "20261125120000.000005Z#000000#002#000000"))
    assert c.snapshot().apps["web"].host == "beta"


def test_watch_order_wins_even_with_an_older_csn_after_a_partition() -> None:
    c = ClusterCache()
    servers(c)
    c.put("u1", "ndsclustTag=web", app_attrs("beta", "20261125120000.000009Z#000000#002#000000"))
    # Replication brings the other side's claim, older by its CSN: it is the converged value.
    c.put("u1", "ndsclustTag=web", app_attrs("alpha", "20261125120000.000002Z#000000#001#000000"))
    assert c.snapshot().apps["web"].host == "alpha"


def test_a_local_copy_lapses_when_the_echo_never_comes() -> None:
    t = [0.0]
    c = ClusterCache(clock=lambda: t[0])
    servers(c)
    c.put("u1", "ndsclustTag=web", app_attrs("alpha", "1"))
    c.put("u1", "ndsclustTag=web", app_attrs("beta", "2"), local=True)
    assert c.snapshot().apps["web"].host == "beta"
    t[0] = 11.0
    assert c.snapshot().apps["web"].host == "alpha"


def test_invalid_entry_is_kept_aside_and_the_rest_is_usable() -> None:
    c = ClusterCache()
    servers(c)
    c.put("u1", "ndsclustTag=web", app_attrs("beta", "2"))
    c.put(
        "u2",
        "ndsclustTag=bad",
        {**app_attrs("beta", "2"), "ndsclustTag": ["bad"], "ndsclustType": ["weird"]},
    )
    c.put("u3", "ndsclustTag=orphan", {**app_attrs("nowhere", "2"), "ndsclustTag": ["orphan"]})
    snap = c.snapshot()
    assert set(snap.apps) == {"web"}
    assert sorted(e.attribute for e in snap.invalid) == ["ndsclustHostServer", "ndsclustType"]


def test_delete_and_version() -> None:
    c = ClusterCache()
    servers(c)
    v = c.version
    c.put("u1", "ndsclustTag=web", app_attrs("beta", "2"))
    assert c.version > v and "web" in c.snapshot().apps
    c.delete("u1")
    assert "web" not in c.snapshot().apps


def test_the_echo_of_an_own_write_is_not_parsed_again() -> None:
    c = ClusterCache()
    servers(c)
    c.put("u1", "ndsclustTag=web", app_attrs("alpha", "1"))
    c.put("u1", "ndsclustTag=web", app_attrs("beta", "2"), local=True)
    mine = c.snapshot().apps["web"]
    version = c.version
    # The echo: same CSN, so the same version of the entry. Its values are never read
    # (a value the parser would refuse proves it), and nothing visible changed.
    c.put("u1", "ndsclustTag=web", app_attrs("beta", "2", ndsclustType=["unreadable"]))
    assert c.snapshot().apps["web"] is mine and c.version == version
    # The local copy is gone: the next change from the watch shows as it comes.
    c.put("u1", "ndsclustTag=web", app_attrs("alpha", "3"))
    assert c.snapshot().apps["web"].host == "alpha"


def test_apply_folds_typed_watch_events() -> None:
    c = ClusterCache()
    servers(c)
    entry = Entry("ndsclustTag=web", {**app_attrs("beta", "2"), "entryUUID": ["u1"]})
    assert c.apply(Changed(SyncEntry(entry.dn, "u1", entry), ChangeKind.ADD))
    assert c.snapshot().apps["web"].uuid == "u1"
    assert not c.apply(RefreshDone())
    assert c.apply(Deleted("u1", entry.dn)) and "web" not in c.snapshot().apps


def test_moves_come_from_events_given_typed_or_as_entries() -> None:
    c = ClusterCache(move_kinds=frozenset({"failover"}))
    event = Event("e1", "20261202010000.000000Z", "failover", tag=Tag("web"))
    c.put_event("u1", event)
    c.put_event("u2", Event("e2", "20261202010000.000000Z", "swap_conflict", tag=Tag("web")))
    c.put(
        "u3",
        "ndsclustEventId=e3",
        {
            "objectClass": ["ndsclustEvent"],
            "ndsclustEventId": ["e3"],
            "ndsclustEventTime": ["20261202010001.000000Z"],
            "ndsclustEventKind": ["failover"],
            "ndsclustEventTag": ["db"],
        },
    )
    assert sorted(m.tag for m in c.moves()) == ["db", "web"]
    c.delete("u1")
    assert [m.tag for m in c.moves()] == ["db"]
    c.put(
        "u4",
        "ndsclustEventId=e4",
        {
            "objectClass": ["ndsclustEvent"],
            "ndsclustEventId": ["e4"],
            "ndsclustEventTime": ["20261202010002.000000Z"],
            "ndsclustEventKind": ["failover"],
            "ndsclustEventServer": ["beta"],
            "ndsclustEventText": ["failover from alpha\napplications: a b"],
        },
    )
    assert sorted((m.tag, m.server) for m in c.moves()) == [
        ("a", "beta"),
        ("b", "beta"),
        ("db", None),
    ]
    c.delete("u4")
    assert [m.tag for m in c.moves()] == ["db"]


class _Untouchable(bytes):
    def decode(self, *args: object, **kwargs: object) -> str:
        raise AssertionError("an echo's values were decoded")


def test_an_echo_given_as_a_watch_events_attributes_is_not_decoded() -> None:
    c = ClusterCache()
    servers(c)
    c.put("u1", "ndsclustTag=web", app_attrs("beta", "2"), local=True)
    raw = {k: [v.encode() for v in vs] for k, vs in app_attrs("beta", "2").items()}
    raw["ndsclustCommand"] = [_Untouchable(b"/bin/true")]
    echo = Entry("ndsclustTag=web", raw, uuid="u1")
    c.put("u1", echo.dn, echo.attributes)  # as the sentinel passes a watch event on
    assert c.snapshot().apps["web"].host == "beta"


def test_changes_are_marked_by_tag_and_servers_mark_everything() -> None:
    t = [0.0]
    c = ClusterCache(clock=lambda: t[0])
    servers(c)
    assert c.take_marks() == (frozenset(), True)  # the first ask: everything is new
    assert c.take_marks() == (frozenset(), False)
    c.put("u1", "ndsclustTag=web", app_attrs("alpha", "1"))
    assert c.take_marks() == (frozenset({Tag("web")}), False)
    # Invalid, it is marked by the tag its DN names; deleted, by the tag it had.
    c.put("u1", "ndsclustTag=web,ou=apps", app_attrs("alpha", "2", ndsclustType=["bogus"]))
    assert c.take_marks() == (frozenset({Tag("web")}), False)
    c.put("u1", "ndsclustTag=web", app_attrs("alpha", "3"))
    c.delete("u1")
    assert c.take_marks() == (frozenset({Tag("web")}), False)
    # A local copy marks when written and when it lapses; the echo of it marks nothing.
    c.put("u2", "ndsclustTag=web", app_attrs("beta", "5"), local=True)
    assert c.take_marks() == (frozenset({Tag("web")}), False)
    c.put("u2", "ndsclustTag=web", app_attrs("beta", "5"))
    assert c.take_marks() == (frozenset(), False)
    c.put("u2", "ndsclustTag=web", app_attrs("alpha", "6"), local=True)
    c.take_marks()
    t[0] = 100.0
    c.snapshot()
    assert c.take_marks() == (frozenset({Tag("web")}), False)
    c.put("s9", "cn=gamma,ou=servers", {"objectClass": ["ndsclustServer"], "cn": ["gamma"]})
    assert c.take_marks()[1] is True
    moves = c.moves_version
    c.put_event("e1", Event("1", "20261125120000.000000Z", "handoff", tag=Tag("web")))
    assert c.moves_version == moves  # not a kind this cache was asked to keep

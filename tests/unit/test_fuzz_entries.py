"""Bad input containment (docs/design.md invariant 4) for directory entries: an application or
server entry with any attribute malformed (random text, huge values, control characters,
bytes that are not UTF-8, unknown servers, several values, missing) yields EntryInvalid
naming the DN and an attribute that was changed, never another exception; in the
ClusterCache the other entries stay exactly as they were.

``fuzz_targets()`` hands the same checks to ``tools/fuzz.py`` for a long run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.cache import ClusterCache
from ndsclust.model import App, Server

Attrs = dict[str, list[Any]]
Target = tuple[st.SearchStrategy[Any], Callable[[Any], None]]

CI = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
APPS = "ou=applications,ou=ndsclust,dc=x"
SERVERS = "ou=servers,ou=ndsclust,dc=x"
KNOWN = ("alpha", "beta", "gamma")


def app_attrs(tag: str, primary: str, backups: Sequence[str], host: str) -> Attrs:
    return {
        "objectClass": ["top", "ndsclustApplication"],
        "ndsclustTag": [tag],
        "ndsclustType": ["capable"],
        "ndsclustCommand": [f"/usr/bin/{tag} --serve 'a b'"],
        "ndsclustUnloadCommand": [f"/usr/bin/{tag} --stop"],
        "ndsclustHealthCommand": [f"/usr/bin/{tag} --check"],
        "ndsclustPrimaryServer": [primary],
        "ndsclustBackupServer": [f"{{{i}}}{b}" for i, b in enumerate(backups)],
        "ndsclustHostServer": [host],
        "ndsclustResource": ["san1", "vip:10.0.0.1/24"],
        "ndsclustAutoRecover": ["TRUE"],
        "ndsclustState": ["running"],
        "ndsclustRequest": ["migrate:gamma"],
        "ndsclustMarker": ["step=41"],
        "entryUUID": [f"uuid-{tag}"],
        "entryCSN": ["20261125120000.000001Z#000000#001#000000"],
    }


def server_attrs(name: str) -> Attrs:
    return {
        "objectClass": ["top", "ndsclustServer"],
        "cn": [name],
        "ndsclustAddress": ["198.18.0.2:7946", "[2001:db8::2]:7946"],
        "ndsclustResource": ["san1"],
        "ndsclustServerState": ["up"],
        "entryUUID": [f"uuid-{name}"],
        "entryCSN": ["20261125120000.000001Z#000000#001#000000"],
    }


APP_FIELDS = tuple(k for k in app_attrs("x", "alpha", (), "alpha") if k.startswith("ndsclust"))
SERVER_FIELDS = ("cn", "ndsclustAddress", "ndsclustResource", "ndsclustServerState")

# -- what a malformed value looks like ---------------------------------------------------

unknown_server = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from("dexyz"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", max_size=12),
)
control = st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=1, max_size=20)
# Just over the limits: 4096 characters for a value, 65536 for a marker.
huge = st.builds(lambda c, n: c * n, st.sampled_from("a/{9-é\x00"), st.sampled_from([4097, 65537]))
numbered = st.builds(
    lambda n, v: f"{{{n}}}{v}",
    st.integers(0, 10**6).map(str) | st.just("9" * 5000),
    st.text(max_size=10) | unknown_server | st.sampled_from(KNOWN),
)
value = st.one_of(
    st.text(max_size=80),
    control,
    huge,
    unknown_server,
    numbered,
    st.binary(max_size=60),
    st.sampled_from(
        [
            "",
            " ",
            "TRUE",
            "FALSE",
            "true",
            "up",
            "migrate:",
            "migrate:zeta",
            "error(",
            "running(x)",
            "/bin/sh -c 'x",
            "relative/path",
            "{0}",
            "\ufffd",
        ]
    ),
    st.integers() | st.floats(),
)
values = st.lists(value, min_size=0, max_size=3)


@st.composite
def mutated(draw: st.DrawFn, base: Attrs, fields: Sequence[str]) -> tuple[Attrs, frozenset[str]]:
    """``base`` with a non-empty set of its fields replaced by malformed values (or removed)."""
    chosen = draw(st.sets(st.sampled_from(fields), min_size=1, max_size=len(fields)))
    attrs = dict(base)
    for f in chosen:
        new = draw(values)
        # LDAP attribute names are case-insensitive: the parser must see them either way.
        name = draw(st.sampled_from([f, f.lower(), f.upper()]))
        del attrs[f]
        if new:
            attrs[name] = new
    return attrs, frozenset(chosen)


def named_field(e: EntryInvalid, dn: str, changed: frozenset[str]) -> None:
    assert e.dn == dn
    allowed = set(changed)
    if "ndsclustPrimaryServer" in changed:
        allowed.add("ndsclustBackupServer")  # "a backup must be another server"
    assert e.attribute in allowed, (e.attribute, sorted(changed), str(e))
    assert e.problem and str(e).startswith(f"{dn}: {e.attribute}: ")


# -- checks ------------------------------------------------------------------------------


def check_parse_app(case: tuple[Attrs, frozenset[str]]) -> None:
    attrs, changed = case
    dn = f"ndsclustTag=web,{APPS}"
    try:
        app = entries.parse_app(dn, attrs)
    except EntryInvalid as e:
        named_field(e, dn, changed)
        return
    assert isinstance(app, App) and app.dn == dn


def check_parse_server(case: tuple[Attrs, frozenset[str]]) -> None:
    attrs, changed = case
    dn = f"cn=delta,{SERVERS}"
    try:
        server = entries.parse_server(dn, attrs)
    except EntryInvalid as e:
        named_field(e, dn, changed)
        return
    assert isinstance(server, Server) and server.dn == dn


def _cache_with_good_entries() -> ClusterCache:
    cache = ClusterCache()
    for name in KNOWN:
        cache.put(f"uuid-{name}", f"cn={name},{SERVERS}", server_attrs(name))
    cache.put("uuid-web", f"ndsclustTag=web,{APPS}", app_attrs("web", "alpha", ("beta",), "alpha"))
    cache.put(
        "uuid-db", f"ndsclustTag=db,{APPS}", app_attrs("db", "beta", ("gamma", "alpha"), "beta")
    )
    return cache


GOOD = _cache_with_good_entries().snapshot()


def check_cache(case: tuple[str, Attrs, frozenset[str]]) -> None:
    """One malformed entry among good ones: the good ones are untouched, the bad one is
    either valid or set aside, named by its DN."""
    kind, attrs, changed = case
    cache = _cache_with_good_entries()
    dn = f"ndsclustTag=bad,{APPS}" if kind == "app" else f"cn=delta,{SERVERS}"
    cache.put("uuid-bad", dn, attrs)
    snap = cache.snapshot()
    assert {n: s for n, s in snap.servers.items() if s.dn != dn} == GOOD.servers
    assert {t: a for t, a in snap.apps.items() if a.dn != dn} == GOOD.apps
    assert all(e.dn == dn for e in snap.invalid)
    if snap.invalid:
        assert len(snap.invalid) == 1
        e = snap.invalid[0]
        allowed = set(changed) | {"ndsclustBackupServer"}
        assert e.attribute in allowed, (e.attribute, sorted(changed))
    else:
        valid = {a.dn for a in snap.apps.values()} | {s.dn for s in snap.servers.values()}
        assert dn in valid
    cache.delete("uuid-bad")
    assert cache.snapshot() == GOOD


GOOD_APP = app_attrs("web", "alpha", ("beta", "gamma"), "alpha")
GOOD_SERVER = server_attrs("delta")


def _not_colliding(case: tuple[Attrs, frozenset[str]], field: str, taken: Sequence[str]) -> bool:
    # The directory keeps an entry's RDN value in the entry (and tags and server names are
    # unique): a second "web" or "alpha" under another DN cannot exist there.
    attrs, _ = case
    for k, vs in attrs.items():
        if k.lower() == field.lower():
            return not any(str(v).lower() in taken for v in vs)
    return True


cache_case = st.one_of(
    mutated(app_attrs("bad", "alpha", ("beta", "gamma"), "alpha"), APP_FIELDS)
    .filter(lambda c: _not_colliding(c, "ndsclustTag", ("web", "db")))
    .map(lambda c: ("app", *c)),
    mutated(GOOD_SERVER, SERVER_FIELDS)
    .filter(lambda c: _not_colliding(c, "cn", KNOWN))
    .map(lambda c: ("server", *c)),
)


@contextmanager
def fuzz_targets() -> Iterator[Mapping[str, Target]]:
    yield {
        "entries.parse_app": (mutated(GOOD_APP, APP_FIELDS), check_parse_app),
        "entries.parse_server": (mutated(GOOD_SERVER, SERVER_FIELDS), check_parse_server),
        "cache.put+snapshot": (cache_case, check_cache),
    }


# -- the CI run --------------------------------------------------------------------------


def test_good_entries_parse() -> None:
    assert set(GOOD.apps) == {"web", "db"} and set(GOOD.servers) == set(KNOWN)
    assert not GOOD.invalid


@CI
@given(mutated(GOOD_APP, APP_FIELDS))
def test_malformed_application_names_a_changed_field(case: tuple[Attrs, frozenset[str]]) -> None:
    check_parse_app(case)


@CI
@given(mutated(GOOD_SERVER, SERVER_FIELDS))
def test_malformed_server_names_a_changed_field(case: tuple[Attrs, frozenset[str]]) -> None:
    check_parse_server(case)


@CI
@given(cache_case)
def test_malformed_entry_leaves_the_rest_of_the_cluster_usable(
    case: tuple[str, Attrs, frozenset[str]],
) -> None:
    check_cache(case)

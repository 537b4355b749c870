"""The typed cache folded from watch events: newer copies win, bad entries stay aside."""
from ndsclust.ldapstore.cache import ClusterCache


def app_attrs(host: str, csn: str, **extra: list[str]) -> dict[str, list[str]]:
    a = {"objectClass": ["ndsclustApplication"], "ndsclustTag": ["web"],
         "ndsclustType": ["capable"], "ndsclustCommand": ["/bin/true"],
         "ndsclustPrimaryServer": ["alpha"], "ndsclustBackupServer": ["{0}beta"],
         "ndsclustHostServer": [host], "entryCSN": [csn]}
    a.update(extra)
    return a


def servers(cache: ClusterCache) -> None:
    for i, name in enumerate(("alpha", "beta")):
        cache.put(f"s{i}", f"cn={name},ou=servers", {"objectClass": ["ndsclustServer"],
                                                      "cn": [name], "entryCSN": ["1"]})


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    c = ClusterCache()
    servers(c)
    assert c.put("u1", "ndsclustTag=web", app_attrs("beta", "20261125120000.000002Z#000000#001#000000"))
    assert not c.put("u1", "ndsclustTag=web", app_attrs("alpha", "20261125120000.000001Z#000000#001#000000"))
    assert c.snapshot().apps["web"].host == "beta"


def test_invalid_entry_is_kept_aside_and_the_rest_is_usable() -> None:
    c = ClusterCache()
    servers(c)
    c.put("u1", "ndsclustTag=web", app_attrs("beta", "2"))
    c.put("u2", "ndsclustTag=bad", {**app_attrs("beta", "2"), "ndsclustTag": ["bad"],
                                     "ndsclustType": ["weird"]})
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

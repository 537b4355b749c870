"""Operator writes with ldapadd on provider 1 arrive as typed objects through a watch on
provider 3; a malformed entry is reported with its DN and attribute while other changes keep
flowing (invariant 4: bad input is contained)."""

from __future__ import annotations

import subprocess
import uuid

from ndsclust.lab.directory import DirectoryCluster, wait_until
from ndsclust.ldapstore import reads
from ndsclust.ldapstore.cache import ClusterCache
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.follow import Follower
from ndsclust.ldapstore.store import APP_ATTRS, Store
from ndsclust.ldapstore.watch import Changed, Deleted, Watch
from ndsclust.model import AppType, Server, ServerName, ServerState


def ldapadd(uri: str, d: DirectoryCluster, ldif: str) -> None:
    out = subprocess.run(
        ["ldapadd", "-x", "-H", uri, "-D", d.admin_dn, "-w", d.admin_password],
        input=ldif,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr


def app_ldif(dn: str, tag: str, **attrs: str) -> str:
    base = {
        "ndsclustType": "capable",
        "ndsclustCommand": "/bin/sleep 100",
        "ndsclustPrimaryServer": "alpha",
        "ndsclustBackupServer": "beta",
    }
    base.update(attrs)
    lines = [f"dn: {dn}", "objectClass: ndsclustApplication", f"ndsclustTag: {tag}"]
    lines += [f"{k}: {v}" for k, v in base.items() if v != ""]
    return "\n".join(lines) + "\n"


def test_ldapadd_on_provider_1_arrives_typed_on_provider_3_and_bad_entries_are_contained(
    directory: DirectoryCluster,
) -> None:
    creds = directory.admin_credentials()
    base = f"ou=t{uuid.uuid4().hex[:8]},{directory.suffix}"
    store = Store(Providers(directory.uris, creds), directory.suffix, base=base)
    store.ensure_base()
    for name in ("alpha", "beta"):
        store.add_server(Server(name=ServerName(name)))
    cache = ClusterCache()
    watch = Watch(Providers([directory.uris[2]], creds), base, attributes=APP_ATTRS)
    watch.start()

    def pump() -> None:
        while (ev := watch.get(0.05)) is not None:
            if isinstance(ev, Changed):
                cache.put(ev.entry.uuid, ev.entry.dn, ev.entry.attributes)
            elif isinstance(ev, Deleted):
                cache.delete(ev.uuid)

    try:
        apps = store.apps_dn
        ldapadd(directory.uris[0], directory, app_ldif(f"ndsclustTag=web,{apps}", "web"))
        ldapadd(
            directory.uris[0],
            directory,
            app_ldif(f"ndsclustTag=bad1,{apps}", "bad1", ndsclustType="daemon"),
        )
        ldapadd(
            directory.uris[0],
            directory,
            app_ldif(f"ndsclustTag=bad2,{apps}", "bad2", ndsclustBackupServer="nowhere"),
        )
        ldapadd(
            directory.uris[0],
            directory,
            app_ldif(f"ndsclustTag=bad3,{apps}", "bad3", ndsclustCommand="relative/path"),
        )
        ldapadd(directory.uris[0], directory, app_ldif(f"ndsclustTag=db,{apps}", "db"))

        def settled() -> bool:
            pump()
            snap = cache.snapshot()
            return set(snap.apps) == {"web", "db"} and len(snap.invalid) == 3

        wait_until(settled, timeout=10, what="two typed applications and three invalid entries")
        snap = cache.snapshot()
        web = snap.apps["web"]  # typed, frozen, from provider 3's watch
        assert web.type is AppType.CAPABLE and web.command == ("/bin/sleep", "100")
        assert web.backups == ("beta",) and web.uuid
        problems = {(e.dn.split(",")[0], e.attribute) for e in snap.invalid}
        assert problems == {
            ("ndsclustTag=bad1", "ndsclustType"),
            ("ndsclustTag=bad2", "ndsclustBackupServer"),
            ("ndsclustTag=bad3", "ndsclustCommand"),
        }
        store.replace_app_attrs("db", {"ndsclustHostServer": ["alpha"]})
        wait_until(
            lambda: (pump(), cache.snapshot().apps["db"].host == "alpha")[1],
            timeout=10,
            what="later change still delivered",
        )
    finally:
        watch.stop()
        store.close()


def test_follower_shows_entries_events_and_pulses_typed_and_reads_see_the_writes(
    directory: DirectoryCluster,
) -> None:
    creds = directory.admin_credentials()
    base = f"ou=t{uuid.uuid4().hex[:8]},{directory.suffix}"
    store = Store(
        Providers(directory.uris, creds),
        directory.suffix,
        base=base,
        pulse_base=directory.pulse_suffix,
    )
    store.ensure_base()
    store.add_server(Server(name=ServerName("alpha")))
    name = f"p{uuid.uuid4().hex[:6]}"
    store.write_pulse(name, 1)
    follower = Follower(store, pulses=True, providers=Providers([directory.uris[2]], creds))
    try:
        with follower:
            follower.wait_ready(10)
            assert set(follower.snapshot().servers) == {"alpha"}
            assert follower.pulse_map()[ServerName(name)].counter == 1
            assert not follower.fresh_events()
            store.set_server_state("alpha", ServerState.MAINTENANCE)
            written = reads.entry_csn(store, store.server_dn("alpha"))
            store.record_event("maintenance_on", server="alpha", text="by=test")
            store.write_pulse(name, 2)

            def seen() -> bool:
                follower.updates(0.2)
                alpha = follower.snapshot().servers["alpha"]
                return (
                    alpha.state is ServerState.MAINTENANCE
                    and alpha.csn >= written
                    and [e.kind for e in follower.fresh_events(written)] == ["maintenance_on"]
                    and follower.pulse_map()[ServerName(name)].counter == 2
                )

            wait_until(seen, timeout=10, what="the change, the event and the pulse, typed")
        assert reads.exists(store, store.server_dn("alpha"), "(objectClass=ndsclustServer)")
        assert not reads.exists(store, store.app_dn("none"))
        assert any(p.server == name for p, csn in reads.pulses_written(store) if csn)
    finally:
        store.delete(store.pulse_dn(name))
        store.close()

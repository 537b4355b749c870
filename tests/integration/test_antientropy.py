"""Anti-entropy against real slapd (docs/design.md invariant 3, "Anti-entropy").

A provider is made to diverge on purpose: stopped, its database changed offline with
slapmodify/slapadd, started again. Its contextCSNs then agree with its peers' while its
entries differ (docs/platform.md fact 10), and only a comparison by value sees it.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ndsclust.cli import main
from ndsclust.lab.directory import DirectoryCluster, Provider, wait_until
from ndsclust.ldapstore.antientropy import Repairer
from ndsclust.ldapstore.connection import Credentials, Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import (
    App,
    AppState,
    AppType,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
)
from ndsclust.sentinel.antientropy import Sweeper

pytestmark = pytest.mark.integration

# The cluster data database, third in ndsclust/slapd/provider.ldif.in.
MAIN_DB = "olcDatabase={2}mdb,cn=config"


def offline(p: Provider, suffix: str, tool: str, ldif: str) -> None:
    """Change provider ``p``'s database with slapd stopped, then start it again."""
    p.stop()
    subprocess.run(
        [tool, "-F", str(p.conf_dir), "-b", suffix, "-q"],
        input=ldif.encode(),
        check=True,
        capture_output=True,
    )
    p.start()


@pytest.fixture
def lab(
    fresh_directory: Callable[..., DirectoryCluster],
) -> Iterator[tuple[DirectoryCluster, Store]]:
    cluster = fresh_directory(n=3)
    store = Store(Providers(cluster.uris, cluster.admin_credentials()), cluster.suffix)
    store.ensure_base()
    try:
        yield cluster, store
    finally:
        store.close()


def repairer(
    cluster: DirectoryCluster, store: Store, creds: Credentials | None = None, server: str = "test"
) -> Repairer:
    """A repairer binding as ``creds`` (default the admin) that records through ``store``."""
    return Repairer(
        uris=cluster.uris,
        creds=creds or cluster.admin_credentials(),
        base=store.base,
        suffix=cluster.suffix,
        write=lambda: cluster.uris[0],
        record=lambda kind, text: store.record_event(kind, server=server, text=text),
        look_gap=0.3,
        recheck_after=0.3,
    )


def held_alike(cluster: DirectoryCluster, dn: str) -> bool:
    views = [cluster.read_tree(i, dn).get(dn.lower()) for i in range(cluster.n)]
    return all(v == views[0] for v in views[1:])


def diverge(cluster: DirectoryCluster, store: Store, *, stray: bool = True) -> tuple[str, str]:
    """Make provider 2 diverge offline: alpha's resource changed there and, with ``stray``, a
    server entry only it holds. Returns both DNs once the contextCSNs agree again."""
    store.add_server(Server(ServerName("alpha"), resources=frozenset({"disk"})))
    changed, extra = store.server_dn("alpha"), store.server_dn("stray")
    cluster.wait_converged(10)
    odd = cluster.providers[2]
    offline(
        odd,
        cluster.suffix,
        "slapmodify",
        f"dn: {changed}\nchangetype: modify\nreplace: ndsclustResource\nndsclustResource: tape\n",
    )
    if stray:
        offline(
            odd,
            cluster.suffix,
            "slapadd",
            f"dn: {extra}\nobjectClass: top\nobjectClass: ndsclustServer\ncn: stray\n"
            "ndsclustServerState: up\n",
        )
    cluster.wait_replicating(15)
    cluster.wait_converged(10)  # the contextCSNs agree: only values show the difference
    assert not held_alike(cluster, changed)
    return changed, extra


def test_diverged_provider_is_repaired_with_an_event(
    lab: tuple[DirectoryCluster, Store],
) -> None:
    cluster, store = lab
    changed, stray = diverge(cluster, store)
    assert stray.lower() in cluster.read_tree(2)

    sweeper = Sweeper(repairer(cluster, store), interval=3600.0, settle=0.0)
    t0 = time.monotonic()
    sweeper.start()
    try:
        sweeper.poke("provider_restart")
        wait_until(
            lambda: (
                held_alike(cluster, changed)
                and all(stray.lower() not in cluster.read_tree(i) for i in range(3))
            ),
            10,
            what="the diverged entries repaired on every provider",
        )
    finally:
        sweeper.stop()
    took = time.monotonic() - t0
    assert cluster.read_tree(2, changed)[changed.lower()]["ndsclustResource"] == ("disk",)
    repairs = [e for e in store.events() if e.kind == "repair"]
    texts = " ".join(e.text for e in repairs)
    assert f"dn={changed.lower()}" in texts and "ndsclustresource=tape" in texts.lower()
    assert f"dn={stray.lower()}" in texts and "action=delete" in texts
    assert "after=absent" in texts
    assert took < 10


def test_nothing_repaired_while_partitioned_then_repaired_once_healed(
    lab: tuple[DirectoryCluster, Store],
) -> None:
    cluster, store = lab
    dn, _ = diverge(cluster, store, stray=False)
    odd = cluster.providers[2]
    # Cut provider 2 off: SIGSTOP keeps its sockets open but it answers nothing, to its
    # peers' replication and to the sweep alike.
    odd.pause()
    rep = repairer(cluster, store)
    rep.timeout = 1.0
    try:
        out = rep.sweep()
        assert out.held.startswith("unreachable")
        assert not out.done
        assert not any(e.kind == "repair" for e in store.events())
    finally:
        odd.resume()
    cluster.wait_replicating(15)
    out = rep.sweep()
    rep.close()
    assert out.repaired == 1 and not out.still
    wait_until(lambda: held_alike(cluster, dn), 10, what="the entry repaired once healed")


def cli_options(cluster: DirectoryCluster, tmp_path: Path) -> list[str]:
    """The global options of ``ndsclust`` binding as the admin (an operator's rights)."""
    pw = tmp_path / "pw"
    pw.write_text(cluster.admin_password)
    options = [opt for uri in cluster.uris for opt in ("--uri", uri)]
    options += ["--allow-plain-ldap", "-D", cluster.admin_dn, "-y", str(pw)]
    return options + ["--suffix", cluster.suffix, "--pulse-suffix", cluster.pulse_suffix]


def test_doctor_repair_sweeps_once_and_says_what_it_did(
    lab: tuple[DirectoryCluster, Store], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, store = lab
    changed, stray = diverge(cluster, store)
    assert main([*cli_options(cluster, tmp_path), "doctor", "--repair", "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"repair\t{changed.lower()}\t{cluster.uris[2]}\trewrite\tok=True" in out
    assert f"repair\t{stray.lower()}\t{cluster.uris[2]}\tdelete\tok=True" in out
    assert "repaired=2 still=0" in out
    wait_until(lambda: held_alike(cluster, changed), 10, what="the entry repaired")
    assert {e.server for e in store.events() if e.kind == "repair"} == {"cli"}


def test_doctor_repair_reseeds_a_stopped_provider_from_the_write_provider(
    lab: tuple[DirectoryCluster, Store], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, store = lab
    changed, stray = diverge(cluster, store)
    odd = cluster.providers[2]
    options = cli_options(cluster, tmp_path)
    reseed = ["doctor", "--repair", "--yes", "--reseed", odd.url, "--slapd-conf", str(odd.conf_dir)]
    assert main([*options, *reseed]) == 1  # still running: refused
    assert "stop its slapd first" in capsys.readouterr().err
    odd.stop()
    assert main([*options, *reseed]) == 0
    assert "reseed: provider=" in capsys.readouterr().out
    odd.start()
    cluster.wait_replicating(15)
    wait_until(
        lambda: cluster.read_tree(2, store.base) == cluster.read_tree(0, store.base),
        10,
        what="the re-seeded provider to hold what the write provider holds",
    )
    assert stray.lower() not in cluster.read_tree(2)
    assert any(e.kind == "reseed" for e in store.events())
    # replication works both ways afterwards
    store.set_server_state("alpha", ServerState.MAINTENANCE)
    wait_until(lambda: held_alike(cluster, changed), 10, what="a later write replicated")


def _agreements(p: Provider, values: list[str] | None = None) -> list[str]:
    """Provider ``p``'s main-database agreements (over ldapi as root); with ``values``
    replace them first."""
    if values is not None:
        ldif = f"dn: {MAIN_DB}\nchangetype: modify\nreplace: olcSyncrepl\n"
        ldif += "".join(f"olcSyncrepl: {v}\n" for v in values)
        subprocess.run(
            ["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", p.ldapi_url],
            input=ldif.encode(),
            check=True,
            capture_output=True,
        )
    out = subprocess.run(
        ["ldapsearch", "-Q", "-LLL", "-o", "ldif-wrap=no", "-Y", "EXTERNAL", "-H", p.ldapi_url]
        + ["-b", MAIN_DB, "-s", "base", "olcSyncrepl"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("olcSyncrepl:")]


def test_nothing_repaired_while_replication_is_cut_then_repaired_once_healed(
    lab: tuple[DirectoryCluster, Store],
) -> None:
    """Every provider answers the sweep, but provider 2 no longer replicates from its peers:
    the providers are cut off from each other, and a repair would be decided on a copy
    that replication does not keep current."""
    cluster, store = lab
    dn, _ = diverge(cluster, store, stray=False)
    odd = cluster.providers[2]
    kept = _agreements(odd)
    cut = [re.sub(r"provider=\S+", "provider=ldap://127.0.0.1:1", v) for v in kept]
    _agreements(odd, [v.split("}", 1)[1] for v in cut])
    rep = repairer(cluster, store)
    try:
        store.add_server(Server(ServerName("beta")))  # a write provider 2 does not receive
        out = rep.sweep()
        assert out.held.startswith("replication cut off"), out
        assert not out.done
        assert not any(e.kind == "repair" for e in store.events())
        _agreements(odd, [v.split("}", 1)[1] for v in kept])  # the heal
        wait_until(
            lambda: store.server_dn("beta").lower() in cluster.read_tree(2),
            15,
            what="provider 2 to catch up once healed",
        )
        out = rep.sweep()
        assert [d.repair.dn for d in out.done] == [dn.lower()] and out.repaired == 1
    finally:
        rep.close()
    wait_until(lambda: held_alike(cluster, dn), 10, what="the entry repaired once healed")


def _app(tag: str, host: str) -> App:
    return App(
        tag=Tag(tag),
        type=AppType.CAPABLE,
        command=("/bin/sleep", "1000"),
        primary=ServerName("alpha"),
        backups=(ServerName("beta"),),
        host=ServerName(host),
        state=StateValue(AppState.RUNNING),
    )


def test_a_sentinel_identity_makes_the_repairs_under_the_shipped_acls(
    lab: tuple[DirectoryCluster, Store],
) -> None:
    """The sweeping sentinel binds as its own server entry, not as the admin: under the
    ACLs of ndsclust/slapd/provider.ldif.in it brings back an event another server wrote,
    deletes an application entry only the odd provider still holds and rewrites a host; an
    operator's attribute (a command) it may not write, and says so."""
    cluster, store = lab
    dn, password = cluster.add_server_identity("alpha", ("127.0.0.1:7000",))
    me = Credentials(
        bind_dn=dn, password=password, ca_file=cluster.ca_file, allow_plain=not cluster.tls
    )
    store.add_app(_app("web", "alpha"))
    store.add_app(_app("db", "alpha"))
    event = store.record_event("failover", server="beta", text="written by another server").dn
    web, db, stray = store.app_dn("web"), store.app_dn("db"), store.app_dn("stray")
    cluster.wait_converged(10)
    offline(
        cluster.providers[2],
        cluster.suffix,
        "slapmodify",
        f"dn: {event}\nchangetype: delete\n\n"
        f"dn: {web}\nchangetype: modify\nreplace: ndsclustHostServer\nndsclustHostServer: beta\n\n"
        f"dn: {db}\nchangetype: modify\nreplace: ndsclustCommand\nndsclustCommand: /bin/true\n\n"
        f"dn: {stray}\nchangetype: add\nobjectClass: top\nobjectClass: ndsclustApplication\n"
        "ndsclustTag: stray\nndsclustType: capable\nndsclustCommand: /bin/sleep 1\n"
        "ndsclustPrimaryServer: alpha\n",
    )
    cluster.wait_replicating(15)
    cluster.wait_converged(10)
    sentinel = Store(Providers(cluster.uris, me), cluster.suffix)
    rep = repairer(cluster, sentinel, me, "alpha")
    try:
        out = rep.sweep()
    finally:
        rep.close()
    by_dn = {d.repair.dn: d for d in out.done}
    assert {k for k, d in by_dn.items() if d.ok} == {event.lower(), web.lower(), stray.lower()}
    assert not by_dn[db.lower()].ok  # the command is the operators' (insufficient access)
    assert [dn for dn, _ in out.still] == [db.lower()]
    for entry in (event, web):
        wait_until(lambda e=entry: held_alike(cluster, e), 10, what=f"{entry} alike")
    wait_until(
        lambda: all(stray.lower() not in cluster.read_tree(i) for i in range(3)),
        10,
        what="the stray application gone everywhere",
    )
    try:
        written = [e for e in sentinel.events() if e.kind in ("repair", "repair_failed")]
    finally:
        sentinel.close()
    assert {e.server for e in written} == {"alpha"}
    assert sum(e.kind == "repair" and "ok=True" in e.text for e in written) == 3
    assert any(e.kind == "repair_failed" and db.lower() in e.text for e in written)

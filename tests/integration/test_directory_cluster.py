"""The lab directory cluster: real slapd providers replicating multi-provider.

Writes go over TCP (the ldap:// URIs clients use); the lab reads over ldapi.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ldap3
import pytest

from ndsclust.lab.directory import DirectoryCluster, LabError, LabTimeout, wait_until

SCHEMA_LDIF = Path(__file__).resolve().parents[2] / "schema" / "ndsclust.ldif"
Factory = Callable[..., DirectoryCluster]


@contextmanager
def connect(cluster: DirectoryCluster, index: int) -> Iterator[ldap3.Connection]:
    conn = ldap3.Connection(
        ldap3.Server(cluster.uris[index], connect_timeout=2, get_info=ldap3.NONE),
        cluster.admin_dn,
        cluster.admin_password,
        auto_bind=True,
        receive_timeout=5,
    )
    try:
        yield conn
    finally:
        conn.unbind()  # ldap3's own `with` leaves bound a connection that was bound on entry


def add(
    cluster: DirectoryCluster,
    index: int,
    dn: str,
    classes: list[str],
    attrs: dict[str, str | list[str]],
) -> None:
    with connect(cluster, index) as conn:
        assert conn.add(dn, classes, attrs), conn.result


def modify(cluster: DirectoryCluster, index: int, dn: str, attr: str, value: str) -> None:
    with connect(cluster, index) as conn:
        assert conn.modify(dn, {attr: [(ldap3.MODIFY_REPLACE, [value])]}), conn.result


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def same_everywhere(cluster: DirectoryCluster, base: str | None = None) -> bool:
    trees = [cluster.read_tree(p.index, base) for p in cluster.providers]
    return all(t == trees[0] for t in trees[1:])


def slapd_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX" and b"slapd" in cmd


def load_schema(cluster: DirectoryCluster, index: int) -> None:
    done = subprocess.run(
        [
            "ldapadd",
            "-Q",
            "-Y",
            "EXTERNAL",
            "-H",
            cluster.providers[index].ldapi_url,
            "-f",
            str(SCHEMA_LDIF),
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 0, done.stderr


def test_providers_are_described(directory: DirectoryCluster) -> None:
    ps = directory.providers
    assert [p.index for p in ps] == [0, 1, 2]
    assert [p.server_id for p in ps] == [1, 2, 3]
    assert directory.uris == [f"ldap://127.0.0.1:{p.port}" for p in ps]
    assert len({p.port for p in ps}) == 3
    assert all(p.running and p.pid for p in ps)
    assert all(p.ldapi_url.startswith("ldapi://%2F") for p in ps)
    assert directory.admin_dn == "cn=admin,dc=ndsclust,dc=test"
    assert directory.pulse_admin_dn == directory.admin_dn
    assert "dc=ndsclust,dc=test" in directory.read_tree(2)
    assert "o=ndsclust-pulse" in directory.read_tree(2, directory.pulse_suffix)
    directory.wait_replicating(timeout=5)
    assert all(
        phase == "Persist"
        for phases in directory.replication_state().values()
        for phase in phases.values()
    )


def test_write_on_provider_0_is_visible_on_provider_2(directory: DirectoryCluster) -> None:
    name = unique("app")
    dn = f"ndsclustTag={name},{directory.suffix}"
    add(
        directory,
        0,
        dn,
        ["ndsclustApplication"],
        {
            "ndsclustTag": name,
            "ndsclustType": "capable",
            "ndsclustCommand": "/bin/true",
            "ndsclustPrimaryServer": "alpha",
            "ndsclustHostServer": "alpha",
        },
    )
    wait_until(lambda: directory.read_tree(2, dn), timeout=5, what=f"{dn} on provider 2")
    modify(directory, 0, dn, "ndsclustHostServer", "beta")
    wait_until(
        lambda: (
            directory.read_tree(2, dn).get(dn.lower(), {}).get("ndsclustHostServer") == ("beta",)
        ),
        timeout=5,
        what="the new host on 2",
    )
    with connect(directory, 0) as conn:
        assert conn.delete(dn), conn.result
    wait_until(lambda: not directory.read_tree(2, dn), timeout=5, what="the delete on 2")


def test_pulse_suffix_replicates(directory: DirectoryCluster) -> None:
    dn = f"cn={unique('server')},{directory.pulse_suffix}"
    conn = ldap3.Connection(
        ldap3.Server(directory.uris[1], get_info=ldap3.NONE),
        directory.pulse_admin_dn,
        directory.admin_password,
        auto_bind=True,
    )
    try:
        assert conn.add(
            dn, ["ndsclustPulseEntry"], {"cn": dn[3:].split(",")[0], "ndsclustPulse": "1"}
        ), conn.result
        assert conn.modify(dn, {"ndsclustPulse": [(ldap3.MODIFY_REPLACE, ["2"])]}), conn.result
    finally:
        conn.unbind()  # ldap3's `with` would leave it bound, as it was on entry
    for i in (0, 2):
        wait_until(
            lambda: directory.read_tree(i, dn).get(dn.lower(), {}).get("ndsclustPulse") == ("2",),
            timeout=5,
            what=f"pulse 2 on provider {i}",
        )
    directory.wait_converged(timeout=5)


def test_wait_converged_after_writes_on_every_provider(directory: DirectoryCluster) -> None:
    for p in directory.providers:
        name = unique("conv")
        add(
            directory,
            p.index,
            f"cn={name},{directory.suffix}",
            ["organizationalRole"],
            {"cn": name},
        )
    directory.wait_converged(timeout=5)
    csns = directory.contextcsns()
    assert set(csns) == {0, 1, 2}
    main = csns[0][directory.suffix]
    # One contextCSN per server that wrote, identical everywhere.
    assert {c.split("#")[2] for c in main} >= {"001", "002", "003"}
    assert all(v == csns[0] for v in csns.values())
    assert same_everywhere(directory)


def test_paused_provider_catches_up_when_resumed(directory: DirectoryCluster) -> None:
    dn = f"cn={unique('paused')},{directory.suffix}"
    p1 = directory.providers[1]
    p1.pause()
    try:
        assert set(directory.contextcsns()) == {0, 2}
        add(directory, 0, dn, ["organizationalRole"], {"cn": dn[3:].split(",")[0]})
        wait_until(lambda: directory.read_tree(2, dn), timeout=5, what=f"{dn} on provider 2")
    finally:
        p1.resume()
    wait_until(lambda: directory.read_tree(1, dn), timeout=5, what=f"{dn} on provider 1")


def test_slapd_pair_replicates_both_ways(slapd_pair: DirectoryCluster) -> None:
    a, b = (f"cn={unique(n)},{slapd_pair.suffix}" for n in ("a", "b"))
    add(slapd_pair, 0, a, ["organizationalRole"], {"cn": a[3:].split(",")[0]})
    add(slapd_pair, 1, b, ["organizationalRole"], {"cn": b[3:].split(",")[0]})
    slapd_pair.wait_converged(timeout=5)
    wait_until(
        lambda: slapd_pair.read_tree(0, b) and slapd_pair.read_tree(1, a),
        timeout=5,
        what="each write on the other provider",
    )


def test_killed_provider_catches_up_after_restart(fresh_directory: Factory) -> None:
    cluster = fresh_directory(n=3)
    seeded = len(cluster.read_tree(2))
    keep = f"cn=kept,{cluster.suffix}"
    add(cluster, 0, keep, ["organizationalRole"], {"cn": "kept", "description": "before"})
    wait_until(lambda: cluster.read_tree(2, keep), timeout=5, what="kept on provider 2")
    p2 = cluster.providers[2]
    old_pid = p2.pid
    p2.kill()
    assert not p2.running
    # Changes written elsewhere while provider 2 is down, on two different providers.
    modify(cluster, 0, keep, "description", "during")
    for i in range(20):
        add(
            cluster,
            i % 2,
            f"cn=missed{i},{cluster.suffix}",
            ["organizationalRole"],
            {"cn": f"missed{i}"},
        )
    p2.start()
    assert p2.running and p2.pid != old_pid
    wait_until(lambda: same_everywhere(cluster), timeout=5, what="provider 2 to catch up by values")
    assert cluster.read_tree(2, keep)[keep]["description"] == ("during",)
    assert len(cluster.read_tree(2)) == seeded + 1 + 20
    cluster.wait_converged(timeout=5)
    cluster.wait_replicating(timeout=5)


def test_schema_loads_over_ldapi_and_replication_waits_for_it(fresh_directory: Factory) -> None:
    cluster = fresh_directory(n=3, with_schema=False)
    dn = f"cn=alpha,{cluster.suffix}"
    with connect(cluster, 0) as conn:
        assert not conn.add(dn, ["ndsclustServer"], {"cn": "alpha"}), "schema already there"
    load_schema(cluster, 0)
    load_schema(cluster, 1)
    add(cluster, 0, dn, ["ndsclustServer"], {"cn": "alpha", "ndsclustServerState": "up"})
    # docs/platform.md fact 3: a provider without the schema silently stops replicating...
    with pytest.raises(LabTimeout, match=r"provider 2: dc=ndsclust,dc=test: \d"):
        cluster.wait_converged(timeout=0.5)
    assert not cluster.read_tree(2, dn)
    # ...until it has the schema too.
    load_schema(cluster, 2)
    cluster.wait_converged(timeout=5)
    assert cluster.read_tree(2, dn)[dn]["ndsclustServerState"] == ("up",)
    assert same_everywhere(cluster)


def test_stop_leaves_no_process_and_no_directory(fresh_directory: Factory) -> None:
    cluster = fresh_directory(n=3)
    # A new cluster holds the base entries deploy/ seeds (ndsclust/slapd/seed-*.ldif.in),
    # the same on every provider, and nothing else.
    base = cluster.base
    for p in cluster.providers:
        tree = cluster.read_tree(p.index)
        assert set(tree) == {
            cluster.suffix,
            f"cn=replicator,{cluster.suffix}",
            f"ou=people,{cluster.suffix}",
            base,
            *(f"ou={ou},{base}" for ou in ("servers", "applications", "events")),
            *(f"cn={group},{base}" for group in ("operators", "auditors")),
        }
        assert tree[cluster.suffix]["objectClass"] == ("dcObject", "organization")
        assert "ndsclustCluster" in tree[base]["objectClass"]
        assert tree[f"cn=operators,{base}"]["member"] == (cluster.admin_dn,)
        assert set(cluster.read_tree(p.index, cluster.pulse_suffix)) == {"o=ndsclust-pulse"}
    pids = [p.pid for p in cluster.providers]
    assert all(pid is not None and slapd_alive(pid) for pid in pids)
    base_dir = cluster.base_dir
    cluster.stop()
    assert not any(pid is not None and slapd_alive(pid) for pid in pids)
    assert not base_dir.exists()
    cluster.stop()  # idempotent


def test_refuses_a_directory_with_content(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep me")
    with pytest.raises(LabError, match="not empty"):
        DirectoryCluster(n=1, base_dir=tmp_path).start()
    assert (tmp_path / "precious").read_text() == "keep me"


def test_bad_configuration_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    base = tmp_path / "lab"
    with pytest.raises(LabError, match=r"provider 0 .*slapadd -n0"):
        DirectoryCluster(n=2, base_dir=base, accesslog_purge="whenever").start()
    assert not base.exists()


START_AND_REPORT = """
import json, sys, time
from ndsclust.lab.directory import DirectoryCluster
c = DirectoryCluster(n=2, base_dir=sys.argv[1], die_with_parent=sys.argv[2] == "1")
c.start()
print(json.dumps([p.pid for p in c.providers]), flush=True)
if sys.argv[2] == "1":
    time.sleep(60)
"""


def run_starter(base: Path, die_with_parent: bool) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", START_AND_REPORT, str(base), "1" if die_with_parent else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"starter failed: {proc.communicate(timeout=10)[1]}")
    return proc, json.loads(line)


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        if slapd_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_cluster_outlives_its_creator_and_stops_from_another_process(tmp_path: Path) -> None:
    base = tmp_path / "lab"
    proc, pids = run_starter(base, die_with_parent=False)
    try:
        proc.communicate(timeout=10)  # waits, and closes the pipes
        assert proc.returncode == 0
        assert all(slapd_alive(pid) for pid in pids)
        cluster = DirectoryCluster.attach(base)
        assert [p.pid for p in cluster.providers] == pids
        assert all(p.running for p in cluster.providers)
        cluster.wait_converged(timeout=5)
        cluster.stop()
        assert not any(slapd_alive(pid) for pid in pids)
        assert not base.exists()
    finally:
        kill_leftovers(pids)


def test_providers_die_with_a_killed_parent(tmp_path: Path) -> None:
    base = tmp_path / "lab"
    proc, pids = run_starter(base, die_with_parent=True)
    try:
        assert all(slapd_alive(pid) for pid in pids)
        proc.kill()
        proc.wait(timeout=10)
        wait_until(
            lambda: not any(slapd_alive(pid) for pid in pids),
            timeout=5,
            what="the orphaned providers to die",
        )
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        kill_leftovers(pids)
        shutil.rmtree(base, ignore_errors=True)

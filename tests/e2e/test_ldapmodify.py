"""Everything the CLI does can be done with ldapmodify alone: the sentinels act on what a
standard LDAP tool writes (migrate, unload, load, approve a failback, maintenance)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.model import AppState, ServerName

LabFactory = Callable[..., LabCluster]
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


def ldapmodify(c: LabCluster, ldif: str) -> None:
    """The lab's providers speak ldaps:// only: ldap-utils verify them against the lab CA."""
    d = c.directory
    assert d.ca_file is not None
    out = subprocess.run(
        ["ldapmodify", "-x", "-H", d.uris[1], "-D", d.admin_dn, "-w", d.admin_password],
        input=ldif,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "LDAPTLS_CACERT": d.ca_file},
    )
    assert out.returncode == 0, out.stderr


def request(c: LabCluster, tag: str, value: str) -> None:
    ldapmodify(
        c,
        f"dn: ndsclustTag={tag},ou=applications,ou=ndsclust,{c.directory.suffix}\n"
        f"changetype: modify\nreplace: ndsclustRequest\nndsclustRequest: {value}\n",
    )


def test_migrate_unload_load_and_approve_failback_with_ldapmodify(lab: LabFactory) -> None:
    c = lab(3)
    suffix = c.directory.suffix
    ldapmodify(
        c,
        f"""dn: ndsclustTag=web,ou=applications,ou=ndsclust,{suffix}
changetype: add
objectClass: ndsclustApplication
ndsclustTag: web
ndsclustType: capable
ndsclustCommand: {" ".join(c.sample_command("web"))}
ndsclustPrimaryServer: alpha
ndsclustBackupServer: beta
ndsclustBackupServer: gamma
ndsclustAutoRecover: FALSE
ndsclustRequest: load
""",
    )
    c.wait_running("web", A)  # load with no host: the primary claims it
    request(c, "web", "migrate:gamma")
    c.wait_running("web", C)
    wait_until(lambda: c.app("web").request is None, timeout=10, what="migrate consumed")
    request(c, "web", "unload")
    wait_until(
        lambda: (
            c.app("web").host is None
            and not c.running_on("web")
            and c.app("web").state.state is AppState.STOPPED
        ),
        timeout=20,
        what="unloaded",
    )
    request(c, "web", "load")
    c.wait_running("web", A)
    c.kill_server(A)
    c.wait_running("web", B)
    c.restart_server(A)
    wait_until(
        lambda: c.app("web").state.state is AppState.AWAITING_FAILBACK,
        timeout=30,
        what="awaiting-failback",
    )
    request(c, "web", "failback")
    c.wait_running("web", A, timeout=30)


def test_maintenance_with_ldapmodify_moves_applications_away(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    ldapmodify(
        c,
        f"dn: cn=alpha,ou=servers,ou=ndsclust,{c.directory.suffix}\n"
        "changetype: modify\nreplace: ndsclustServerState\nndsclustServerState: maintenance\n",
    )
    c.wait_running("web", B)

"""The lab runs as deploy/ ships it: ldaps:// verified against the lab CA, each sentinel
bound as its own server entry, and the shipped ACLs enforced on what that identity writes
(a server writes its own entry and the host, state, marker and request of applications;
only operators change an application's command or create one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ldap3
import pytest
import yaml

from ndsclust import pki
from ndsclust.cli import main
from ndsclust.errors import ConfigError, ProviderUnreachable
from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.ldapstore.connection import Credentials, open_connection
from ndsclust.model import ServerName

LabFactory = Callable[..., LabCluster]
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
INSUFFICIENT_ACCESS = 50


def identity(c: LabCluster, name: ServerName) -> Credentials:
    """What the sentinel of ``name`` binds with, read from its own configuration."""
    d = yaml.safe_load(c.servers[name].config_path.read_text())["directory"]
    return Credentials(
        bind_dn=d["bind_dn"], password=Path(d["password_file"]).read_text(), ca_file=d["ca_file"]
    )


def modify(conn: ldap3.Connection, dn: str, attr: str, value: str) -> int:
    conn.modify(dn, {attr: [(ldap3.MODIFY_REPLACE, [value])]})
    return int(conn.result["result"])


def modifiers_name(c: LabCluster, dn: str) -> str:
    conn = open_connection(c.directory.uris[0], c.directory.admin_credentials())
    try:
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["modifiersName"])
        return str(conn.response[0]["attributes"]["modifiersName"][0]).lower()
    finally:
        conn.unbind()


def test_a_sentinel_identity_writes_only_what_the_acls_give_a_server(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    st = c.store()
    web, alpha, beta = st.app_dn("web"), st.server_dn(A), st.server_dn(B)
    # The sentinel itself wrote the state through its own identity, not the lab admin's.
    wait_until(
        lambda: modifiers_name(c, web) == alpha.lower(),
        timeout=10,
        what="alpha's sentinel to write web as cn=alpha",
    )
    cfg = yaml.safe_load(c.servers[A].config_path.read_text())["directory"]
    assert cfg["bind_dn"] == alpha and cfg["bind_dn"] != c.directory.admin_dn
    assert Path(cfg["password_file"]).stat().st_mode & 0o777 == 0o600
    assert "allow_plain_ldap" not in cfg and all(u.startswith("ldaps://") for u in cfg["uris"])

    conn = open_connection(c.directory.uris[0], identity(c, B))
    try:
        assert modify(conn, beta, "description", "beta, rack 2") == 0
        app = st.app("web")
        # Host and state, rewritten with the values they hold: a write the ACLs check,
        # which the sentinels see as no change.
        conn.modify(
            web,
            {
                "ndsclustHostServer": [(ldap3.MODIFY_REPLACE, [str(app.host)])],
                "ndsclustState": [(ldap3.MODIFY_REPLACE, [str(app.state)])],
            },
        )
        assert conn.result["result"] == 0, conn.result
        assert modify(conn, web, "ndsclustCommand", "/bin/sh -c evil") == INSUFFICIENT_ACCESS
        assert modify(conn, web, "ndsclustBackupServer", "beta") == INSUFFICIENT_ACCESS
        assert modify(conn, alpha, "description", "not beta's") == INSUFFICIENT_ACCESS
        conn.add(
            f"ndsclustTag=evil,{st.apps_dn}",
            ["top", "ndsclustApplication"],
            {
                "ndsclustTag": "evil",
                "ndsclustType": "capable",
                "ndsclustCommand": "/bin/true",
                "ndsclustPrimaryServer": "beta",
            },
        )
        assert conn.result["result"] == INSUFFICIENT_ACCESS
    finally:
        conn.unbind()
    assert st.app("web").command == c.sample_command("web")
    c.wait_running("web", A)


def test_lab_providers_are_verified_and_doctor_sees_no_plain_ldap(
    lab: LabFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = lab(2)
    other = tmp_path / "other-ca"
    pki.init_ca(other, "lab", datetime.now(UTC))
    wrong = Credentials(
        bind_dn=c.directory.admin_dn,
        password=c.directory.admin_password,
        ca_file=str(other / pki.CA_CERT),
    )
    for uri in c.directory.uris:
        with pytest.raises(ProviderUnreachable, match="certificate verify failed"):
            open_connection(uri, wrong)
    # Plain LDAP is refused by the client before anything is sent.
    with pytest.raises(ConfigError, match="plain LDAP without TLS is refused"):
        open_connection(
            c.directory.uris[0].replace("ldaps://", "ldap://"),
            Credentials(bind_dn=c.directory.admin_dn, password="x"),
        )

    capsys.readouterr()
    main(["--config", str(c.servers[A].config_path), "doctor", "--json"])
    findings: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["findings"]
    tls = [f for f in findings if f["check"] == "tls"]
    assert tls and all(f["level"] == "ok" for f in tls), tls
    assert not [f for f in findings if "plain LDAP" in f["message"]]

"""``ndsclust doctor --config`` against a real directory flags what the sentinel's
configuration leaves open: plain LDAP, commands running as root, key and password files
that other users can read; and stops flagging them once they are fixed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from ndsclust import pki
from ndsclust.cli import main
from ndsclust.lab.directory import DirectoryCluster
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.store import Store


def doctor(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[dict[str, Any]]]:
    capsys.readouterr()
    rc = main(["--config", str(config_path), "doctor", "--json"])
    return rc, json.loads(capsys.readouterr().out)["findings"]


def found(findings: list[dict[str, Any]], check: str, subject: str) -> set[str]:
    return {f["level"] for f in findings if f["check"] == check and f["subject"] == subject}


def test_doctor_flags_plain_ldap_root_programs_and_open_key_files(
    directory: DirectoryCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"ou=sec{uuid.uuid4().hex[:8]},{directory.suffix}"
    store = Store(
        Providers(directory.uris, directory.admin_credentials()),
        directory.suffix,
        base=base,
        pulse_base=directory.pulse_suffix,
    )
    try:
        store.ensure_base()
    finally:
        store.close()
    key = tmp_path / "cluster.key"
    pki.write_heartbeat_key(key)
    key.chmod(0o644)  # as a careless copy leaves it
    password = tmp_path / "directory.pw"
    password.write_text(directory.admin_password)
    password.chmod(0o640)
    cfg = {
        "server": "alpha",
        "directory": {
            "uris": directory.uris,
            "suffix": directory.suffix,
            "base": base,
            "pulse_suffix": directory.pulse_suffix,
            "bind_dn": directory.admin_dn,
            "password_file": str(password),
            "allow_plain_ldap": True,
        },
        "channels": {
            "lan": {"addresses": ["127.0.0.1:7946"], "key_file": str(key)},
            "directory": {},
        },
        "timeouts": {"failover": 0.8, "fence": 0.5, "lease": 0.5},
    }
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(cfg))

    rc, findings = doctor(path, capsys)
    assert rc == 1
    for uri in directory.uris:
        assert found(findings, "tls", uri) == {"warning"}
    assert found(findings, "secrets", "channels.lan.key_file") == {"problem"}
    assert found(findings, "secrets", "directory.password_file") == {"warning"}
    assert found(findings, "programs", "programs.user") == {"warning"}
    assert found(findings, "heartbeat", str(path)) == {"ok"}

    key.chmod(0o600)
    password.chmod(0o600)
    cfg["programs"] = {"user": "nobody", "allowed_commands": ["/bin/true"]}
    path.write_text(yaml.safe_dump(cfg))
    rc, findings = doctor(path, capsys)
    assert found(findings, "secrets", "channels.lan.key_file") == {"ok"}
    assert found(findings, "secrets", "directory.password_file") == {"ok"}
    assert found(findings, "programs", "programs.user") == {"ok"}
    assert found(findings, "programs", "programs.allowed_commands") == {"ok"}

"""``ndsclust doctor``'s security checks: plain LDAP, unverified TLS, the heartbeat key,
programs running as root, secret files others can read."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ndsclust import config
from ndsclust.doctor import (
    Finding,
    Level,
    SecretFile,
    Transport,
    check_heartbeat_key,
    check_programs,
    check_secret_files,
    check_transport,
    secret_paths,
)


def levels(findings: list[Finding]) -> list[Level]:
    return [f.level for f in findings]


def cfg(tmp_path: Path, **over: Any) -> config.Config:
    key = tmp_path / "cluster.key"
    key.write_bytes(b"k" * 32)
    data: dict[str, Any] = {
        "server": "alpha",
        "directory": {"uris": ["ldaps://ldap1:636"], "suffix": "dc=x", "ca_file": "/ca.crt"},
        "channels": {
            "directory": {},
            "lan": {"addresses": ["127.0.0.1:7946"], "key_file": str(key)},
        },
        "timeouts": {"failover": 0.8, "fence": 0.5, "lease": 0.5},
    }
    data.update(over)
    return config.parse(data, str(tmp_path / "sentinel.yaml"))


# -- plain LDAP and TLS ------------------------------------------------------------------


def test_plain_ldap_in_use_is_warned() -> None:
    found = check_transport(
        [
            Transport(
                "sentinel configuration",
                ("ldap://ldap1:389",),
                start_tls=False,
                ca_file=None,
                allow_plain=True,
            )
        ]
    )
    assert levels(found) == [Level.WARNING]
    assert found[0].subject == "ldap://ldap1:389"
    assert "plain LDAP in use (sentinel configuration)" in found[0].message
    assert "start_tls: true" in found[0].fix and "ldaps://" in found[0].fix


def test_plain_ldap_refused_by_the_configuration_is_a_problem() -> None:
    """allow_plain_ldap is false unless a configuration says otherwise."""
    found = check_transport([Transport("sentinel configuration", ("ldap://ldap1",), False, None)])
    assert levels(found) == [Level.PROBLEM] and "refused" in found[0].message


def test_tls_without_a_ca_file_is_a_problem() -> None:
    found = check_transport(
        [Transport("this command", ("ldaps://ldap1", "ldap://ldap2"), start_tls=True, ca_file=None)]
    )
    assert levels(found) == [Level.PROBLEM, Level.PROBLEM]
    assert "not checked against the cluster CA" in found[0].message
    assert "ca_file" in found[0].fix


def test_verified_tls_and_ldapi_pass() -> None:
    found = check_transport(
        [
            Transport(
                "sentinel configuration",
                ("ldaps://ldap1", "ldapi://%2Frun%2Fldapi"),
                False,
                "/etc/ndsclust/pki/ca.crt",
            ),
            Transport("this command", ("ldap://ldap2",), True, "/ca.crt"),
        ]
    )
    assert levels(found) == [Level.OK, Level.OK, Level.OK]
    assert "StartTLS" in found[2].message and "ldaps" in found[0].message
    assert levels(check_transport([])) == [Level.INFO]


# -- heartbeat key -----------------------------------------------------------------------


def test_lan_channel_without_a_key_is_a_problem(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert c.lan is not None
    keyless = dataclasses.replace(c, lan=dataclasses.replace(c.lan, keys={}, send_key=""))
    found = check_heartbeat_key(keyless)
    assert levels(found) == [Level.PROBLEM]
    assert "no heartbeat key" in found[0].message and "pki heartbeat-key" in found[0].fix


def test_heartbeat_key_present_rotating_or_not_needed(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert levels(check_heartbeat_key(c)) == [Level.OK]
    old = tmp_path / "old.key"
    old.write_bytes(b"o" * 32)
    channels = {
        "directory": {},
        "lan": {
            "addresses": ["127.0.0.1:7946"],
            "key_file": str(tmp_path / "cluster.key"),
            "old_key_file": str(old),
        },
    }
    rotating = check_heartbeat_key(cfg(tmp_path, channels=channels))
    assert levels(rotating) == [Level.WARNING] and "rotation in progress" in rotating[0].message
    assert "old_key_file" in rotating[0].fix
    no_lan = cfg(tmp_path, channels={"directory": {}})
    assert levels(check_heartbeat_key(no_lan)) == [Level.OK]
    assert levels(check_heartbeat_key(None)) == [Level.INFO]


# -- programs ----------------------------------------------------------------------------


def test_programs_running_as_root_are_warned(tmp_path: Path) -> None:
    unset = check_programs(cfg(tmp_path), None)
    assert levels(unset) == [Level.WARNING, Level.INFO]
    assert "commands run as root (programs.user is unset)" in unset[0].message
    assert "no allow-list" in unset[1].message
    root = check_programs(cfg(tmp_path, programs={"user": "toor"}), 0)
    assert levels(root)[0] is Level.WARNING and "'toor' (uid 0)" in root[0].message


def test_unprivileged_user_with_allow_list_passes(tmp_path: Path) -> None:
    c = cfg(tmp_path, programs={"user": "app", "allowed_commands": ["/usr/bin/app"]})
    found = check_programs(c, 1001)
    assert levels(found) == [Level.OK, Level.OK]
    assert "as app (uid 1001)" in found[0].message


def test_program_user_that_does_not_exist_is_a_problem(tmp_path: Path) -> None:
    found = check_programs(cfg(tmp_path, programs={"user": "ghost"}), None)
    assert levels(found)[0] is Level.PROBLEM and "useradd" in found[0].fix
    assert levels(check_programs(None, None)) == [Level.INFO]


# -- secret files ------------------------------------------------------------------------


def test_world_readable_key_file_is_a_problem_group_readable_a_warning() -> None:
    found = check_secret_files(
        [
            SecretFile("channels.lan.key_file", "/etc/ndsclust/cluster.key", 0o644),
            SecretFile("directory.password_file", "/etc/ndsclust/directory.pw", 0o640),
            SecretFile("directory.key_file", "/etc/ndsclust/pki/alpha.key", 0o600),
            SecretFile("channels.lan.old_key_file", "/gone", error="No such file or directory"),
        ]
    )
    assert levels(found) == [Level.PROBLEM, Level.WARNING, Level.OK, Level.PROBLEM]
    assert "readable by every user (mode 0644)" in found[0].message
    assert found[0].fix == "chmod 0600 /etc/ndsclust/cluster.key"
    assert found[1].subject == "directory.password_file"
    assert "No such file" in found[3].message


def test_secret_paths_come_from_every_secret_setting() -> None:
    raw = {
        "directory": {"password_file": "/pw", "key_file": "/tls.key", "ca_file": "/ca"},
        "channels": {"lan": {"key_file": "/k", "old_key_file": "/old"}, "disk": {}},
    }
    assert secret_paths(raw) == [
        ("directory.password_file", "/pw"),
        ("directory.key_file", "/tls.key"),
        ("channels.lan.key_file", "/k"),
        ("channels.lan.old_key_file", "/old"),
    ]
    assert secret_paths({"channels": "lan"}) == [] and secret_paths(None) == []

"""``ndsclust pki``: the cluster CA, server certificates, the heartbeat key, file modes."""

from __future__ import annotations

import base64
import ipaddress
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ndsclust import pki
from ndsclust.cli import main
from ndsclust.errors import ConfigError
from ndsclust.model import ServerName

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def cert(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def test_ca_is_p256_ten_years_and_may_sign_only_leaves(tmp_path: Path) -> None:
    key_w, cert_w = pki.init_ca(tmp_path, "prod", NOW)
    assert (key_w.path.name, key_w.mode, cert_w.path.name, cert_w.mode) == (
        "ca.key",
        0o600,
        "ca.crt",
        0o644,
    )
    ca = cert(tmp_path / "ca.crt")
    key = serialization.load_pem_private_key((tmp_path / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "prod"
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_after_utc - NOW == timedelta(days=3650)
    assert NOW - ca.not_valid_before_utc == pki.BACKDATE
    ca.verify_directly_issued_by(ca)


def test_server_certificate_names_the_server_and_serves_both_ends(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, "prod", NOW)
    pki.issue(
        tmp_path, "alpha", NOW, ips=["198.51.100.7", "2001:db8::7"], dns=["alpha.example.com"]
    )
    ca, leaf = cert(tmp_path / "ca.crt"), cert(tmp_path / "alpha.crt")
    leaf.verify_directly_issued_by(ca)
    assert leaf.subject.rfc4514_string() == "CN=alpha,OU=servers,O=prod"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["alpha", "alpha.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("198.51.100.7"),
        ipaddress.ip_address("2001:db8::7"),
    ]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc - NOW == timedelta(days=730)
    key = serialization.load_pem_private_key((tmp_path / "alpha.key").read_bytes(), None)
    assert key.public_key() == leaf.public_key()
    assert (mode(tmp_path / "alpha.key"), mode(tmp_path / "alpha.crt")) == (0o600, 0o644)


def test_server_certificate_never_outlives_its_ca(tmp_path: Path) -> None:
    ca = pki.make_ca("prod", NOW, lifetime=timedelta(days=30))
    leaf = x509.load_pem_x509_certificate(pki.issue_server(ca, ServerName("beta"), NOW).cert_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    assert leaf.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_keys_stay_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        pki.init_ca(tmp_path, "prod", NOW)
        pki.write_heartbeat_key(tmp_path / "cluster.key")
    finally:
        os.umask(old)
    assert mode(tmp_path / "ca.key") == 0o600 and mode(tmp_path / "ca.crt") == 0o644
    assert mode(tmp_path / "cluster.key") == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_nothing_is_overwritten_without_force(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, "prod", NOW)
    pki.issue(tmp_path, "alpha", NOW)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match=r"ca.key exists"):
        pki.init_ca(tmp_path, "prod", NOW)
    (tmp_path / "alpha.crt").unlink()
    with pytest.raises(ConfigError, match=r"alpha.key exists"):
        pki.issue(tmp_path, "alpha", NOW)  # one of the pair is there: neither is written
    assert not (tmp_path / "alpha.crt").exists()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {
        k: v for k, v in before.items() if k != "alpha.crt"
    }
    pki.issue(tmp_path, "alpha", NOW, force=True)
    assert (tmp_path / "alpha.key").read_bytes() != before["alpha.key"]
    assert mode(tmp_path / "alpha.key") == 0o600


def test_issue_reports_every_bad_argument_and_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        pki.issue(tmp_path, "Alpha", NOW, ips=["10.0.0.300"], dns=["bad_name!"])
    assert len(err.value.problems) == 3
    assert "SERVER: 'Alpha' is not a server name" in str(err.value)
    assert "--ip[0]: '10.0.0.300' is not an IP address" in str(err.value)
    assert "--dns[0]" in str(err.value)
    with pytest.raises(ConfigError, match="ndsclust pki init --dir"):
        pki.issue(tmp_path, "alpha", NOW)
    with pytest.raises(ConfigError, match="--cluster"):
        pki.init_ca(tmp_path, "no spaces", NOW)
    with pytest.raises(ValueError, match="time zone"):
        pki.make_ca("prod", datetime(2026, 1, 1))


def test_heartbeat_key_is_32_random_bytes_in_base64(tmp_path: Path) -> None:
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    pki.write_heartbeat_key(a)
    pki.write_heartbeat_key(b)
    raw = base64.b64decode(a.read_bytes().strip(), validate=True)
    assert len(raw) == 32 and a.read_bytes() != b.read_bytes()
    with pytest.raises(ConfigError, match=r"a.key exists"):
        pki.write_heartbeat_key(a)


def test_authz_regexp_maps_a_server_subject_to_its_entry() -> None:
    assert pki.authz_regexp("Prod.East", "ou=ndsclust,dc=example,dc=com") == (
        '"^cn=([a-z0-9-]+),ou=servers,o=prod[.]east$" '
        '"cn=$1,ou=servers,ou=ndsclust,dc=example,dc=com"'
    )


def test_cli_init_issue_heartbeat_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert (
        main(["pki", "init", "--dir", str(d), "--cluster", "prod", "--base", "ou=ndsclust,dc=x"])
        == 0
    )
    out = capsys.readouterr().out
    assert f"wrote {d}/ca.key (mode 0600)" in out and "olcAuthzRegexp: " in out
    assert (
        main(["pki", "issue", "beta", "--dir", str(d), "--ip", "127.0.0.1", "--dns", "beta.lan"])
        == 0
    )
    assert f"wrote {d}/beta.crt (mode 0644)" in capsys.readouterr().out
    assert main(["pki", "issue", "beta", "--dir", str(d)]) == 2
    assert "use --force" in capsys.readouterr().err
    assert main(["pki", "heartbeat-key", "--out", str(d / "cluster.key")]) == 0
    assert mode(d / "cluster.key") == 0o600

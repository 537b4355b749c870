"""Where the CLI takes its directory settings from, and the small formatting helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ndsclust.cli import build_parser, common, main

ENV = (
    "NDSCLUST_CONFIG",
    "NDSCLUST_URI",
    "NDSCLUST_SUFFIX",
    "NDSCLUST_BASE",
    "NDSCLUST_PULSE_SUFFIX",
    "NDSCLUST_BIND_DN",
    "NDSCLUST_PASSWORD_FILE",
    "NDSCLUST_CA_FILE",
    "NDSCLUST_CERT_FILE",
    "NDSCLUST_KEY_FILE",
    "NDSCLUST_START_TLS",
    "NDSCLUST_ALLOW_PLAIN_LDAP",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def write_config(tmp_path: Path, **directory: Any) -> Path:
    key = tmp_path / "cluster.key"
    key.write_bytes(b"k" * 32)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    data = {
        "server": "alpha",
        "directory": {
            "uris": ["ldap://127.0.0.1:3890", "ldap://127.0.0.1:3891"],
            "suffix": "dc=example,dc=com",
            "base": "ou=prod,dc=example,dc=com",
            "pulse_suffix": "o=pulse",
            "bind_dn": "cn=alpha,dc=example,dc=com",
            "password_file": str(pw),
            "start_tls": True,
            **directory,
        },
        "channels": {"lan": {"addresses": ["127.0.0.1:7946"], "key_file": str(key)}},
        "timeouts": {"failover": 0.8, "fence": 0.5, "lease": 0.5},
    }
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_directory_settings_come_from_the_config(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--config", str(write_config(tmp_path)), "status"])
    st = common.store(args)
    assert st.providers.uris == ("ldap://127.0.0.1:3890", "ldap://127.0.0.1:3891")
    assert (st.suffix, st.base, st.pulse_base) == (
        "dc=example,dc=com",
        "ou=prod,dc=example,dc=com",
        "o=pulse",
    )
    creds = common.credentials(args)
    assert creds.bind_dn == "cn=alpha,dc=example,dc=com" and creds.password == "s3cret"


def test_options_win_over_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NDSCLUST_CONFIG", str(write_config(tmp_path)))
    pw = tmp_path / "other"
    pw.write_text("x")
    args = build_parser().parse_args(
        [
            "--uri",
            "ldap://127.0.0.1:1",
            "--suffix",
            "dc=t",
            "-D",
            "cn=op,dc=t",
            "-y",
            str(pw),
            "status",
        ]
    )
    st = common.store(args)
    assert st.providers.uris == ("ldap://127.0.0.1:1",)
    # The configuration's base belongs to its own suffix, not to the one given here.
    assert st.suffix == "dc=t" and st.base == "ou=ndsclust,dc=t" and st.pulse_base == "o=pulse"
    assert common.credentials(args).bind_dn == "cn=op,dc=t"


def test_broken_config_is_exit_2_with_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, uris=["http://nope"], password_file="/nonexistent/pw")
    assert main(["--config", str(path), "status"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: 2 errors" in err
    assert "directory.uris[0]" in err and "directory.password_file" in err


def test_missing_config_file_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "/nonexistent/sentinel.yaml", "status"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_time_helpers() -> None:
    t = common.parse_time("20261125120000.250000Z")
    assert t is not None and common.iso_time(t) == "2026-11-25T12:00:00.250000Z"
    assert common.parse_time("20261125120000Z#000000#001#000000") == t - 0.25
    assert common.parse_time("yesterday") is None
    assert common.parse_iso(common.iso_time(t)) == t
    assert [common.age_text(s) for s in (0.42, 42, 4200, 200000)] == ["0.4s", "42s", "1h", "2d"]


def test_cells() -> None:
    assert [common.cell(v) for v in (None, "", [], ["a", "b"], True, False, 3)] == [
        "-",
        "-",
        "-",
        "a,b",
        "yes",
        "no",
        "3",
    ]


def test_tls_options_come_from_options_then_environment_then_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, ca_file="/cfg/ca.crt", start_tls=True)
    args = build_parser().parse_args(["--config", str(path), "status"])
    creds = common.credentials(args)
    assert (creds.ca_file, creds.start_tls, creds.allow_plain) == ("/cfg/ca.crt", True, False)
    # An identity given on the command line keeps the configuration's TLS settings.
    pw = tmp_path / "other"
    pw.write_text("x")
    args = build_parser().parse_args(
        ["--config", str(path), "-D", "cn=op,dc=t", "-y", str(pw), "status"]
    )
    creds = common.credentials(args)
    assert (creds.bind_dn, creds.ca_file, creds.start_tls) == ("cn=op,dc=t", "/cfg/ca.crt", True)
    monkeypatch.setenv("NDSCLUST_CA_FILE", "/env/ca.crt")
    monkeypatch.setenv("NDSCLUST_CERT_FILE", "/env/me.crt")
    args = build_parser().parse_args(["--config", str(path), "--key-file", "/opt/me.key", "status"])
    creds = common.credentials(args)
    assert (creds.bind_dn, creds.ca_file, creds.cert_file, creds.key_file) == (
        "cn=alpha,dc=example,dc=com",
        "/env/ca.crt",
        "/env/me.crt",
        "/opt/me.key",
    )


def test_plain_ldap_is_refused_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = build_parser().parse_args(["--uri", "ldap://127.0.0.1:1", "status"])
    assert not common.credentials(args).allow_plain
    monkeypatch.setenv("NDSCLUST_ALLOW_PLAIN_LDAP", "1")
    assert common.credentials(args).allow_plain
    args = build_parser().parse_args(
        ["--uri", "ldap://127.0.0.1:1", "--allow-plain-ldap", "-Z", "status"]
    )
    monkeypatch.delenv("NDSCLUST_ALLOW_PLAIN_LDAP")
    assert common.credentials(args).allow_plain and common.credentials(args).start_tls


def test_version_and_the_exit_code_of_a_refused_bind(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ndsclust import cli
    from ndsclust.errors import BindRefused, ProviderUnreachable

    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("ndsclust ")

    def refused(_: object) -> int:
        raise BindRefused("the bind was refused (check the bind DN and password): x")

    def silent(_: object) -> int:
        raise ProviderUnreachable("no provider reachable: x")

    for handler, code in ((refused, cli.EXIT_USAGE), (silent, cli.EXIT_UNREACHABLE)):
        monkeypatch.setattr(cli.status_cmd, "cmd_status", handler)
        assert cli.main(["--uri", "ldaps://127.0.0.1:1", "status"]) == code

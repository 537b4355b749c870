"""Sentinel configuration: every problem reported at once with its path; the fencing rule."""

import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ndsclust import config
from ndsclust.errors import ConfigError
from ndsclust.sentinel import build
from ndsclust.sentinel.channels.disk import wants_direct


def good(tmp_path: Path, **over: Any) -> dict[str, Any]:
    key = tmp_path / "cluster.key"
    key.write_bytes(b"k" * 32)
    data: dict[str, Any] = {
        "server": "alpha",
        "directory": {
            "uris": ["ldap://127.0.0.1:3890"],
            "suffix": "dc=example,dc=com",
            "start_tls": True,
        },
        "channels": {
            "lan": {"addresses": ["127.0.0.1:7946"], "key_file": str(key)},
            "directory": {},
        },
        "timeouts": {"failover": 0.8, "fence": 0.5, "lease": 0.5},
    }
    data.update(over)
    return data


def test_defaults_are_consistent(tmp_path: Path) -> None:
    c = config.parse(good(tmp_path))
    assert c.server == "alpha" and c.channel_names() == ("lan", "directory")
    assert c.timeouts.failover > max(c.timeouts.lease, c.timeouts.fence)
    assert c.supervision.max_restarts == 3 and c.supervision.restart_window == 900


def test_all_problems_are_reported_at_once_with_their_paths(tmp_path: Path) -> None:
    data = good(tmp_path, server="Alpha", bogus=1)
    data["channels"]["lan"]["addresses"] = ["127.0.0.1:7946", "10.0.0.300:1"]
    data["directory"]["uris"] = ["http://x"]
    with pytest.raises(ConfigError) as err:
        config.parse(data, "/etc/ndsclust/sentinel.yaml")
    text = str(err.value)
    assert text.startswith("/etc/ndsclust/sentinel.yaml: 4 errors")
    assert "channels.lan.addresses[1]: '10.0.0.300:1' is not an address" in text
    assert "server: 'Alpha' is not a server name" in text
    assert "bogus: unknown key" in text
    assert "directory.uris[0]" in text


def test_failover_must_exceed_lease_and_fence_plus_margin(tmp_path: Path) -> None:
    data = good(tmp_path, timeouts={"failover": 0.6, "fence": 0.5, "lease": 0.5})
    with pytest.raises(
        ConfigError,
        match=r"timeouts.failover: 0.6s must exceed max\(lease 0.5s, "
        r"fence 0.5s\) \+ margin",
    ):
        config.parse(data)


def test_durations_accept_milliseconds(tmp_path: Path) -> None:
    c = config.parse(good(tmp_path, timeouts={"failover": "800ms", "fence": "0.5s", "lease": 0.5}))
    assert c.timeouts.failover == 0.8


def test_short_key_and_missing_file_are_named(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    data = good(tmp_path)
    data["channels"]["lan"]["key_file"] = str(short)
    data["directory"]["password_file"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError) as err:
        config.parse(data)
    assert "channels.lan.key_file" in str(err.value) and "at least 16" in str(err.value)
    assert "directory.password_file" in str(err.value)


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("server: alpha\n  bad: [\n")
    with pytest.raises(ConfigError, match="line"):
        config.load(str(p))


def test_no_channel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="channels: configure at least one"):
        config.parse(good(tmp_path, channels={"witness": {"address": "127.0.0.1:53"}}))


def test_the_witness_timeout_counts_in_the_fencing_inequality(tmp_path: Path) -> None:
    # Where the witness decides, a cut-off server fences only once the witness is
    # unreachable too: its timeout plus the kill is a fence time of its own.
    data = good(tmp_path)
    data["channels"]["witness"] = {"address": "127.0.0.1:53"}
    c = config.parse(data)  # the defaults fit
    assert config.fence_bound(c.timeouts, c.witness.timeout if c.witness else None) == 0.5
    data["channels"]["witness"]["timeout"] = 0.6
    with pytest.raises(ConfigError) as err:
        config.parse(data)
    assert "timeouts.failover" in str(err.value)
    assert "witness timeout 0.6s + 0.1s" in str(err.value)
    data["channels"]["witness"].update(timeout=0.1, interval=0.2)
    with pytest.raises(ConfigError, match=r"channels.witness.timeout: 0.1s must exceed"):
        config.parse(data)


def test_provider_servers_map_uris_of_the_list_to_server_names(tmp_path: Path) -> None:
    uris = ["ldaps://ldap1:636", "ldaps://ldap2:636"]
    data = good(tmp_path)
    data["directory"] = {
        "uris": uris,
        "suffix": "dc=example,dc=com",
        "provider_servers": {uris[0]: "alpha", uris[1]: "beta"},
    }
    c = config.parse(data)
    assert c.directory.provider_servers == {uris[0]: "alpha", uris[1]: "beta"}
    data["directory"]["provider_servers"] = {"ldaps://ldap9:636": "alpha", uris[1]: "Beta"}
    with pytest.raises(ConfigError) as err:
        config.parse(data)
    text = str(err.value)
    assert "directory.provider_servers.ldaps://ldap9:636: is not one of directory.uris" in text
    assert "directory.provider_servers.ldaps://ldap2:636: 'Beta' is not a server name" in text


def with_disk(tmp_path: Path, **disk: Any) -> dict[str, Any]:
    data = good(tmp_path)
    data["channels"]["disk"] = {"path": "/dev/sdz", "servers": ["alpha", "beta"], **disk}
    return data


def test_disk_direct_defaults_to_the_kind_of_path(tmp_path: Path) -> None:
    """Unset, ``direct`` is decided when the channel opens the path: on for a block device,
    off for a file (the device may not be there yet when the file is loaded)."""
    d = config.parse(with_disk(tmp_path)).disk
    assert d is not None and d.direct is None and d.sync is False
    assert wants_direct(d.direct, stat.S_IFBLK | 0o660) is True
    assert wants_direct(d.direct, stat.S_IFREG | 0o600) is False
    assert wants_direct(d.direct, 0) is False  # missing: a file, created at open
    assert wants_direct(d.direct, stat.S_IFCHR | 0o666) is False


def test_disk_direct_and_sync_as_configured(tmp_path: Path) -> None:
    d = config.parse(with_disk(tmp_path, direct=False, sync=True)).disk
    assert d is not None and (d.direct, d.sync) == (False, True)
    assert wants_direct(d.direct, stat.S_IFBLK | 0o660) is False
    d = config.parse(with_disk(tmp_path, direct=True)).disk
    assert d is not None and d.direct is True
    assert wants_direct(d.direct, stat.S_IFREG | 0o600) is True


def test_disk_direct_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(with_disk(tmp_path, direct="yes", sync=1))
    assert "channels.disk.direct: 'yes' must be true or false" in err.value.problems
    assert "channels.disk.sync: 1 must be true or false" in err.value.problems


def test_the_sentinel_opens_the_disk_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build.build_channels hands ``direct`` and ``sync`` to the channel."""
    made: list[dict[str, Any]] = []
    monkeypatch.setattr(build, "DiskChannel", lambda **kw: made.append(kw) or object())
    for disk, expected in (
        ({}, (None, False)),
        ({"direct": False, "sync": True}, (False, True)),
        ({"direct": True}, (True, False)),
    ):
        cfg = config.parse(with_disk(tmp_path, **disk))
        parts = SimpleNamespace(channels={})
        build.build_channels(cfg, parts)  # type: ignore[arg-type]
        assert (made[-1]["direct"], made[-1]["sync"]) == expected
        assert made[-1]["path"] == "/dev/sdz"
        parts.lan.stop()  # never started: closes its wake-up socket pair


def test_plain_ldap_without_tls_is_a_configuration_error(tmp_path: Path) -> None:
    # Every connection would be refused: the sentinel must exit 2, not retry forever.
    data = good(tmp_path)
    data["directory"]["start_tls"] = False
    data["directory"]["local_uri"] = "ldap://127.0.0.1:3890"
    with pytest.raises(ConfigError) as info:
        config.parse(data)
    text = str(info.value)
    assert "directory.uris: ldap://127.0.0.1:3890: plain LDAP without TLS" in text
    assert "directory.local_uri" in text
    data["directory"]["allow_plain_ldap"] = True
    config.parse(data)

"""deploy/ without a server: the example sentinel configuration, the systemd unit, the
renderer and its templates, the examples of INSTALL.md. (The rendered configuration
against real slapd, ACL by ACL: tests/integration/test_deploy.py.)"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from ndsclust import config, schema
from ndsclust.cli import build_parser
from ndsclust.cli.sentinel_cmd import cmd_run
from ndsclust.errors import ConfigError
from ndsclust.ldapstore import entries
from ndsclust.sentinel import guard
from ndsclust.sentinel.loop import HANDOFF_DEADLINE_EXTRA
from ndsclust.slapd.render import NDSCLUST_EQ_INDEXES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLE = DEPLOY / "sentinel.example.yaml"
UNIT = DEPLOY / "ndsclust-sentinel.service"


def load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ndsclust_deploy_render", DEPLOY / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = load_render()


# -- sentinel.example.yaml ----------------------------------------------------------------


def example_with_files(tmp_path: Path) -> dict[str, Any]:
    """The example with the files it names replaced by temporary ones."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    (tmp_path / "directory.pw").write_text("a-password-of-some-length")
    (tmp_path / "cluster.key").write_text("k" * 44)
    data["directory"]["password_file"] = str(tmp_path / "directory.pw")
    data["channels"]["lan"]["key_file"] = str(tmp_path / "cluster.key")
    (tmp_path / "fence.pw").write_text("a-fence-password")
    for levels in data["fencing"]["servers"].values():
        for device in levels:
            device["password_file"] = str(tmp_path / "fence.pw")
    data["programs"]["cwd"] = str(tmp_path)  # the guide creates it; the loader checks it
    return data


def test_example_sentinel_configuration_is_valid(tmp_path: Path) -> None:
    cfg = config.parse(example_with_files(tmp_path), str(EXAMPLE))
    assert cfg.server == "alpha" and cfg.channel_names() == ("lan", "directory", "disk")
    assert cfg.directory.credentials.start_tls and not cfg.directory.credentials.allow_plain
    assert cfg.witness is not None and cfg.programs.user is not None
    # The safety argument of its comment, in numbers (config.check_timing).
    t = cfg.timeouts
    intervals = [
        c.interval for c in (cfg.lan, cfg.directory_channel, cfg.disk, cfg.witness) if c is not None
    ]
    assert cfg.witness is not None
    bound = config.fence_bound(t, cfg.witness.timeout)
    assert t.failover > max(t.lease, bound) + t.margin(max(*intervals, t.loop_interval))


def allowed_keys(data: dict[str, Any], path: tuple[str, ...]) -> set[str]:
    """The keys config.parse accepts at ``path``, from its own 'unknown key' message."""
    probe: dict[str, Any] = dict(data)
    node = probe
    for key in path:
        node[key] = dict(node[key])
        node = node[key]
    node["no_such_key"] = 1
    with pytest.raises(ConfigError) as err:
        config.parse(probe)
    wanted = ".".join((*path, "no_such_key"))
    line = next(p for p in err.value.problems if p.startswith(wanted + ":"))
    return set(line.split("allowed: ", 1)[1].split(", "))


SECTIONS = [
    (),
    ("directory",),
    ("channels",),
    ("channels", "lan"),
    ("channels", "directory"),
    ("channels", "disk"),
    ("channels", "witness"),
    ("timeouts",),
    ("supervision",),
    ("programs",),
    ("notify",),
    ("events",),
    ("log",),
    ("fencing",),
    ("http",),
]


@pytest.mark.parametrize("path", SECTIONS, ids=[".".join(p) or "top" for p in SECTIONS])
def test_example_shows_every_key(tmp_path: Path, path: tuple[str, ...]) -> None:
    data = example_with_files(tmp_path)
    node: Any = data
    for key in path:
        node = node[key]
    assert set(node) == allowed_keys(data, path)


def test_every_key_of_the_example_is_commented() -> None:
    lines = EXAMPLE.read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([a-z_]+):(.*)$", line)
        if not m:
            continue
        above = lines[i - 1].strip() if i else ""
        below = lines[i + 1].strip() if i + 1 < len(lines) else ""
        section = m.group(3).strip() == ""
        if "#" in m.group(3) or above.startswith("#") or (section and below.startswith("#")):
            continue
        bare.append(m.group(2))
    assert bare == []


# -- ndsclust-sentinel.service ------------------------------------------------------------


def unit() -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def test_unit_runs_the_sentinel_as_a_notify_service() -> None:
    s = unit()["Service"]
    assert s["Type"] == ["notify"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    exec_start = s["ExecStart"][0].split()
    assert exec_start[0] == "/usr/local/bin/ndsclust"
    args = build_parser().parse_args(exec_start[1:])
    assert args.handler is cmd_run and args.sentinel_config == config.DEFAULT_PATH
    assert "User" not in s  # programs run as other users: the sentinel is root


def test_unit_restarts_on_failure_but_not_on_a_bad_configuration() -> None:
    s = unit()["Service"]
    assert s["Restart"] == ["on-failure"] and s["RestartSec"]
    assert s["RestartPreventExitStatus"] == ["2"]  # config.load errors exit 2
    assert unit()["Unit"]["StartLimitIntervalSec"] == ["0"]


def test_unit_lets_the_sentinel_hand_its_programs_off() -> None:
    """SIGTERM to the sentinel only; the stop timeout covers the whole hand-off with the
    default stop_grace."""
    s = unit()["Service"]
    assert s["KillMode"] == ["mixed"] and s["KillSignal"] == ["SIGTERM"]
    timeout = float(s["TimeoutStopSec"][0].removesuffix("s"))
    default_grace = config.parse(
        {
            "server": "a",
            "directory": {"uris": ["ldapi:///"], "suffix": "dc=x"},
            "channels": {"directory": {}},
        }
    ).timeouts.stop_grace
    assert timeout > default_grace + HANDOFF_DEADLINE_EXTRA


def test_unit_keeps_setuid_programs_and_the_host_mount_namespace_working() -> None:
    s = unit()["Service"]
    for key in (
        "NoNewPrivileges",
        "PrivateDevices",
        "PrivateTmp",
        "ProtectSystem",
        "ProtectHome",
        "ProtectClock",
        "DeviceAllow",
        "SystemCallFilter",
        "CapabilityBoundingSet",
        "PrivateNetwork",
    ):
        assert key not in s, key


# systemd.unit(5): the spellings of a true boolean setting.
SYSTEMD_TRUE = {"1", "yes", "y", "true", "t", "on"}


def test_unit_lets_the_lease_guard_run_real_time() -> None:
    """The supervisor asks a real-time policy for the lease guard (guard.SCHED_POLICY);
    RestrictRealtime= true would have systemd refuse it to every process of the unit, and
    the timing argument on saturated CPUs would rest on nothing."""
    s = unit()["Service"]
    if guard.SCHED_POLICY in (os.SCHED_RR, os.SCHED_FIFO):
        restrict = s.get("RestrictRealtime", ["no"])[-1].strip().lower()  # the last one wins
        assert restrict not in SYSTEMD_TRUE, (
            f"RestrictRealtime={restrict} refuses the guard's policy"
        )
        assert guard.SCHED_PRIORITY >= 1
    # Root keeps CAP_SYS_NICE and sched_setscheduler (no User=, capability bound or
    # system call filter: test_unit_runs_the_sentinel_as_a_notify_service and
    # test_unit_keeps_setuid_programs_and_the_host_mount_namespace_working).
    # No class for the whole unit, and no real time for the programs' own users.
    assert "CPUSchedulingPolicy" not in s
    assert s.get("LimitRTPRIO", ["0"])[-1] == "0"


# -- render.py and its templates ----------------------------------------------------------


def test_fill_drops_repeats_and_refuses() -> None:
    t = "a: @A@\nb: @B@\nc: @C@ @A@\n"
    assert render.fill(t, {"A": "1", "B": None, "C": ["x", "y"]}) == "a: 1\nc: x 1\nc: y 1\n"
    assert render.fill(t, {"A": "1", "B": "2", "C": []}) == "a: 1\nb: 2\n"
    with pytest.raises(render.RenderError, match="@B@"):
        render.fill(t, {"A": "1", "C": "3"})
    with pytest.raises(render.RenderError, match="more than one list"):
        render.fill("@A@ @C@\n", {"A": ["1"], "C": ["2"]})
    with pytest.raises(render.RenderError, match="@D@ is not used"):
        render.fill(t, {"A": "1", "B": "2", "C": "3", "D": "4"})


def site_data(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "site.example.yaml").read_text())
    pw = tmp_path / "replicator.pw"
    pw.write_text("r" * 40)
    data["replicator"]["password_file"] = str(pw)
    data.update(changes)
    return data


@pytest.fixture
def site(tmp_path: Path) -> Any:
    return render.parse_site(site_data(tmp_path))


def test_site_example_is_valid(site: Any) -> None:
    assert [p.server_id for p in site.providers] == [1, 2, 3]
    assert site.tls is not None and site.base == "ou=ndsclust,dc=example,dc=com"


def test_site_problems_are_reported_together(tmp_path: Path) -> None:
    data = site_data(
        tmp_path,
        base="ou=ndsclust,dc=other",
        tls=None,
        providers=[
            {"id": 1, "uri": "ldap://a"},
            {"id": 1, "uri": "ldap://b"},
            {"id": 100, "uri": "ldap://c"},
            {"id": 4, "uri": "ldapi:///"},
            {"id": 5, "uri": "ldaps://e"},
        ],
        operators=[],
        colour="blue",
    )
    with pytest.raises(ConfigError) as err:
        render.parse_site(data)
    text = "\n".join(err.value.problems)
    for expected in (
        "colour: unknown key",
        "base: ",
        "tls: is missing",
        "providers[4].uri: 'ldaps://e' is ldaps:// but tls is off",
        "providers[1].id: serverID 1 is used twice",
        "providers[2].id: 100",
        "providers[3].uri",
        "operators: must list at least one DN",
    ):
        assert expected in text


def test_server_certificates_bind_only_with_a_certificate_cluster(tmp_path: Path) -> None:
    plain = render.provider_ldif(render.parse_site(site_data(tmp_path)), 1)
    assert "olcTLSVerifyClient" not in plain and "olcAuthzRegexp" not in plain
    data = site_data(tmp_path)
    data["tls"]["certificate_cluster"] = "prod"
    ldif = render.provider_ldif(render.parse_site(data), 1)
    assert "olcTLSVerifyClient: try\n" in ldif
    assert (
        'olcAuthzRegexp: {0}"^cn=([a-z0-9-]+),ou=servers,o=prod$" '
        '"cn=$1,ou=servers,ou=ndsclust,dc=example,dc=com"\n'
    ) in ldif
    data["tls"]["certificate_cluster"] = "no spaces"
    with pytest.raises(ConfigError, match=r"tls\.certificate_cluster: 'no spaces'"):
        render.parse_site(data)


def test_the_lab_can_leave_the_schema_out(site: Any) -> None:
    """Without the ndsclust schema nothing may name its attributes: not the schema, an
    index, or an ACL rule (slapd renumbers the rules that remain)."""
    ldif = render.provider_ldif(site, 1, with_schema=False)
    assert not [line for line in ldif.splitlines() if re.search(r"\bndsclust[A-Z]", line)]
    assert "olcAccess: {15}to * by self read" in ldif  # slapd renumbers the gaps
    seed = render.seed_ldifs(site, datetime(2024, 5, 1, tzinfo=UTC), with_schema=False)
    assert "ndsclustCluster" not in seed["seed-main.ldif"]


def test_provider_config_replicates_from_every_peer(site: Any) -> None:
    ldif = render.provider_ldif(site, 2)
    assert not re.search(r"@[A-Z_]+@", ldif)
    assert "olcServerID: 2\n" in ldif
    syncrepl = [line for line in ldif.splitlines() if line.startswith("olcSyncrepl:")]
    rids = sorted(re.search(r"rid=(\d+)", line).group(1) for line in syncrepl)  # type: ignore[union-attr]
    assert rids == ["101", "103", "201", "203"]
    assert all(
        "starttls=critical" in line
        and "tls_reqcert=demand" in line
        and 'binddn="cn=replicator,dc=example,dc=com"' in line
        for line in syncrepl
    )
    assert sum("syncdata=accesslog" in line for line in syncrepl) == 2  # main database only
    assert ldif.count("olcMultiProvider: TRUE") == 2
    assert "olcSecurity: ssf=64" in ldif and "olcTLSCertificateFile: " in ldif
    # The schema is the package's own, and every attribute the store searches is indexed.
    assert schema.render_ldif().strip() in ldif
    assert all(f"olcDbIndex: {a} eq" in ldif for a in NDSCLUST_EQ_INDEXES)


def test_provider_config_without_tls_or_peers(tmp_path: Path) -> None:
    single = render.parse_site(
        site_data(tmp_path, tls=False, providers=[{"id": 1, "uri": "ldap://ldap1"}])
    )
    ldif = render.provider_ldif(single, 1)
    assert "olcSyncrepl" not in ldif and "olcMultiProvider" not in ldif
    assert "olcTLS" not in ldif.replace("olcTLSProtocolMin", "") and "olcSecurity" not in ldif
    with pytest.raises(ConfigError, match="not in the site's providers"):
        render.provider_ldif(single, 2)


def test_pulse_acl_names_the_pulse_suffix_as_slapd_normalizes_it(tmp_path: Path) -> None:
    s = render.parse_site(site_data(tmp_path, pulse_suffix="O=Pulse.Example"))
    assert r'dn.regex="^cn=([^,]+),o=pulse\.example$"' in render.provider_ldif(s, 1)


def test_seed_entries_are_fixed_once_for_every_provider(site: Any) -> None:
    seeds = render.seed_ldifs(site, datetime(2024, 5, 1, tzinfo=UTC))
    main = seeds["seed-main.ldif"]
    dns = re.findall(r"^dn: (.*)$", main, re.M)
    assert dns[0] == "dc=example,dc=com" and "cn=operators,ou=ndsclust,dc=example,dc=com" in dns
    uuids = re.findall(r"^entryUUID: (.*)$", main, re.M)
    assert len(uuids) == len(set(uuids)) == len(dns)
    assert set(re.findall(r"^entryCSN: (.*)$", main, re.M)) == {
        "20240501000000.000000Z#000000#001#000000"
    }
    assert "member: uid=alice,ou=people,dc=example,dc=com" in main
    assert re.search(r"^userPassword: \{SSHA\}", main, re.M)
    assert (
        "dn: o=ndsclust-pulse\nobjectClass: organization\no: ndsclust-pulse\n"
        in seeds["seed-pulse.ldif"]
    )


def test_ssha_is_what_slapd_checks() -> None:
    """RFC 2307 {SSHA}: base64(sha1(password + salt) + salt); slapd accepting it is shown
    by every bind of the integration test."""
    assert render.ssha("secret", b"saltsalt") == "{SSHA}1G904nLkTkGWjKNnQuB/hpWXC/hzYWx0c2FsdA=="


def test_server_entry_is_what_the_sentinels_parse(site: Any) -> None:
    ldif = render.server_ldif(site, "alpha", ["198.18.0.1:7946"], ["san1"], "p" * 32)
    dn = re.search(r"^dn: (.*)$", ldif, re.M).group(1)  # type: ignore[union-attr]
    attrs: dict[str, list[str]] = {}
    for k, v in re.findall(r"^(\w+): (.*)$", ldif, re.M):
        attrs.setdefault(k, []).append(v)
    server = entries.parse_server(dn, attrs)
    assert (server.name, server.addresses, server.resources) == (
        "alpha",
        ("198.18.0.1:7946",),
        frozenset({"san1"}),
    )
    assert "simpleSecurityObject" in attrs["objectClass"]
    for bad in (("Alpha", ["198.18.0.1:1"]), ("alpha", ["nowhere"])):
        with pytest.raises(ConfigError):
            render.server_ldif(site, bad[0], bad[1], [], "p" * 32)
    with pytest.raises(ConfigError, match="at least 16"):
        render.server_ldif(site, "alpha", [], [], "short")


def test_render_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site_data(tmp_path)))
    out = tmp_path / "provider.ldif"
    assert render.main(["provider", str(path), "--server-id", "1", "-o", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the replication password
    assert render.main(["seed", str(path), "--out-dir", str(tmp_path / "seed")]) == 0
    assert {p.name for p in (tmp_path / "seed").iterdir()} == {"seed-main.ldif", "seed-pulse.ldif"}
    path.write_text(yaml.safe_dump(site_data(tmp_path, suffix="cn=nope")))
    assert render.main(["provider", str(path), "--server-id", "1"]) == 2
    assert "suffix: 'cn=nope': a suffix starts with dc=... or o=..." in capsys.readouterr().err


# -- INSTALL.md ----------------------------------------------------------------------------


def install_ldif_blocks() -> Iterator[str]:
    text = (DEPLOY / "INSTALL.md").read_text()
    for block in text.split("```ldif")[1:]:
        yield block.split("```", 1)[0].strip("\n")


def test_install_guide_application_is_valid() -> None:
    """The first application of INSTALL.md is one the sentinels accept as it is."""
    first = next(install_ldif_blocks())
    lines = first.splitlines()
    attrs: dict[str, list[str]] = {}
    for line in lines[1:]:
        k, _, v = line.partition(": ")
        attrs.setdefault(k, []).append(v)
    app = entries.parse_app(lines[0].removeprefix("dn: "), attrs)
    assert app.primary == "alpha" and app.backups == ("beta", "gamma")
    assert app.command == ("/usr/local/bin/billing-server", "--port", "8080")

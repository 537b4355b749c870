"""``ndsclust doctor``'s pure checks: each finding, its level and its fix."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ndsclust import config, doctor, schema
from ndsclust.doctor import (
    Facts,
    Finding,
    Level,
    PulseReading,
    SchemaReading,
    SecretFile,
    Transport,
    check_channels,
    check_clock_skew,
    check_entries,
    check_pulses,
    check_references,
    check_replication,
    check_resources,
    check_schema,
    check_timing,
    diagnose,
    exit_code,
    needs_second_look,
)
from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore.replication import LogWrite, parse_req_mod
from ndsclust.model import App, AppType, Server, ServerName, ServerState, Tag

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
NOW = 1_800_000_000.0
CSN = "20261125120000.000001Z#000000#{sid}#000000"


def levels(findings: list[Finding]) -> list[Level]:
    return [f.level for f in findings]


def servers(**res: set[str]) -> dict[ServerName, Server]:
    return {ServerName(n): Server(ServerName(n), resources=frozenset(r)) for n, r in res.items()}


def app(
    tag: str = "web",
    primary: ServerName = A,
    backups: tuple[ServerName, ...] = (B,),
    resources: frozenset[str] = frozenset(),
    host: ServerName | None = A,
) -> App:
    return App(
        Tag(tag), AppType.CAPABLE, ("/bin/true",), primary, backups, host=host, resources=resources
    )


def cfg(tmp_path: Path, channels: dict[str, Any]) -> config.Config:
    key = tmp_path / "k"
    key.write_bytes(b"k" * 32)
    for c in channels.values():
        if "key_file" in c:
            c["key_file"] = str(key)
    return config.parse(
        {
            "server": "alpha",
            "directory": {"uris": ["ldaps://127.0.0.1:1"], "suffix": "dc=x"},
            "channels": channels,
            "timeouts": {"failover": 0.8, "fence": 0.5, "lease": 0.5},
        },
        str(tmp_path / "sentinel.yaml"),
    )


def test_schema_loaded_missing_other_version_and_unreachable() -> None:
    found = check_schema(
        [
            SchemaReading("ldap://a", schema.VERSION),
            SchemaReading("ldap://b", None),
            SchemaReading("ldap://c", schema.VERSION + 1),
            SchemaReading("ldap://d", error="connection refused"),
        ]
    )
    assert levels(found) == [Level.OK, Level.PROBLEM, Level.PROBLEM, Level.PROBLEM]
    assert "schema install" in found[1].fix
    assert f"needs version {schema.VERSION}" in found[2].message
    assert "unreachable" in found[3].message


def test_unreadable_cn_config_is_checked_through_the_subschema_without_a_warning() -> None:
    # A server's or an operator's bind cannot read cn=config, and nobody can fix that: the
    # subschema entry shows the version just as well, so the check is complete and clean.
    found = check_schema(
        [SchemaReading("ldap://a", schema.VERSION, source="subschema", config_readable=False)]
    )
    assert levels(found) == [Level.OK] and "subschema" in found[0].message
    blind = check_schema([SchemaReading("ldap://a", None, config_readable=False)])
    assert levels(blind) == [Level.INFO] and exit_code(blind) == 0
    assert "ldapi" in blind[0].fix


def test_replication_equal_csns_converged() -> None:
    same = {"001": CSN.format(sid="001")}
    found = check_replication({"ldap://a": same, "ldap://b": dict(same)}, None)
    assert levels(found) == [Level.OK] and not needs_second_look({"a": same, "b": same})


def test_replication_lag_that_catches_up_is_not_a_problem() -> None:
    new = "20261125120001.000001Z#000000#001#000000"
    first = {"ldap://a": {"001": new}, "ldap://b": {"001": CSN.format(sid="001")}}
    assert needs_second_look(first)
    later = {"ldap://a": {"001": new}, "ldap://b": {"001": new}}
    assert levels(check_replication(first, later)) == [Level.OK]


def test_replication_stuck_provider_is_named_with_the_server_id() -> None:
    new = "20261125120001.000001Z#000000#002#000000"
    first = {"ldap://a": {"002": new}, "ldap://b": {}}
    found = check_replication(first, {"ldap://a": {"002": new}, "ldap://b": {}})
    assert levels(found) == [Level.PROBLEM]
    assert found[0].subject == "ldap://b" and "serverID 002" in found[0].message
    assert "re-seed" in found[0].fix


def test_replication_unreachable_provider_is_a_problem() -> None:
    found = check_replication({"ldap://a": {}, "ldap://b": "refused"}, None)
    assert Level.PROBLEM in levels(found) and exit_code(found) == 1


def test_pulse_fresh_stale_missing_and_down() -> None:
    srv = servers(alpha=set(), beta=set(), gamma=set())
    srv[C] = Server(C, state=ServerState.DOWN)
    pulses = {
        A: PulseReading(A, 10, NOW - 0.2, NOW - 0.2),
        B: PulseReading(B, 3, NOW - 30, NOW - 30),
    }
    found = {f.subject: f for f in check_pulses(srv, pulses, NOW, 5.0, None)}
    assert found["alpha"].level is Level.OK
    assert found["beta"].level is Level.PROBLEM and "30.0s ago" in found["beta"].message
    assert "systemctl status" in found["beta"].fix
    assert found["gamma"].level is Level.INFO  # an operator marked it down


def test_no_pulse_anywhere_is_one_warning() -> None:
    found = check_pulses(servers(alpha=set(), beta=set()), {}, NOW, 5.0, None)
    assert levels(found) == [Level.WARNING]


def test_pulses_not_checked_without_directory_channel(tmp_path: Path) -> None:
    c = cfg(
        tmp_path,
        {
            "lan": {"addresses": ["127.0.0.1:7946"], "key_file": ""},
            "disk": {"path": "/dev/null", "servers": ["alpha"]},
        },
    )
    assert levels(check_pulses(servers(alpha=set()), {}, NOW, 5.0, c)) == [Level.INFO]


def test_clock_skew_between_servers_over_one_second() -> None:
    pulses = {A: PulseReading(A, 1, NOW + 2.5, NOW), B: PulseReading(B, 1, NOW + 0.001, NOW)}
    found = check_clock_skew(pulses, 1.0)
    assert levels(found) == [Level.PROBLEM]
    assert "alpha +2.500s" in found[0].message and "NTP" in found[0].fix
    ok = check_clock_skew(
        {A: PulseReading(A, 1, NOW + 0.2, NOW), B: PulseReading(B, 1, NOW - 0.1, NOW)}, 1.0
    )
    assert levels(ok) == [Level.OK]


def test_timing_reported_ok_when_config_loaded(tmp_path: Path) -> None:
    c = cfg(tmp_path, {"directory": {}})
    found = check_timing(c)
    assert levels(found) == [Level.OK] and "failover 0.8s > max(lease 0.5s" in found[0].message
    assert levels(check_timing(None)) == [Level.INFO]


def test_lan_only_deployment_is_warned(tmp_path: Path) -> None:
    lan_only = cfg(tmp_path, {"lan": {"addresses": ["127.0.0.1:7946"], "key_file": ""}})
    found = check_channels(lan_only, {}, {})
    assert levels(found) == [Level.WARNING] and "channels.directory" in found[0].fix
    both = cfg(
        tmp_path, {"lan": {"addresses": ["127.0.0.1:7946"], "key_file": ""}, "directory": {}}
    )
    assert levels(check_channels(both, {}, {})) == [Level.OK]


def test_channels_without_config_judged_from_pulses() -> None:
    srv = servers(alpha=set())
    assert levels(check_channels(None, srv, {A: PulseReading(A, 1, NOW, NOW)})) == [Level.OK]
    assert levels(check_channels(None, srv, {})) == [Level.INFO]


def test_invalid_entries_name_dn_attribute_and_fix() -> None:
    e = EntryInvalid(
        "ndsclustTag=web,ou=applications,ou=ndsclust,dc=x",
        "ndsclustType",
        "'x' is not an application type",
    )
    found = check_entries([e])
    assert levels(found) == [Level.PROBLEM]
    assert found[0].subject == e.dn and found[0].message.startswith("ndsclustType: ")
    assert "replace: ndsclustType" in found[0].fix


def test_references_to_unknown_servers() -> None:
    found = check_references(
        [app(backups=(B, ServerName("zeta")))], servers(alpha=set(), beta=set())
    )
    assert levels(found) == [Level.PROBLEM] and "zeta" in found[0].message
    assert "servers add" in found[0].fix


def test_resources_offered_nowhere_is_a_problem_and_partly_a_warning() -> None:
    srv = servers(alpha={"san1"}, beta=set())
    nowhere = check_resources([app(resources=frozenset({"vip"}))], srv)
    assert levels(nowhere) == [Level.PROBLEM] and "can run nowhere" in nowhere[0].message
    partly = check_resources([app(resources=frozenset({"san1"}))], srv)
    assert levels(partly) == [Level.WARNING] and "beta lacks san1" in partly[0].message


def test_diagnose_healthy_cluster_exits_zero(tmp_path: Path) -> None:
    same = {"001": CSN.format(sid="001")}
    key = tmp_path / "cluster.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o600)
    secure = config.parse(
        {
            "server": "alpha",
            "directory": {
                "uris": ["ldaps://ldap1:636"],
                "suffix": "dc=x",
                "ca_file": "/ca.crt",
                "allow_plain_ldap": False,
            },
            "channels": {
                "directory": {},
                "lan": {"addresses": ["127.0.0.1:7946"], "key_file": str(key)},
            },
            "programs": {"user": "nobody", "allowed_commands": ["/bin/true"]},
            "timeouts": {"failover": 0.8, "fence": 0.5, "lease": 0.5},
        },
        str(tmp_path / "s.yaml"),
    )
    facts = Facts(
        now=NOW,
        schema=[SchemaReading("ldap://a", schema.VERSION)],
        csns={"ldap://a": same, "ldap://b": dict(same)},
        servers=servers(alpha={"san1"}, beta={"san1"}),
        apps=[app(resources=frozenset({"san1"}))],
        pulses={A: PulseReading(A, 5, NOW - 0.1, NOW - 0.1), B: PulseReading(B, 7, NOW, NOW)},
        config=secure,
        transports=[
            Transport("sentinel configuration", ("ldaps://ldap1:636",), False, "/ca.crt", False)
        ],
        secret_files=[SecretFile("channels.lan.key_file", str(key), 0o600)],
        programs_uid=65534,
    )
    found = diagnose(facts)
    assert exit_code(found) == 0
    assert {f.check for f in found} == {
        "schema",
        "replication",
        "pulse",
        "clock",
        "timing",
        "channels",
        "entry",
        "references",
        "resources",
        "tls",
        "heartbeat",
        "programs",
        "secrets",
    }
    assert all(f.level is Level.OK for f in found)


# ---- values lost to conflicting writes (accesslogs) -------------------------------------

# What three providers' accesslogs held after an operator wrote one application on alpha's
# provider (serverID 001) and on beta's (002) while the directory was split, then healed
# (captured from slapd 2.5.13, delta-syncrepl).
_UUID = "dfe0e0e8-7d7f-1041-8f5e-618a7c8a5e58"
_DN = "ndsclustTag=cfg,ou=applications,ou=ndsclust,dc=ndsclust,dc=test"
_AT_ALPHA = "20261126005553.225409Z#000000#001#000000"
_AT_BETA = "20261126005553.227520Z#000000#002#000000"


def _w(start: str, csn: str, *mods: tuple[str, str, str | None]) -> LogWrite:
    return LogWrite(f"20261126005553.{start}Z", _UUID, _DN, csn, (*mods, ("entryCSN", "=", csn)))


_ALPHA_WRITE = _w(
    "000036", _AT_ALPHA, ("ndsclustAutoRecover", "=", "FALSE"), ("description", "=", "set at alpha")
)
_BETA_WRITE = _w(
    "000038", _AT_BETA, ("ndsclustResource", "=", "disk1"), ("description", "=", "set at beta")
)
# Where beta's newer write came first, alpha's arrived late and lost its description.
_ALPHA_LATE = _w(
    "000053", _AT_ALPHA, ("ndsclustAutoRecover", "-", None), ("ndsclustAutoRecover", "=", "FALSE")
)
_LOGS: dict[str, doctor.LogReading] = {
    "ldap://alpha": [_ALPHA_WRITE, _BETA_WRITE],
    "ldap://beta": [replace(_BETA_WRITE, start="20261126005553.000050Z"), _ALPHA_LATE],
    "ldap://gamma": [
        replace(_BETA_WRITE, start="20261126005553.000044Z"),
        replace(_ALPHA_LATE, start="20261126005553.000046Z"),
    ],
}


def test_a_value_lost_to_a_concurrent_write_is_reported_once() -> None:
    findings = doctor.check_overwrites(_LOGS, "20261125005553.000000Z")
    [lost] = [f for f in findings if f.level is Level.WARNING]
    assert lost.check == "overwrite" and lost.subject == _DN
    assert lost.message.startswith("description: 'set at alpha' written via serverID 001")
    assert "overwritten by 'set at beta' written concurrently via serverID 002" in lost.message
    assert "'set at alpha'" in lost.fix
    # Different attributes were merged, not lost: nothing about them.
    assert "ndsclustautorecover" not in lost.message.lower()


def test_writes_in_order_or_from_one_server_lose_nothing() -> None:
    in_order: dict[str, doctor.LogReading] = {"ldap://alpha": [_ALPHA_WRITE, _BETA_WRITE]}
    same_server = replace(_BETA_WRITE, csn=_AT_BETA.replace("#002#", "#001#"))
    one_writer: dict[str, doctor.LogReading] = {"ldap://a": [same_server, _ALPHA_WRITE]}
    for logs in (in_order, one_writer):
        [ok] = doctor.check_overwrites(logs)
        assert ok.level is Level.OK


def test_an_unreadable_accesslog_is_said_not_checked() -> None:
    findings = doctor.check_overwrites({"ldap://a": "cn=accesslog is not readable"})
    assert [(f.level, f.subject) for f in findings] == [(Level.INFO, "ldap://a")]
    assert "not checked" in findings[0].message


def test_req_mod_values_are_split_at_the_operator() -> None:
    assert parse_req_mod("description:= set at: alpha") == ("description", "=", "set at: alpha")
    assert parse_req_mod("ndsclustAutoRecover:-") == ("ndsclustAutoRecover", "-", None)
    assert parse_req_mod("member:+ cn=x,o=y") == ("member", "+", "cn=x,o=y")


# ---- convergence by value ---------------------------------------------------------------

_APP = "ndsclusttag=web,ou=applications,ou=ndsclust,dc=x"
_SRV = "cn=alpha,ou=servers,ou=ndsclust,dc=x"


def test_providers_holding_the_same_values_converged() -> None:
    tree = {_APP: {"ndsclustHostServer": ("alpha",)}, _SRV: {"cn": ("alpha",)}}
    [ok] = doctor.check_convergence({"ldap://a": tree, "ldap://b": dict(tree)}, None)
    assert ok.level is Level.OK and "same 2 cluster entries" in ok.message


def test_an_entry_missing_or_different_on_one_provider_is_a_problem_naming_it() -> None:
    a = {_APP: {"ndsclustHostServer": ("alpha",)}, _SRV: {"cn": ("alpha",)}}
    b = {_APP: {"ndsclustHostServer": ("beta",)}}
    findings = doctor.check_convergence(
        {"ldap://a": a, "ldap://b": b, "ldap://c": "down"}, {"ldap://a": a, "ldap://b": b}
    )
    assert [(f.level, f.subject) for f in findings] == [
        (Level.PROBLEM, _SRV),
        (Level.PROBLEM, _APP),
    ]
    assert findings[0].message == "providers disagree: missing on ldap://b"
    assert "re-seed" in findings[0].fix
    assert "ndsclustHostServer=['alpha']/['beta']" in findings[1].message


def test_a_difference_gone_on_the_second_look_was_replication_in_flight() -> None:
    a = {_APP: {"ndsclustState": ("running",)}}
    b = {_APP: {"ndsclustState": ("loading",)}}
    [ok] = doctor.check_convergence(
        {"ldap://a": a, "ldap://b": b}, {"ldap://a": a, "ldap://b": dict(a)}
    )
    assert ok.level is Level.OK


def test_doctor_over_ldapi_checks_every_provider_of_the_configuration(tmp_path: Path) -> None:
    from ndsclust.cli.doctor_cmd import targets
    from ndsclust.ldapstore.connection import Credentials

    cfg = config.parse(
        {
            "server": "alpha",
            "directory": {
                "uris": ["ldaps://l1", "ldaps://l2", "ldaps://l3"],
                "local_uri": "ldaps://l1",
                "suffix": "dc=x",
                "bind_dn": "cn=alpha,ou=servers,ou=ndsclust,dc=x",
            },
            "channels": {"directory": {}},
        },
    )
    root = Credentials(sasl_external=True)
    got = targets(["ldapi:///"], root, cfg)
    assert [u for u, _ in got] == ["ldapi:///", "ldaps://l2", "ldaps://l3"]
    assert got[0][1] is root and got[1][1].bind_dn == "cn=alpha,ou=servers,ou=ndsclust,dc=x"
    assert [u for u, _ in targets(["ldaps://l1"], root, cfg)] == ["ldaps://l1"]

"""``ndsclust simulate`` and the pause's value: snapshots, scenarios, redaction (no server)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from ndsclust.cli.pause_cmd import duration
from ndsclust.errors import ConfigError, EntryInvalid
from ndsclust.ldapstore.store import generalized_time
from ndsclust.model import AppState, ServerName
from ndsclust.pause import Pause, of_values, parse
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.view import Policy
from ndsclust.simulate import scenario, snapshot
from ndsclust.simulate.engine import Timing
from ndsclust.simulate.scenario import Fault

TAKEN = 1_800_000_000.0
BASE = "ou=ndsclust,dc=example,dc=com"
TIMING = Timing(step=0.1, failover=0.8, fence=0.4)


def _server(name: str, resources: tuple[str, ...] = ()) -> dict[str, Any]:
    attrs: dict[str, list[str]] = {
        "objectClass": ["top", "ndsclustServer"],
        "cn": [name],
        "ndsclustAddress": ["127.0.1.1:7000"],
        "userPassword": ["{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA"],
    }
    if resources:
        attrs["ndsclustResource"] = list(resources)
    return {"dn": f"cn={name},ou=servers,{BASE}", "attributes": attrs}


def _app(tag: str, primary: str, backups: list[str], host: str, **extra: list[str]) -> Any:
    attrs = {
        "objectClass": ["top", "ndsclustApplication"],
        "ndsclustTag": [tag],
        "ndsclustType": ["capable"],
        "ndsclustCommand": ["/usr/bin/sleep 1000"],
        "ndsclustPrimaryServer": [primary],
        "ndsclustBackupServer": [f"{{{i}}}{b}" for i, b in enumerate(backups)],
        "ndsclustHostServer": [host],
        "ndsclustState": ["running"],
        "ndsclustAutoRecover": ["TRUE"],
        **extra,
    }
    return {"dn": f"ndsclustTag={tag},ou=applications,{BASE}", "attributes": attrs}


def _pulse(name: str, age: float) -> dict[str, Any]:
    return {
        "dn": f"cn={name},dc=pulse",
        "attributes": {
            "objectClass": ["ndsclustPulseEntry"],
            "cn": [name],
            "ndsclustPulse": ["7"],
            "ndsclustPulseTime": [generalized_time(TAKEN - age)],
        },
    }


def doc(*, pause: str | None = None, dead: tuple[str, ...] = ()) -> dict[str, Any]:
    base: dict[str, list[str]] = {"objectClass": ["organizationalUnit", "ndsclustCluster"]}
    if pause:
        base["ndsclustPause"] = [pause]
    return {
        "format": snapshot.FORMAT,
        "taken": TAKEN,
        "base": BASE,
        "entries": [
            {"dn": BASE, "attributes": base},
            _server("alpha"),
            _server("beta", ("san1",)),
            _server("gamma", ("san1",)),
            _app("web", "alpha", ["beta", "gamma"], "alpha"),
            _app("db", "beta", ["gamma", "alpha"], "beta", ndsclustResource=["san1"]),
        ],
        "pulses": [_pulse(s, 60.0 if s in dead else 0.5) for s in ("alpha", "beta", "gamma")],
    }


def run(d: dict[str, Any], *faults: str) -> dict[str, Any]:
    parsed = snapshot.parse(d)
    assert parsed.invalid == []
    sim = snapshot.sim_of(parsed, TIMING, Policy())
    out = [Fault(*f.split(" ", 1)) for f in faults]
    return scenario.run(sim, out).json()


def test_nothing_happens_without_events() -> None:
    out = run(doc())
    assert out["apps"] == {
        "db": {"host": "beta", "state": "running"},
        "web": {"host": "alpha", "state": "running"},
    }
    assert out["events"] == []


def test_kill_the_write_providers_server_fails_over_to_the_first_fit_backup() -> None:
    out = run(doc(), "kill alpha")
    assert out["apps"]["web"] == {"host": "beta", "state": "running"}
    assert out["apps"]["db"] == {"host": "beta", "state": "running"}
    kinds = [(e["server"], e["kind"], e["tag"], e["after"]) for e in out["events"]]
    assert kinds == [("beta", "failover", "web", "--kill alpha")]


def test_kill_then_resource_rules_decide_the_taker() -> None:
    out = run(doc(), "kill beta")
    assert out["apps"]["db"]["host"] == "gamma"  # alpha lacks san1


def test_a_dead_server_in_the_snapshot_fails_over_at_once() -> None:
    out = run(doc(dead=("alpha",)))
    assert out["apps"]["web"]["host"] == "beta"
    assert [e["after"] for e in out["events"]] == ["start"]


def test_four_crashes_restart_three_times_then_hand_off() -> None:
    out = run(doc(), "crash web", "crash web", "crash web", "crash web")
    assert out["apps"]["web"]["host"] == "beta"
    kinds = [e["kind"] for e in out["events"] if e["tag"] == "web"]
    assert kinds == ["restart"] * 3 + ["handoff", "failback_held"]


def test_maintenance_and_migrate_in_order() -> None:
    out = run(doc(), "maintenance alpha", "request db=migrate:alpha")
    assert out["apps"]["web"]["host"] == "beta"
    assert out["apps"]["db"]["host"] == "beta"  # alpha is in maintenance: rejected
    assert any(e["kind"] == "request_rejected" for e in out["events"])


def test_cut_lan_alone_moves_nothing() -> None:
    out = run(doc(), "cut-lan alpha")
    assert out["apps"]["web"]["host"] == "alpha" and out["events"] == []


def test_isolated_host_fences_and_its_peers_take_over() -> None:
    out = run(doc(), "isolate alpha")
    assert out["apps"]["web"]["host"] == "beta"
    assert ("alpha", "fenced") not in [(e["server"], e["kind"]) for e in out["events"]]


def test_paused_snapshot_holds_the_failover() -> None:
    out = run(doc(pause="- upgrading"), "kill alpha", "request db=migrate:gamma")
    assert out["apps"]["web"]["host"] == "alpha"
    assert out["apps"]["db"] == {"host": "gamma", "state": "running(migrate)"}
    assert [e["kind"] for e in out["events"] if e["tag"] == "web"] == [EventKind.PAUSED_HOLD.value]


def test_unknown_names_are_refused_together() -> None:
    parsed = snapshot.parse(doc())
    sim = snapshot.sim_of(parsed, TIMING, Policy())
    with pytest.raises(ConfigError) as e:
        scenario.run(sim, [Fault("kill", "delta"), Fault("crash", "nope")])
    assert "no server 'delta'" in str(e.value) and "no application 'nope'" in str(e.value)


def test_redact_removes_passwords_keys_and_hashes() -> None:
    out = snapshot.redact(
        {
            "userPassword": [b"{SSHA}abc"],
            "olcRootPW": ["secret"],
            "description": ["{ARGON2}$argon2id$xyz", "plain words"],
            "cert": ["-----BEGIN PRIVATE KEY-----\nMII"],
            "ndsclustBackupServer": ["{0}beta", "{1}gamma"],
        }
    )
    assert out == {
        "userPassword": ["<removed>"],
        "olcRootPW": ["<removed>"],
        "description": ["<removed>", "plain words"],
        "cert": ["<removed>"],
        "ndsclustBackupServer": ["{0}beta", "{1}gamma"],
    }


def test_pause_values() -> None:
    p = parse("20261202051500Z upgrading slapd")
    assert p.reason == "upgrading slapd" and p.value() == "20261202051500Z upgrading slapd"
    assert p.until is not None and p.active(p.until - 1) and not p.active(p.until)
    assert parse("-").until is None and Pause(None, "").value() == "-"
    with pytest.raises(EntryInvalid, match="YYYYmmddHHMMSSZ"):
        parse("tomorrow")
    assert of_values(None) is None
    held = of_values(["tomorrow"])
    assert held is not None and held.until is None  # unreadable: paused, and it says so


def test_duration() -> None:
    assert duration("90") == 90 and duration("15m") == 900 and duration("1h30m") == 5400
    for bad in ("", "soon", "0", "5x"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)


def test_state_survives_as_written() -> None:
    parsed = snapshot.parse(doc())
    assert parsed.apps[next(iter(parsed.apps))].state.state is AppState.RUNNING
    assert set(parsed.pulse_times) == {ServerName("alpha"), ServerName("beta"), ServerName("gamma")}

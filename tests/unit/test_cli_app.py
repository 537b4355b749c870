"""``app add`` / ``app edit`` input handling: every value checked before anything is written."""

from __future__ import annotations

import argparse

import pytest

from ndsclust.cli import app_cmd, app_fields
from ndsclust.cli.app_fields import (
    build_app,
    check_given,
    edited,
    field_named,
    ldap_values,
    parse_sets,
    prompt_values,
)
from ndsclust.errors import ConfigError, EntryInvalid
from ndsclust.ldapstore.connection import Credentials, Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import AppState

STORE = Store(Providers(["ldap://127.0.0.1:1"], Credentials()), "dc=x")
GOOD = {
    "ndsclustTag": "web",
    "ndsclustCommand": "/bin/sleep 100",
    "ndsclustPrimaryServer": "alpha",
    "ndsclustBackupServer": "beta,gamma",
}


def test_short_and_ldap_names_resolve_to_one_field() -> None:
    assert field_named("backups") is field_named("ndsclustBackupServer")
    assert field_named("BACKUP") is field_named("backups")
    assert field_named("auto_recover").attr == "ndsclustAutoRecover"
    with pytest.raises(ValueError, match="not an application attribute; allowed: tag, type"):
        field_named("colour")


def test_backups_keep_the_operators_order_as_ordered_values() -> None:
    f = field_named("backups")
    assert ldap_values(f, f.values("gamma, beta")) == ["{0}gamma", "{1}beta"]


def test_flags_checked_all_at_once_naming_attribute_and_flag() -> None:
    with pytest.raises(ConfigError) as err:
        check_given(
            {
                "ndsclustTag": "bad tag!",
                "ndsclustCommand": "sleep 1",
                "ndsclustBackupServer": "Beta",
                "ndsclustAutoRecover": "maybe",
            }
        )
    text = str(err.value)
    assert text.startswith("app add: 5 errors")
    assert "ndsclustTag (--tag): 'bad tag!' is not a tag" in text
    assert "ndsclustCommand (--command): program 'sleep' is not an absolute path" in text
    assert "ndsclustPrimaryServer (--primary): is missing" in text
    assert "ndsclustBackupServer (--backup): 'Beta' is not a server name" in text
    assert "ndsclustAutoRecover (--auto-recover): 'maybe' is not a yes/no value" in text


def test_defaults_fill_type_and_auto_recover() -> None:
    values = check_given(GOOD)
    assert values["ndsclustType"] == ["capable"] and values["ndsclustAutoRecover"] == ["TRUE"]
    assert values["ndsclustBackupServer"] == ["beta", "gamma"]


def test_new_app_starts_on_its_primary_unless_not_loaded() -> None:
    loaded = build_app(STORE, check_given(GOOD), load=True)
    assert loaded.host == "alpha" and loaded.state.state is AppState.LOADING
    assert loaded.backups == ("beta", "gamma")
    idle = build_app(STORE, check_given(GOOD), load=False)
    assert idle.host is None and idle.state.state is AppState.STOPPED


def test_cross_attribute_rule_is_caught_before_writing() -> None:
    with pytest.raises(EntryInvalid, match="names the primary server 'alpha'"):
        build_app(STORE, check_given({**GOOD, "ndsclustBackupServer": "alpha"}), load=True)


def test_prompting_asks_again_until_valid_and_checks_known_servers() -> None:
    answers = iter(
        [
            "web",
            "",
            "sleep 5",
            "/bin/sleep 5",
            "",
            "",
            "zeta",
            "alpha",
            "alpha,beta",
            "beta, gamma",
            "",
            "no",
        ]
    )
    asked: list[str] = []
    said: list[str] = []

    def ask(q: str) -> str:
        asked.append(q)
        return next(answers)

    values = prompt_values({}, ask, ["alpha", "beta", "gamma"], said.append)
    assert values["ndsclustCommand"] == ["/bin/sleep 5"]
    assert values["ndsclustPrimaryServer"] == ["alpha"]
    assert values["ndsclustBackupServer"] == ["beta", "gamma"]
    assert values["ndsclustType"] == ["capable"] and values["ndsclustAutoRecover"] == ["FALSE"]
    assert any("not an absolute path" in s for s in said)
    assert any("unknown server 'zeta'" in s for s in said)
    assert any("names the primary server 'alpha'" in s for s in said)
    assert any("(one of alpha, beta, gamma)" in q for q in asked)


def test_prompting_skips_what_flags_gave() -> None:
    answers = iter(["", "", "", "", ""])
    values = prompt_values(GOOD, lambda q: next(answers), ["alpha", "beta", "gamma"], print)
    assert values["ndsclustTag"] == ["web"]


def test_set_items_checked_all_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        parse_sets(["tag=db", "colour=red", "host=Beta", "command=", "nonsense"])
    text = str(err.value)
    assert "ndsclustTag (tag): the tag names the entry and cannot change" in text
    assert "'colour' is not an application attribute" in text
    assert "ndsclustHostServer (host): 'Beta' is not a server name" in text
    assert "ndsclustCommand (command): is required and cannot be removed" in text
    assert "write NAME=VALUE" in text


def test_edit_replaces_and_removes_case_insensitively() -> None:
    raw = {
        "ndsclusttag": ["web"],
        "ndsclustbackupserver": ["{0}beta", "{1}gamma"],
        "ndsclustUnloadCommand": ["/bin/kill"],
    }
    sets = parse_sets(["backups=gamma,beta", "unload-command=", "auto-recover=no"])
    out = edited(raw, sets)
    assert out["ndsclustBackupServer"] == ["{0}gamma", "{1}beta"]
    assert "ndsclustbackupserver" not in out
    assert not any(k.lower() == "ndsclustunloadcommand" for k in out)
    assert out["ndsclustAutoRecover"] == ["FALSE"]


def test_edit_fields_cover_every_application_attribute() -> None:
    names = {f.attr for f in app_fields.FIELDS}
    assert names == {
        "ndsclustTag",
        "ndsclustType",
        "ndsclustCommand",
        "ndsclustUnloadCommand",
        "ndsclustHealthCommand",
        "ndsclustPrimaryServer",
        "ndsclustBackupServer",
        "ndsclustResource",
        "ndsclustAutoRecover",
        "ndsclustRequires",
        "ndsclustAvoids",
        "ndsclustServiceAddress",
        "ndsclustHostServer",
        "ndsclustState",
        "ndsclustRequest",
        "ndsclustMarker",
    }


def test_app_remove_waits_for_one_copy_and_names_the_providers_that_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = [
        {"ldap://a": "csn1", "ldap://b": "csn0"},
        {"ldap://a": "csn1", "ldap://b": "csn1", "ldap://c": "csn1"},
    ]
    monkeypatch.setattr(app_cmd.replication, "entry_csns", lambda *a, **k: answers.pop(0))
    monkeypatch.setattr(app_cmd.time, "sleep", lambda s: None)
    args = argparse.Namespace()
    monkeypatch.setattr(app_cmd.common, "uris", lambda a: ["ldap://a", "ldap://b"])
    monkeypatch.setattr(app_cmd.common, "credentials", lambda a: Credentials())
    assert app_cmd._until_replicated(args, "ndsclustTag=web,dc=x") is None
    assert answers == []

    monkeypatch.setattr(app_cmd, "REMOVE_SETTLE", 0.0)
    monkeypatch.setattr(
        app_cmd.replication,
        "entry_csns",
        lambda *a, **k: {"ldap://a": "csn1", "ldap://b": None},
    )
    assert app_cmd._until_replicated(args, "ndsclustTag=web,dc=x") == (
        "ldap://a: csn1, ldap://b: absent"
    )

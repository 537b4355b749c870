"""``ndsclust schema install`` on a provider that holds an earlier release of the same
schema version: what that release lacks is added in place, entries using it stay valid,
and any difference other than an addition is refused (real slapd, cn=config over ldapi)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ldap3
import pytest

from ndsclust import schema
from ndsclust.errors import SchemaError
from ndsclust.lab.directory import DirectoryCluster
from ndsclust.ldapstore import schema_admin
from ndsclust.ldapstore.connection import Credentials, connected

EXTERNAL = Credentials(sasl_external=True)
NEW_ATTR = "ndsclustNetwork"
REPORT_CLASS = "ndsclustLivenessReport"


def earlier_release(
    attributes: tuple[schema.AttributeType, ...] = schema.ATTRIBUTES,
) -> dict[str, list[str]]:
    """The schema entry of a release before ndsclustNetwork: without the attribute, and
    the liveness report class without it (and with an older description)."""
    classes = [
        dataclasses.replace(
            o, may=tuple(a for a in o.may if a != NEW_ATTR), desc="what a server hears"
        )
        if o.name == REPORT_CLASS
        else o
        for o in schema.OBJECT_CLASSES
    ]
    return {
        "cn": [schema.SCHEMA_NAME],
        "olcAttributeTypes": [a.definition() for a in attributes if a.name != NEW_ATTR],
        "olcObjectClasses": [o.definition() for o in classes],
    }


def load(c: DirectoryCluster, attrs: dict[str, list[str]]) -> str:
    uri = c.providers[0].ldapi_url
    with connected(uri, EXTERNAL) as conn:
        dn = f"cn={schema.SCHEMA_NAME},cn=schema,cn=config"
        assert conn.add(dn, ["olcSchemaConfig"], attrs), conn.result
    return uri


def admin(c: DirectoryCluster) -> ldap3.Connection:
    return ldap3.Connection(
        ldap3.Server(c.uris[0], get_info=ldap3.NONE), c.admin_dn, c.admin_password, auto_bind=True
    )


def test_an_earlier_release_is_completed_in_place_and_its_entries_stay(
    fresh_directory: Callable[..., DirectoryCluster],
) -> None:
    c = fresh_directory(n=1, with_schema=False)
    uri = load(c, earlier_release())
    pulse = f"cn=alpha,{c.pulse_suffix}"
    conn = admin(c)
    try:
        assert conn.add(
            pulse,
            ["ndsclustPulseEntry", REPORT_CLASS],
            {"cn": "alpha", "ndsclustPulse": "1", "ndsclustHeard": "beta lan"},
        ), conn.result
        assert not conn.modify(pulse, {NEW_ATTR: [(ldap3.MODIFY_REPLACE, ["net:198.18.0.0/15"])]})

        outcome = schema_admin.install(uri, EXTERNAL)
        assert outcome == (
            "completed: 1 attribute types and 0 object classes added, "
            "1 object classes given new optional attributes"
        )
        assert conn.modify(pulse, {NEW_ATTR: [(ldap3.MODIFY_REPLACE, ["net:198.18.0.0/15"])]}), (
            conn.result
        )
        conn.search(pulse, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["*"])
        assert conn.entries[0]["ndsclustHeard"].value == "beta lan"
        assert schema_admin.install(uri, EXTERNAL) == "already loaded"
        assert schema_admin.status(uri, EXTERNAL).version == schema.VERSION
    finally:
        conn.unbind()


def test_a_changed_attribute_type_is_refused_by_name(
    fresh_directory: Callable[..., DirectoryCluster],
) -> None:
    c = fresh_directory(n=1, with_schema=False)
    changed = tuple(
        dataclasses.replace(a, single=not a.single) if a.name == "ndsclustTag" else a
        for a in schema.ATTRIBUTES
    )
    uri = load(c, earlier_release(changed))
    with pytest.raises(SchemaError, match="attribute type ndsclustTag differs"):
        schema_admin.install(uri, EXTERNAL)
    # The refused install added nothing either.
    with connected(uri, EXTERNAL) as conn:
        conn.search(
            "cn=schema,cn=config",
            f"(cn=*{schema.SCHEMA_NAME})",
            search_scope=ldap3.LEVEL,
            attributes=["olcAttributeTypes"],
        )
        loaded = [
            bytes(v).decode() for v in conn.response[0]["raw_attributes"]["olcAttributeTypes"]
        ]
    assert len(loaded) == len(schema.ATTRIBUTES) - 1
    assert not [v for v in loaded if f"NAME '{NEW_ATTR}'" in v]

"""Loading the ndsclust schema into a provider's cn=config (not replicated: every provider).

Replication from a provider that has the schema into one that lacks it stalls silently
(docs/platform.md fact 3), so ``install`` is run against every provider and is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

import ldap3

from ndsclust import schema
from ndsclust.errors import ProviderUnreachable, SchemaError, StoreError
from ndsclust.ldapstore.connection import Credentials, connected
from ndsclust.ldapstore.entries import Entry


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    uri: str
    dn: str | None  # cn={N}ndsclust,cn=schema,cn=config, None when absent
    version: int | None


def status(uri: str, creds: Credentials) -> SchemaStatus:
    with connected(uri, creds) as conn:
        ok = conn.search(
            "cn=schema,cn=config",
            "(cn=*ndsclust)",
            search_scope=ldap3.LEVEL,
            attributes=["cn", "olcObjectClasses"],
            dereference_aliases=ldap3.DEREF_NEVER,
        )
        if not ok and (conn.result or {}).get("result") not in (0, 32):
            raise StoreError(
                f"{uri}: cannot read cn=schema,cn=config: "
                f"{conn.result.get('description')}; bind as a cn=config manager "
                "(e.g. root over ldapi:// with SASL EXTERNAL)"
            )
        for r in conn.response or []:
            if r.get("type") != "searchResEntry":
                continue
            e = Entry(r["dn"], r["raw_attributes"])
            return SchemaStatus(uri, e.dn, schema.version_in(list(e.all("olcObjectClasses"))))
        return SchemaStatus(uri, None, None)


def install(uri: str, creds: Credentials) -> str:
    """Load the schema if absent. Returns 'installed' or 'already loaded'; SchemaError when
    another version is loaded (schemas are never changed in place behind an operator's back)."""
    st = status(uri, creds)
    if st.dn is not None:
        if st.version == schema.VERSION:
            return "already loaded"
        raise SchemaError(
            f"{uri}: {st.dn} holds ndsclust schema version {st.version}, this ndsclust needs "
            f"version {schema.VERSION}; upgrade every provider with the release notes' steps "
            "before starting sentinels of this version"
        )
    attrs = {
        "cn": [schema.SCHEMA_NAME],
        "olcAttributeTypes": [a.definition() for a in schema.ATTRIBUTES],
        "olcObjectClasses": [o.definition() for o in schema.OBJECT_CLASSES],
    }
    with connected(uri, creds) as conn:
        if not conn.add(f"cn={schema.SCHEMA_NAME},cn=schema,cn=config", ["olcSchemaConfig"], attrs):
            raise SchemaError(
                f"{uri}: loading the schema failed: {conn.result.get('description')} "
                f"{conn.result.get('message', '')}".rstrip()
            )
    return "installed"


def _read_base(uri: str, creds: Credentials, dn: str, filt: str, attrs: list[str]) -> Entry | None:
    """The entry ``dn`` as this bind may read it; None when it may not (or it is absent)."""
    with connected(uri, creds) as conn:
        conn.search(
            dn,
            filt,
            search_scope=ldap3.BASE,
            attributes=attrs,
            dereference_aliases=ldap3.DEREF_NEVER,
        )
        for r in conn.response or []:
            if r.get("type") == "searchResEntry":
                return Entry(r["dn"], r["raw_attributes"])
    return None


def subschema_version(uri: str, creds: Credentials) -> int | None:
    """The schema version slapd has loaded, from the subschema subentry that any bind may
    usually read: the fallback when cn=config is closed to this bind."""
    try:
        e = _read_base(uri, creds, "cn=Subschema", "(objectClass=subschema)", ["objectClasses"])
    except ProviderUnreachable:
        raise
    except StoreError:
        return None
    return schema.version_in(list(e.all("objectClasses"))) if e is not None else None


def config_readable(uri: str, creds: Credentials) -> bool:
    """Whether this bind can see cn=schema,cn=config at all (slapd answers "no such object"
    where a bind may not look)."""
    try:
        return _read_base(uri, creds, "cn=schema,cn=config", "(objectClass=*)", ["1.1"]) is not None
    except ProviderUnreachable:
        raise
    except StoreError:
        return False

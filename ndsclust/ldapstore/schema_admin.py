"""Loading the ndsclust schema into a provider's cn=config (not replicated: every provider).

Replication from a provider that has the schema into one that lacks it stalls silently
(docs/platform.md fact 3), so ``install`` is run against every provider and is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

import ldap3

from ndsclust import schema
from ndsclust.errors import SchemaError, StoreError
from ndsclust.ldapstore.connection import Credentials, open_connection


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    uri: str
    dn: str | None  # cn={N}ndsclust,cn=schema,cn=config, None when absent
    version: int | None


def status(uri: str, creds: Credentials) -> SchemaStatus:
    conn = open_connection(uri, creds)
    try:
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
            values = [v.decode() for v in r["raw_attributes"].get("olcObjectClasses", [])]
            return SchemaStatus(uri, r["dn"], schema.version_in(values))
        return SchemaStatus(uri, None, None)
    finally:
        conn.unbind()


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
    conn = open_connection(uri, creds)
    try:
        if not conn.add(f"cn={schema.SCHEMA_NAME},cn=schema,cn=config", ["olcSchemaConfig"], attrs):
            raise SchemaError(
                f"{uri}: loading the schema failed: {conn.result.get('description')} "
                f"{conn.result.get('message', '')}".rstrip()
            )
    finally:
        conn.unbind()
    return "installed"

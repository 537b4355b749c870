"""Loading the ndsclust schema into a provider's cn=config (not replicated: every provider).

Replication from a provider that has the schema into one that lacks it stalls silently
(docs/platform.md fact 3), so ``install`` is run against every provider and is idempotent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import ldap3

from ndsclust import schema
from ndsclust.errors import ProviderUnreachable, SchemaError, StoreError
from ndsclust.ldapstore.connection import Credentials, connected, read_entry
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
    """Load the schema if absent, or complete a loaded copy of the same version (``_complete``).
    Returns 'installed', 'already loaded' or what it added; SchemaError when another version
    is loaded, or this version differs from the loaded one other than by additions (schemas
    are never changed in place behind an operator's back)."""
    st = status(uri, creds)
    if st.dn is not None:
        if st.version == schema.VERSION:
            return _complete(uri, creds, st.dn)
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


_OID = re.compile(r"^(?:\{\d+\})?\(\s*(\S+)")
_MAY = re.compile(r" MAY (?:\( ([^)]*) \)|(\S+))")
_DESC = re.compile(r" DESC '(?:[^'\\]|\\.)*'")


def _oid(definition: str) -> str:
    m = _OID.match(definition)
    return m.group(1) if m else definition


def _bare(definition: str) -> str:
    """A loaded definition without cn=config's ``{N}`` ordering prefix."""
    return re.sub(r"^\{\d+\}", "", definition)


def _shape(definition: str) -> str:
    """A definition without its DESC: a changed description changes nothing slapd checks."""
    return _DESC.sub("", _bare(definition))


def _may(definition: str) -> tuple[str, frozenset[str]]:
    """(the definition without its MAY clause, the MAY attribute names)."""
    m = _MAY.search(definition)
    if m is None:
        return definition, frozenset()
    names = m.group(1) or m.group(2) or ""
    rest = definition[: m.start()] + definition[m.end() :]
    return rest, frozenset(n.strip() for n in names.split("$") if n.strip())


def _complete(uri: str, creds: Credentials, dn: str) -> str:
    """Bring a loaded schema of this version up to this release's: attribute types and
    object classes it lacks are added, and an object class that this release lets hold more
    optional attributes gets them (its definition replaced in place, the rest of it equal
    but for its description). Any other difference is refused, naming the element:
    releases of one schema version only ever add. An attribute type whose description
    alone differs is left as loaded."""
    e = read_entry(
        uri, creds, dn, "(objectClass=olcSchemaConfig)", ["olcAttributeTypes", "olcObjectClasses"]
    )
    if e is None:
        raise SchemaError(f"{uri}: {dn} could not be read")
    loaded_at = {_oid(v): v for v in e.all("olcAttributeTypes")}
    loaded_oc = {_oid(v): v for v in e.all("olcObjectClasses")}
    add_at: list[str] = []
    for a in schema.ATTRIBUTES:
        want = a.definition()
        have = loaded_at.get(_oid(want))
        if have is None:
            add_at.append(want)
        elif _shape(have) != _shape(want):
            raise SchemaError(
                f"{uri}: attribute type {a.name} differs from this release's "
                f"({_bare(have)!r}); it is not changed in place"
            )
    delete_oc: list[str] = []
    add_oc: list[str] = []
    for o in schema.OBJECT_CLASSES:
        want = o.definition()
        have = loaded_oc.get(_oid(want))
        if have is None:
            add_oc.append(want)
            continue
        if _bare(have) == want:
            continue
        (have_rest, have_may), (want_rest, want_may) = _may(_shape(have)), _may(_shape(want))
        if have_rest != want_rest or not have_may <= want_may:
            raise SchemaError(
                f"{uri}: object class {o.name} differs from this release's other than by "
                f"optional attributes ({_bare(have)!r}); it is not changed in place"
            )
        delete_oc.append(have)
        add_oc.append(want)
    if not (add_at or add_oc):
        return "already loaded"
    changes: dict[str, list[tuple[str, list[str]]]] = {}
    if add_at:
        changes["olcAttributeTypes"] = [(ldap3.MODIFY_ADD, add_at)]
    oc_changes: list[tuple[str, list[str]]] = []
    if delete_oc:
        oc_changes.append((ldap3.MODIFY_DELETE, delete_oc))
    if add_oc:
        oc_changes.append((ldap3.MODIFY_ADD, add_oc))
    if oc_changes:
        changes["olcObjectClasses"] = oc_changes
    with connected(uri, creds) as conn:
        if not conn.modify(dn, changes):
            raise SchemaError(
                f"{uri}: completing the schema failed: {conn.result.get('description')} "
                f"{conn.result.get('message', '')}".rstrip()
            )
    widened = len(delete_oc)
    return (
        f"completed: {len(add_at)} attribute types and {len(add_oc) - widened} object "
        f"classes added, {widened} object classes given new optional attributes"
    )


def subschema_version(uri: str, creds: Credentials) -> int | None:
    """The schema version slapd has loaded, from the subschema subentry that any bind may
    usually read: the fallback when cn=config is closed to this bind."""
    try:
        e = read_entry(uri, creds, "cn=Subschema", "(objectClass=subschema)", ["objectClasses"])
    except ProviderUnreachable:
        raise
    except StoreError:
        return None
    return schema.version_in(list(e.all("objectClasses"))) if e is not None else None


def config_readable(uri: str, creds: Credentials) -> bool:
    """Whether this bind can see cn=schema,cn=config at all (slapd answers "no such object"
    where a bind may not look)."""
    try:
        return read_entry(uri, creds, "cn=schema,cn=config", "(objectClass=*)", ["1.1"]) is not None
    except ProviderUnreachable:
        raise
    except StoreError:
        return False

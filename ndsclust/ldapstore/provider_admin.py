"""What an administrator asks of one provider, by its URI (usually its ldapi:// socket).

Used by the local lab (``ndsclust.lab.directory``) to tell when a provider answers and when
its replication agreements run, and to add the entries a deployment's administrator adds
with ``ldapadd``. Each call opens its own connection and closes it; errors are ndsclust's
(``ProviderUnreachable``, ``StoreError``), never ldap3's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ldap3
from ldap3.core.exceptions import LDAPException

from ndsclust.errors import ProviderUnreachable, StoreError
from ndsclust.ldapstore.connection import Credentials, open_connection

MONITOR_DATABASES = "cn=Databases,cn=Monitor"


def answers(uri: str, *, timeout: float = 1.0) -> bool:
    """Whether the provider at ``uri`` answers an anonymous search of its root DSE."""
    try:
        conn = open_connection(uri, Credentials(), timeout=timeout)
    except ProviderUnreachable:
        return False
    try:
        return bool(conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["namingContexts"]))
    except LDAPException:
        return False
    finally:
        conn.unbind()


def sync_phases(uri: str, creds: Credentials, *, timeout: float = 2.0) -> dict[int, str]:
    """The sync phase (``olmSRSyncPhase``: ``Persist`` when connected and current) of every
    replication agreement of the provider, by rid, from cn=Monitor."""
    conn = open_connection(uri, creds, timeout=timeout)
    try:
        ok = conn.search(
            MONITOR_DATABASES,
            "(objectClass=olmSyncReplInstance)",
            ldap3.SUBTREE,
            attributes=["olmSRSyncPhase"],
        )
        if not ok and (conn.result or {}).get("result") not in (0, 32):
            raise StoreError(f"{uri}: cannot read {MONITOR_DATABASES}: {conn.result}")
        out: dict[int, str] = {}
        for e in conn.response or []:
            if e.get("type") != "searchResEntry":
                continue
            rid = int(str(e["dn"]).split(",", 1)[0].rsplit(" ", 1)[1])
            phases = e["raw_attributes"].get("olmSRSyncPhase", [])
            out[rid] = bytes(phases[0]).decode("utf-8", "replace") if phases else ""
        return out
    except LDAPException as e:
        raise ProviderUnreachable(f"{uri}: {type(e).__name__}: {e}") from None
    finally:
        conn.unbind()


def add_entry(uri: str, creds: Credentials, dn: str, attrs: Mapping[str, Sequence[str]]) -> None:
    """Add the entry ``dn``; StoreError saying why the provider refused it."""
    conn = open_connection(uri, creds)
    try:
        classes = list(attrs["objectClass"])
        rest = {k: list(v) for k, v in attrs.items() if k != "objectClass"}
        if not conn.add(dn, classes, rest):
            raise StoreError(f"cannot add {dn}: {_reason(conn)}")
    except LDAPException as e:
        raise ProviderUnreachable(f"{uri}: {type(e).__name__}: {e}") from None
    finally:
        conn.unbind()


def add_values(uri: str, creds: Credentials, dn: str, attr: str, values: Sequence[str]) -> None:
    """Add ``values`` to the attribute ``attr`` of ``dn`` (a member to a group, say)."""
    conn = open_connection(uri, creds)
    try:
        if not conn.modify(dn, {attr: [(ldap3.MODIFY_ADD, list(values))]}):
            raise StoreError(f"cannot add {attr} {', '.join(values)} to {dn}: {_reason(conn)}")
    except LDAPException as e:
        raise ProviderUnreachable(f"{uri}: {type(e).__name__}: {e}") from None
    finally:
        conn.unbind()


def _reason(conn: ldap3.Connection) -> str:
    result = conn.result or {}
    return f"{result.get('description')} {result.get('message', '')}".rstrip()

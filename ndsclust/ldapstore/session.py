"""One connection to the write provider, with failover: the low-level operations of the
store (search, add, modify, delete, compare-and-swap) and how they survive a provider
change (docs/design.md section 2, "One write provider").

Every operation runs on the write provider, the first reachable provider of the ordered
list (``connection.Providers``). A compare-and-swap is one modify request that deletes the
expected value and adds the new one: atomic on one provider, it fails with result 16
(noSuchAttribute) when someone changed the value first, and that becomes ``SwapConflict``
(docs/style.md section 5: re-read and decide again, never retry the same write).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import ldap3
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPResponseTimeoutError
from ldap3.protocol.rfc4527 import post_read_control

from ndsclust.errors import (
    EntryExists,
    NoSuchEntry,
    ProviderUnreachable,
    StoreError,
    SwapConflict,
    Withdrawn,
)
from ndsclust.ldapstore.connection import Providers, open_connection
from ndsclust.ldapstore.replication import behind, read_context_csns
from ndsclust.logfmt import line as logline

log = logging.getLogger("ndsclust.ldapstore")

T = TypeVar("T")

APP_ATTRS = ["*", "entryUUID", "entryCSN", "modifyTimestamp", "modifiersName"]

# LDAP result codes we act on.
NO_SUCH_OBJECT = 32
NO_SUCH_ATTRIBUTE = 16
ATTRIBUTE_OR_VALUE_EXISTS = 20
CONSTRAINT_VIOLATION = 19
ALREADY_EXISTS = 68
BUSY_CODES = {51, 52, 80}
POST_READ = "1.3.6.1.1.13.2"  # busy, unavailable, other: try the next provider

# How long the store keeps trying the provider list for one operation.
DEFAULT_OP_DEADLINE = 10.0
# How often a store that failed over checks whether an earlier provider is back.
RETURN_CHECK_INTERVAL = 5.0
# How long the return check waits for an earlier provider to answer.
RETURN_PROBE_TIMEOUT = 0.5


class _Transient(Exception):
    """A provider went away mid-operation: fail over and retry."""


class Session:
    """Operations on the write provider, failing over along the provider list. Thread-safe."""

    def __init__(
        self,
        providers: Providers,
        suffix: str,
        *,
        op_deadline: float = DEFAULT_OP_DEADLINE,
        name: str = "write",
    ) -> None:
        self.providers = providers
        self.name = name  # which of a process's sessions, in its log lines
        self.suffix = suffix
        self.op_deadline = op_deadline
        self._lock = threading.RLock()
        self._conn: ldap3.Connection | None = None
        self._index = -1
        self._last_return_check = 0.0

    # -- connection ---------------------------------------------------------------------

    @property
    def provider(self) -> str | None:
        """URI of the provider in use (the write provider), None before the first operation."""
        return self.providers.uris[self._index] if self._conn is not None else None

    def _connection(self) -> ldap3.Connection:
        now = time.monotonic()
        if self._conn is not None and self.providers.dead(self._index):
            # The channels find this provider's server dead: a connection to it would only
            # time out (docs/platform.md fact 23: a cut-off provider costs seconds), so move on now.
            log.debug(
                logline(
                    "provider_dropped",
                    provider=self.providers.uris[self._index],
                    reason="server_dead",
                )
            )
            self._drop()
        if (
            self._conn is not None
            and self._index > 0
            and now - self._last_return_check > RETURN_CHECK_INTERVAL
        ):
            self._last_return_check = now
            self._try_return()
        if self._conn is None or self._conn.closed:
            self._drop()
            index, conn = self.providers.connect_retrying(
                prefer=0, deadline=now + self.op_deadline, patient=True
            )
            if self._index not in (-1, index):
                # Leaving a provider whose server the channels find dead: the sentinel has
                # said so already (event=write_provider); one line per event.
                log.log(
                    logging.DEBUG if self.providers.dead(self._index) else logging.WARNING,
                    logline(
                        "provider_failover",
                        provider=self.providers.uris[index],
                        was=self.providers.uris[self._index],
                    ),
                )
            self._conn, self._index = conn, index
            self._last_return_check = now
        return self._conn

    def _try_return(self) -> None:
        """The write provider is the FIRST reachable one: go back to an earlier provider once
        it answers AND holds everything the one in use holds (its contextCSNs are at least
        ours), so a provider that was cut off never serves a compare-and-swap on an old
        value. A short probe: a provider that does not answer quickly is tried again later."""
        assert self._conn is not None
        # Not to a provider whose server the channels find dead: its probe would only time out
        # (RETURN_PROBE_TIMEOUT), in the middle of whatever write is waiting, a takeover's claim
        # first of all.
        earlier = [
            i for i in self.providers.order(0) if i < self._index and not self.providers.dead(i)
        ]
        if not earlier:
            return
        try:
            conn = open_connection(
                self.providers.uris[earlier[0]], self.providers.creds, timeout=RETURN_PROBE_TIMEOUT
            )
        except ProviderUnreachable:
            return
        try:
            theirs = read_context_csns(conn, self.suffix)
            ours = read_context_csns(self._conn, self.suffix)
        except (LDAPException, StoreError):
            conn.unbind()
            return
        if ours is None or theirs is None or behind(theirs, ours):
            conn.unbind()
            return
        log.info(
            logline(
                "write_provider",
                provider=self.providers.uris[earlier[0]],
                was=self.providers.uris[self._index],
            )
        )
        self._drop()
        self._conn, self._index = conn, earlier[0]

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.unbind()
            except LDAPException:
                pass
            self._conn = None

    def _run(self, what: str, fn: Callable[[ldap3.Connection], T]) -> T:
        """Run ``fn`` on the write provider; on a lost provider, fail over and run it again.

        A write whose connection broke may or may not have been applied. Run again on the
        same provider, a swap that already succeeded reports SwapConflict (the caller
        re-reads) and an add EntryExists. Run on another provider, a swap or modify sets
        the same values there (replication then agrees), but an add of the same DN makes
        a second entry of that name: ``record_event`` therefore names each attempt anew,
        and an operator's add that reports a lost provider should be checked
        (``ndsclust doctor`` compares the providers' entries).
        """
        deadline = time.monotonic() + self.op_deadline
        with self._lock:
            while True:
                try:
                    return fn(self._connection())
                except (LDAPCommunicationError, LDAPResponseTimeoutError, _Transient) as e:
                    log.warning(
                        logline(
                            "provider_lost",
                            session=self.name,
                            provider=self.provider,
                            op=what,
                            error=type(e).__name__,
                        )
                    )
                    self._drop()
                    if time.monotonic() > deadline:
                        raise ProviderUnreachable(
                            f"{what}: no provider answered within {self.op_deadline:.0f}s"
                        ) from None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def whoami(self) -> str:
        """The identity the write provider knows this session as (RFC 4532), without the
        ``dn:`` prefix: a DN, or ``anonymous``."""

        def op(conn: ldap3.Connection) -> str:
            found = conn.extend.standard.who_am_i()
            text = found.decode() if isinstance(found, bytes) else str(found or "")
            return text[3:] if text.startswith("dn:") else (text or "anonymous")

        return self._run("whoami", op)

    # -- low-level operations -------------------------------------------------------------

    @staticmethod
    def _check(conn: ldap3.Connection, ok: bool, what: str) -> dict[str, Any]:
        result: dict[str, Any] = conn.result or {}
        if not ok and result.get("result") in BUSY_CODES:
            raise _Transient(what)
        return result

    def search(
        self,
        base: str,
        filt: str,
        *,
        scope: str = ldap3.SUBTREE,
        attributes: Sequence[str] = APP_ATTRS,
    ) -> list[tuple[str, dict[str, list[Any]]]]:
        def op(conn: ldap3.Connection) -> list[tuple[str, dict[str, list[Any]]]]:
            ok = conn.search(
                base,
                filt,
                search_scope=scope,
                attributes=list(attributes),
                dereference_aliases=ldap3.DEREF_NEVER,
            )
            result = self._check(conn, ok, "search")
            if not ok and result.get("result") == NO_SUCH_OBJECT:
                return []
            if not ok and result.get("result") not in (0, None):
                raise StoreError(
                    f"search {base} {filt}: {result.get('description')} "
                    f"{result.get('message', '')}".rstrip()
                )
            return [
                (r["dn"], dict(r["raw_attributes"]))
                for r in conn.response or []
                if r.get("type") == "searchResEntry"
            ]

        return self._run("search", op)

    def add(self, dn: str, attrs: Mapping[str, Sequence[str]]) -> None:
        self._run("add", lambda conn: self._add_on(conn, dn, attrs))

    def _add_on(self, conn: ldap3.Connection, dn: str, attrs: Mapping[str, Sequence[str]]) -> None:
        object_class = list(attrs["objectClass"])
        rest = {k: list(v) for k, v in attrs.items() if k != "objectClass"}
        ok = conn.add(dn, object_class, rest)
        result = self._check(conn, ok, "add")
        if ok:
            return
        if result.get("result") == ALREADY_EXISTS:
            raise EntryExists(f"{dn} already exists")
        raise StoreError(
            f"add {dn}: {result.get('description')} {result.get('message', '')}".rstrip()
        )

    def modify(
        self,
        dn: str,
        changes: Mapping[str, list[tuple[str, list[str]]]],
        *,
        swap: tuple[str, str | None, str | None] | None = None,
        post_read: Sequence[str] | None = None,
        unless: Callable[[], str | None] | None = None,
    ) -> dict[str, list[Any]] | None:
        """One modify request. ``swap`` = (attribute, expected, new) names the compare-and-swap
        part so a conflict is reported as SwapConflict rather than a generic error.
        ``post_read`` asks for those attributes of the entry as the modify left it (RFC 4527
        post-read control, answered in the same response): saves a read after the write.
        ``unless`` is asked once a provider is connected, just before each send: a reason
        it returns withdraws the write (``Withdrawn``), however long the connect took."""
        controls = [post_read_control(list(post_read))] if post_read else None

        def op(conn: ldap3.Connection) -> dict[str, list[Any]] | None:
            if unless is not None and (why := unless()):
                raise Withdrawn(dn, why)
            ok = conn.modify(dn, {k: list(v) for k, v in changes.items()}, controls=controls)
            result = self._check(conn, ok, "modify")
            if ok:
                if not post_read:
                    return None
                read = (result.get("controls") or {}).get(POST_READ, {}).get("value", {})
                return dict(read.get("result") or {}) or None
            code = result.get("result")
            if code == NO_SUCH_OBJECT:
                raise NoSuchEntry(f"{dn} does not exist")
            if swap and code in (
                NO_SUCH_ATTRIBUTE,
                ATTRIBUTE_OR_VALUE_EXISTS,
                CONSTRAINT_VIOLATION,
            ):
                raise SwapConflict(dn, *swap)
            raise StoreError(
                f"modify {dn}: {result.get('description')} {result.get('message', '')}".rstrip()
            )

        return self._run("modify", op)

    def delete(self, dn: str) -> None:
        def op(conn: ldap3.Connection) -> None:
            ok = conn.delete(dn)
            result = self._check(conn, ok, "delete")
            if ok:
                return
            if result.get("result") == NO_SUCH_OBJECT:
                raise NoSuchEntry(f"{dn} does not exist")
            raise StoreError(
                f"delete {dn}: {result.get('description')} {result.get('message', '')}".rstrip()
            )

        self._run("delete", op)

    def swap(
        self,
        dn: str,
        attribute: str,
        expected: str | None,
        new: str | None,
        *,
        also: Mapping[str, list[str] | None] | None = None,
        post_read: Sequence[str] | None = None,
        unless: Callable[[], str | None] | None = None,
    ) -> dict[str, list[Any]] | None:
        """Compare-and-swap one single-valued attribute in one modify request.

        expected None = the attribute must be absent; new None = remove it. ``also`` replaces
        further attributes in the same atomic request (None deletes them)."""
        changes: dict[str, list[tuple[str, list[str]]]] = {}
        ops: list[tuple[str, list[str]]] = []
        if expected is not None:
            ops.append((ldap3.MODIFY_DELETE, [expected]))
        if new is not None:
            ops.append((ldap3.MODIFY_ADD, [new]))
        if expected is None and new is None:
            raise ValueError("swap needs an expected or a new value")
        changes[attribute] = ops
        for k, v in (also or {}).items():
            changes[k] = [(ldap3.MODIFY_REPLACE, v or [])]
        return self.modify(
            dn, changes, swap=(attribute, expected, new), post_read=post_read, unless=unless
        )

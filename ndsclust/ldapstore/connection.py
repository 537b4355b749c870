"""Connections to the providers, with failover across the ordered provider list.

Every write ndsclust makes goes to the **write provider**: the first reachable provider of
the cluster's ordered list, the same list on every server (docs/design.md section 2), so that
compare-and-swaps are serialized by one slapd. ``Providers.connect()`` therefore always
tries the list from the top; reads and watches may start elsewhere (``prefer``).

Authentication: simple bind (DN + password), SASL EXTERNAL (over ldapi://, or with a
client certificate over TLS), and TLS by ldaps:// or StartTLS with CA verification.
Only this package ever sees an ldap3 object.
"""

from __future__ import annotations

import ast
import logging
import re
import ssl
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.config import set_config_parameter

from ndsclust.errors import BindRefused, ConfigError, ProviderUnreachable, StoreError
from ndsclust.ldapstore.entries import Entry
from ndsclust.logfmt import line as logline

log = logging.getLogger("ndsclust.ldapstore")

# ldap3 waits up to 20 s for an answer on asynchronous (stream) connections, the bind of a
# watch included: a frozen provider would hold a reconnecting watch that long.
set_config_parameter("RESPONSE_WAITING_TIMEOUT", 5)


@dataclass(frozen=True, slots=True)
class Credentials:
    """How to authenticate to every provider of the list."""

    bind_dn: str | None = None
    password: str | None = None
    sasl_external: bool = False
    ca_file: str | None = None  # CA that signed the providers' certificates
    cert_file: str | None = None  # client certificate (SASL EXTERNAL over TLS)
    key_file: str | None = None
    start_tls: bool = False  # upgrade ldap:// with StartTLS
    allow_plain: bool = False  # permit ldap:// without TLS (ldapi:// needs none)

    def __repr__(self) -> str:  # never print the password
        return (
            f"Credentials(bind_dn={self.bind_dn!r}, sasl_external={self.sasl_external}, "
            f"ca_file={self.ca_file!r}, start_tls={self.start_tls}, "
            f"allow_plain={self.allow_plain})"
        )


def check_uri(uri: str) -> str:
    """Return the URI if its scheme is one we speak, else raise ValueError saying which are."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme not in ("ldap", "ldaps", "ldapi"):
        raise ValueError(
            f"{uri!r} is not an LDAP URI; use ldap://host:port, ldaps://host:port "
            "or ldapi://<percent-encoded socket path>"
        )
    return uri


# The socket ``ldapi:///`` means, as libldap and Debian's slapd have it: without a path in
# the URI ldap3 would connect to the socket "//".
DEFAULT_LDAPI_SOCKET = "/var/run/slapd/ldapi"


def _server_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme.lower() == "ldapi" and not parts.netloc:
        return "ldapi://" + quote(DEFAULT_LDAPI_SOCKET, safe="")
    return uri


def _tls(creds: Credentials) -> ldap3.Tls:
    # Always verify the provider: without ca_file against the system's CAs. (Left to
    # itself, ldap3 would do TLS that checks no certificate at all.)
    return ldap3.Tls(
        validate=ssl.CERT_REQUIRED,
        ca_certs_file=creds.ca_file,
        local_certificate_file=creds.cert_file,
        local_private_key_file=creds.key_file,
        version=ssl.PROTOCOL_TLS_CLIENT,
    )


def open_connection(
    uri: str, creds: Credentials, *, stream: bool = False, timeout: float = 2.0
) -> ldap3.Connection:
    """Open and bind one connection to ``uri``; raise ProviderUnreachable with the reason.

    ``stream=True`` gives an ASYNC_STREAM connection, the only ldap3 strategy that hands
    over RFC 4533 intermediate messages (docs/platform.md fact 12). Schema is not read at
    connect time: ldap3 would cache it and refuse attributes added later (docs/platform.md fact 15).
    """
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "ldap" and not creds.start_tls and not creds.allow_plain:
        raise ConfigError(
            "ldap",
            [
                f"{uri}: plain LDAP without TLS is refused; use ldaps://, "
                "start_tls: true, ldapi://, or set allow_plain_ldap: true"
            ],
        )
    tls = _tls(creds)
    try:
        server = ldap3.Server(
            _server_uri(uri),
            use_ssl=(scheme == "ldaps"),
            tls=tls,
            get_info=ldap3.NONE,
            connect_timeout=timeout,
        )
        kwargs: dict[str, object] = {
            "client_strategy": ldap3.ASYNC_STREAM if stream else ldap3.SYNC,
            # ldap3 packs this into SO_RCVTIMEO with struct: it must be an int.
            # Bounded so a frozen or cut-off provider costs seconds, not minutes, before the
            # store fails over to the next one.
            "receive_timeout": None if stream else max(2, int(timeout * 2)),
            "raise_exceptions": False,
            "auto_bind": ldap3.AUTO_BIND_NONE,
            "check_names": False,
            "return_empty_attributes": False,
        }
        if creds.sasl_external:
            conn = ldap3.Connection(
                server,
                authentication=ldap3.SASL,
                sasl_mechanism=ldap3.EXTERNAL,
                sasl_credentials="",
                **kwargs,
            )
        elif creds.bind_dn:
            conn = ldap3.Connection(
                server,
                user=creds.bind_dn,
                password=creds.password or "",
                authentication=ldap3.SIMPLE,
                **kwargs,
            )
        else:
            conn = ldap3.Connection(server, authentication=ldap3.ANONYMOUS, **kwargs)
        try:
            conn.open()
            if creds.start_tls and scheme == "ldap" and not conn.start_tls():
                conn.unbind()
                raise ProviderUnreachable(f"{uri}: StartTLS refused: {conn.result}", answered=True)
            if not conn.bind():
                result = conn.result or {}
                conn.unbind()
                who = creds.bind_dn or ("SASL EXTERNAL" if creds.sasl_external else "anonymous")
                text = f"{uri}: bind as {who} refused: {result.get('description')} " + str(
                    result.get("message") or ""
                )
                if result.get("result") in BIND_REFUSALS:
                    raise BindRefused(text.rstrip())
                raise ProviderUnreachable(text.rstrip(), answered=bool(result))
        except BaseException:
            close_socket(conn)
            raise
        return conn
    except LDAPException as e:
        text = describe(e)
        raise ProviderUnreachable(f"{uri}: {text}", answered=_refusal(str(e))) from None
    except ssl.SSLError as e:
        raise ProviderUnreachable(f"{uri}: {describe(e)}", answered=True) from None
    except OSError as e:
        text = describe(e)
        raise ProviderUnreachable(f"{uri}: {text}", answered=_refusal(str(e))) from None


# Bind results that are the credentials' fault: inappropriateAuthentication,
# invalidCredentials, insufficientAccessRights (RFC 4511 section 4.1.9).
BIND_REFUSALS = frozenset({48, 49, 50})


def describe(e: BaseException) -> str:
    """An exception as words for an operator. ldap3 nests the reasons of each address it
    tried as tuples of exceptions and addresses, and some of its messages are the repr of a
    tuple: none of that reaches the message, nor the certificate dump of a name mismatch."""
    parts: list[str] = []

    def walk(x: object) -> None:
        if isinstance(x, BaseException):
            if isinstance(x, OSError) and isinstance(x.strerror, str):
                parts.append(_tls_words(x.strerror))  # errno errors and ssl.SSLError
                return
            for a in x.args:
                walk(a)
        elif isinstance(x, tuple) and len(x) in (2, 4) and isinstance(x[1], int):
            parts.append(f"{x[0]} port {x[1]}")  # an address ldap3 tried
        elif isinstance(x, (list, tuple)):
            for a in x:
                walk(a)
        elif isinstance(x, str) and x.strip():
            text = x.strip()
            if text[:1] in "([" and text[-1:] in ")]":
                try:
                    walk(ast.literal_eval(text))
                    return
                except (ValueError, SyntaxError):
                    pass
            parts.append(_tls_words(text))

    walk(e)
    seen: list[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    return ": ".join(seen) or type(e).__name__


_SSL_NOISE = re.compile(r"\[SSL: [A-Z_]+\] | \(_ssl\.c:\d+\)")
_NAME_MISMATCH = re.compile(r"certificate (\{.*\}) doesn't match any name in (\[.*\])")


def _tls_words(text: str) -> str:
    text = _SSL_NOISE.sub("", text)
    m = _NAME_MISMATCH.search(text)
    if m:
        try:
            cert = ast.literal_eval(m.group(1))
            wanted = ", ".join(ast.literal_eval(m.group(2)))
            names = ", ".join(f"{k}:{v}" for k, v in cert.get("subjectAltName", ()))
        except (ValueError, SyntaxError, AttributeError, TypeError):
            return text
        mismatch = f"the provider's certificate names {names or 'nothing'}, not {wanted}"
        text = text[: m.start()] + mismatch + text[m.end() :]
    return text


@contextmanager
def connected(uri: str, creds: Credentials, *, timeout: float = 2.0) -> Iterator[ldap3.Connection]:
    """One bound connection to ``uri`` for a few reads, closed afterwards. An LDAP error on
    it becomes ``StoreError`` naming the provider (ProviderUnreachable when it cannot be
    opened), so no ldap3 exception leaves the package."""
    conn = open_connection(uri, creds, timeout=timeout)
    try:
        yield conn
    except LDAPException as e:
        raise StoreError(f"{uri}: {type(e).__name__}: {e}") from None
    finally:
        try:
            conn.unbind()
        except LDAPException:
            pass  # the connection is gone either way


def read_entry(
    uri: str,
    creds: Credentials,
    dn: str,
    filt: str = "(objectClass=*)",
    attrs: Sequence[str] = ("*",),
    *,
    timeout: float = 2.0,
) -> Entry | None:
    """The entry ``dn`` on the one provider ``uri``, as this bind may read it; None when it
    may not, does not match ``filt``, or is absent."""
    with connected(uri, creds, timeout=timeout) as conn:
        conn.search(
            dn,
            filt,
            search_scope=ldap3.BASE,
            attributes=list(attrs),
            dereference_aliases=ldap3.DEREF_NEVER,
        )
        for r in conn.response or []:
            if r.get("type") == "searchResEntry":
                return Entry(r["dn"], r["raw_attributes"])
    return None


def close_socket(conn: ldap3.Connection) -> None:
    """Close the socket of a connection that failed to open, start TLS or bind: ldap3 2.9.1
    leaves it open (``unbind`` does nothing on a connection that never opened) until the
    garbage collector finds it."""
    if conn.socket is not None:
        conn.socket.close()


def _refusal(text: str) -> bool:
    """Whether a connection error is the provider's host saying no (RST, certificate) rather
    than silence: ldap3 hands socket errors over as text."""
    return any(
        s in text
        for s in ("Connection refused", "Connection reset", "certificate", "SSL", "No such file")
    )


class _Live:
    """Which providers' servers the channels find dead and which they hear, shared by the
    ``Providers`` lists of one sentinel (``Providers.sharing``)."""

    def __init__(self) -> None:
        self.dead: frozenset[int] = frozenset()
        self.heard: frozenset[int] = frozenset()
        # Wakes a connect_retrying() waiting out its backoff when a provider's server is
        # found dead: the next pass tries it last at once, instead of after the backoff.
        self.changed = threading.Condition()


class Providers:
    """The cluster's ordered provider list, with failover and bounded backoff.

    ``connect()`` makes one pass over the list; ``connect_retrying()`` repeats passes with
    exponential backoff until a deadline or ``close()``: no thread is ever left behind,
    the waiting happens in the caller's thread on an Event that ``close()`` sets.

    What the sentinel's liveness channels say about the servers that run the providers
    (``servers``: URI -> server name, from ``directory.provider_servers``) shapes a pass,
    through ``set_liveness``:

    - a provider whose server is **dead** on every channel is tried last: a server cut off
      by dropped packets costs no socket timeout (docs/design.md section 2, "a provider that
      is cut off is not a provider that refuses");
    - a provider whose server is **heard** is not left because it is slow: a pass with
      ``patient=True`` (the write provider's) stops at such a provider when it stays silent
      instead of moving on, so writes stay serialized by one slapd; only a refusal (or the
      server's death) moves them on.
    """

    def __init__(
        self,
        uris: Sequence[str],
        creds: Credentials,
        *,
        timeout: float = 2.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        servers: Mapping[str, str] | None = None,
        final_refusal: bool = False,
    ) -> None:
        """``final_refusal``: a bind refused by every provider ends ``connect_retrying`` at
        once (the command line: wrong credentials do not get better by waiting)."""
        if not uris:
            raise ConfigError("providers", ["no provider URI given; list at least one"])
        self.uris = tuple(check_uri(u) for u in uris)
        self.creds = creds
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.servers = {i: (servers or {}).get(u) for i, u in enumerate(self.uris)}
        self._live = _Live()
        self._closed = threading.Event()
        self.final_refusal = final_refusal

    def sharing(self, *, timeout: float) -> Providers:
        """The same list with its own connect ``timeout`` and ``close``, following this
        one's ``set_liveness``: a second connection of the sentinel (its pulse writer's)
        then skips a dead server's provider as the write session does."""
        other = Providers(
            self.uris,
            self.creds,
            timeout=timeout,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            final_refusal=self.final_refusal,
        )
        other.servers = self.servers
        other._live = self._live
        return other

    @property
    def _dead(self) -> frozenset[int]:
        return self._live.dead

    @property
    def _heard(self) -> frozenset[int]:
        return self._live.heard

    @property
    def _changed(self) -> threading.Condition:
        return self._live.changed

    def set_liveness(self, dead: Collection[str], heard: Collection[str]) -> bool:
        """Which servers the channels find dead and which they hear; True when that changed
        which providers count as dead."""
        live = self._live
        was = live.dead
        live.dead = frozenset(i for i, s in self.servers.items() if s is not None and s in dead)
        live.heard = frozenset(i for i, s in self.servers.items() if s is not None and s in heard)
        if live.dead != was:
            with live.changed:
                live.changed.notify_all()
        return live.dead != was

    def dead(self, index: int) -> bool:
        """The provider's server is dead on every channel (known only with ``servers``)."""
        return index in self._dead

    def order(self, prefer: int = 0) -> list[int]:
        """The indices one pass tries: ``prefer``, then the list from the top; providers of
        dead servers last."""
        first = [prefer] + [i for i in range(len(self.uris)) if i != prefer]
        return [i for i in first if i not in self._dead] + [i for i in first if i in self._dead]

    def connect(
        self, *, stream: bool = False, prefer: int = 0, patient: bool = False
    ) -> tuple[int, ldap3.Connection]:
        """One pass (see ``order``). Returns (index, connection)."""
        reasons = []
        refused = 0
        for i in self.order(prefer):
            try:
                return i, open_connection(
                    self.uris[i], self.creds, stream=stream, timeout=self.timeout
                )
            except ProviderUnreachable as e:
                reasons.append(str(e))
                refused += isinstance(e, BindRefused)
                if patient and i in self._heard and not e.answered:
                    # Its server is alive: silence here is latency (or a cut we cannot tell
                    # from it). Moving on would give up the serialization; try it again.
                    raise ProviderUnreachable(
                        f"write provider {self.uris[i]} (server "
                        f"{self.servers[i]}, alive) did not answer: " + str(e)
                    ) from None
        if refused:
            # The directory answered: the credentials are wrong, not the network.
            raise BindRefused(
                "the bind was refused (check the bind DN and password): " + "; ".join(reasons),
                everywhere=refused == len(reasons),
            )
        raise ProviderUnreachable("no provider reachable: " + "; ".join(reasons))

    def connect_retrying(
        self,
        *,
        stream: bool = False,
        prefer: int = 0,
        deadline: float | None = None,
        patient: bool = False,
    ) -> tuple[int, ldap3.Connection]:
        """Passes over the list with bounded exponential backoff until ``deadline``
        (time.monotonic) or ``close()``; then ProviderUnreachable."""
        delay = self.backoff_initial
        while True:
            try:
                return self.connect(stream=stream, prefer=prefer, patient=patient)
            except ProviderUnreachable as e:
                if self.final_refusal and isinstance(e, BindRefused) and e.everywhere:
                    raise
                now = time.monotonic()
                if self._closed.is_set() or (deadline is not None and now + delay > deadline):
                    raise
                log.debug(logline("providers_unreachable", retry_in=f"{delay:.2f}"))
            dead = self._dead
            with self._changed:
                self._changed.wait_for(
                    lambda: self._closed.is_set() or self._dead != dead, timeout=delay
                )
            if self._closed.is_set():
                raise ProviderUnreachable("provider list closed while reconnecting")
            delay = min(delay * 2, self.backoff_max)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop every connect_retrying() under way."""
        self._closed.set()
        with self._changed:
            self._changed.notify_all()

"""Typed, frozen snapshots of what the directory holds (docs/design.md section 2).

Only ``ndsclust.ldapstore`` builds these from LDAP entries; everything else reads them.
Field names mirror the attributes: ``ndsclustHostServer`` is ``App.host`` and so on.
The value rules (what a server name, a state or a request may look like) live here too,
so the store, the CLI and the sentinel agree on them.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import NewType

Tag = NewType("Tag", str)
ServerName = NewType("ServerName", str)

# One canonical form for server names: host and state use exact matching in the schema,
# so "Beta" and "beta" would be two different servers to a compare-and-swap.
_SERVER_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_RESOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
MAX_COMMAND = 4096
MAX_MARKER = 65536


class AppType(Enum):
    CAPABLE = "capable"
    AWARE = "aware"


class AppState(Enum):
    LOADING = "loading"
    RUNNING = "running"
    UNLOADING = "unloading"
    STOPPED = "stopped"
    FAILED = "failed"
    AWAITING_FAILBACK = "awaiting-failback"
    REPLICATION_PENDING = "replication-pending"
    ERROR = "error"


class ServerState(Enum):
    UP = "up"
    DOWN = "down"
    MAINTENANCE = "maintenance"


class RequestKind(Enum):
    LOAD = "load"
    UNLOAD = "unload"
    FAILBACK = "failback"
    MIGRATE = "migrate"
    CLEANUP = "cleanup"  # forget the failure counts (like pcs resource cleanup)


def _what_is_wrong(value: str, allowed: str, limit: int, first: str) -> str:
    """Which rule a name breaks: its length against ``limit``, or the first character
    outside ``allowed`` with its position (counted from 1)."""
    if not value:
        return "it is empty"
    if len(value) > limit:
        return f"it is {len(value)} characters long, the limit is {limit}"
    for i, c in enumerate(value, 1):
        if c not in allowed:
            return f"character {c!r} (U+{ord(c):04X}) at position {i} is not allowed"
    if value[0] not in first:
        return f"the first character {value[0]!r} is not allowed there"
    return f"the last character {value[-1]!r} is not allowed there"


_DIGITS = "0123456789"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_LETTERS = _LOWER + _LOWER.upper()


def check_server_name(value: str) -> ServerName:
    """Return ``value`` as a ServerName or raise ValueError saying what is allowed."""
    if not _SERVER_RE.match(value):
        hint = ""
        if _SERVER_RE.match(value.lower()):
            hint = f"; write it in lower case: {value.lower()!r}"
        why = _what_is_wrong(value, _LOWER + _DIGITS + "-", 63, _LOWER + _DIGITS)
        raise ValueError(
            f"{value!r} is not a server name ({why}): lower-case letters, digits and '-', "
            f"1-63 characters, not starting or ending with '-'{hint}"
        )
    return ServerName(value)


def check_tag(value: str) -> Tag:
    if not _TAG_RE.match(value):
        why = _what_is_wrong(value, _LETTERS + _DIGITS + "_.-", 63, _LETTERS + _DIGITS)
        raise ValueError(
            f"{value!r} is not a tag ({why}): letters, digits, '_', '.', '-', 1-63 "
            "characters, starting with a letter or digit"
        )
    return Tag(value)


def check_resource(value: str) -> str:
    if not _RESOURCE_RE.match(value):
        why = _what_is_wrong(value, _LETTERS + _DIGITS + "_.:/-", 128, _LETTERS + _DIGITS)
        raise ValueError(
            f"{value!r} is not a resource name ({why}): letters, digits and '_.:/-', "
            "1-128 characters, starting with a letter or digit"
        )
    return value


def parse_command(value: str) -> tuple[str, ...]:
    """Split a command line into an argument list (run without a shell)."""
    if not value.strip():
        raise ValueError(
            "is empty: give the program and its arguments, e.g. '/usr/bin/myapp --serve'"
        )
    if len(value) > MAX_COMMAND:
        raise ValueError(f"is {len(value)} characters long; at most {MAX_COMMAND} are allowed")
    bad = next(((i, c) for i, c in enumerate(value, 1) if ord(c) < 32 and c != "\t"), None)
    if bad is not None:
        raise ValueError(
            f"contains control characters: U+{ord(bad[1]):04X} at position {bad[0]}; "
            "write the command on one line"
        )
    try:
        argv = tuple(shlex.split(value))
    except ValueError as e:
        raise ValueError(
            f"{value!r} cannot be split into arguments ({e}); check the quotes"
        ) from None
    if not argv[0].startswith("/"):
        raise ValueError(
            f"program {argv[0]!r} is not an absolute path; write e.g. '/usr/bin/{argv[0]}'"
        )
    return argv


@dataclass(frozen=True, slots=True)
class StateValue:
    """The value of ``ndsclustState``: a state and, for failed/error, the reason: ``failed(reason)``."""

    state: AppState
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.state.value}({self.reason})" if self.reason else self.state.value

    @classmethod
    def parse(cls, value: str) -> StateValue:
        m = re.fullmatch(r"([a-z-]+)(?:\((.*)\))?", value, re.S)
        allowed = ", ".join(s.value for s in AppState)
        if not m:
            raise ValueError(
                f"{value!r} is not a state; allowed: {allowed}, optionally with '(reason)'"
            )
        try:
            state = AppState(m.group(1))
        except ValueError:
            raise ValueError(f"{m.group(1)!r} is not a state; allowed: {allowed}") from None
        return cls(state, m.group(2) or "")


@dataclass(frozen=True, slots=True)
class Request:
    """The value of ``ndsclustRequest``: load, unload, failback, cleanup or ``migrate:<server>``."""

    kind: RequestKind
    target: ServerName | None = None

    def __str__(self) -> str:
        return f"migrate:{self.target}" if self.kind is RequestKind.MIGRATE else self.kind.value

    @classmethod
    def parse(cls, value: str) -> Request:
        if value.startswith("migrate:"):
            return cls(RequestKind.MIGRATE, check_server_name(value[len("migrate:") :]))
        try:
            kind = RequestKind(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a request; allowed: load, unload, failback, cleanup, "
                "migrate:<server>"
            ) from None
        if kind is RequestKind.MIGRATE:
            raise ValueError("migrate needs a server: write 'migrate:<server>'")
        return cls(kind)


@dataclass(frozen=True, slots=True)
class App:
    """One ``ndsclustApplication`` entry (patent FIG. 2 object)."""

    tag: Tag
    type: AppType
    command: tuple[str, ...]
    primary: ServerName
    backups: tuple[ServerName, ...]
    host: ServerName | None = None  # None: an operator unloaded it (FIG. 6, step 606)
    unload_command: tuple[str, ...] | None = None
    health_command: tuple[str, ...] | None = None
    resources: frozenset[str] = frozenset()
    auto_recover: bool = True
    marker: str | None = None
    state: StateValue = StateValue(AppState.STOPPED)
    request: Request | None = None
    dn: str = ""
    uuid: str = ""  # entryUUID: how the watch names a deleted entry
    csn: str = ""  # entryCSN: which copy is more current (FIGS. 4E-4H)
    # While a request is pending: the bind identity that last wrote the entry (its
    # modifiersName), for the audit trail of whoever wrote the request, CLI or ldapmodify.
    requested_by: str | None = None
    # Service stacks (ndsclustStack, docs/design.md section 3 "Stacks").
    requires: tuple[Tag, ...] = ()  # must run on the same server, started first
    avoids: tuple[Tag, ...] = ()  # rather not on the same server
    addresses: tuple[str, ...] = ()  # service addresses, "ip/prefix" or "ip/prefix@iface"

    def servers(self) -> tuple[ServerName, ...]:
        """Primary then backups in the operator's order, without repeats."""
        seen: list[ServerName] = []
        for s in (self.primary, *self.backups):
            if s not in seen:
                seen.append(s)
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class Server:
    """One ``ndsclustServer`` entry."""

    name: ServerName
    addresses: tuple[str, ...] = ()  # heartbeat addresses, "ip:port"
    resources: frozenset[str] = frozenset()  # resources this server offers
    state: ServerState = ServerState.UP
    dn: str = ""
    uuid: str = ""
    csn: str = ""


class SentinelState(Enum):
    """What a server's sentinel says of itself on its pulse entry (``ndsclustSentinelState``)."""

    RUNNING = "running"
    STOPPING = "stopping"  # stopped with SIGTERM: handing its programs on
    STOPPED = "stopped"  # it ended cleanly


@dataclass(frozen=True, slots=True)
class LivenessReport:
    """What one sentinel publishes on its pulse entry (``ndsclustLivenessReport``): the
    channels it hears each peer on now (``heard``; a peer still in its start-up grace is
    left out), the channels it has configured, and its own state. ``ndsclust.liveness``
    turns the reports of every server into server states."""

    heard: tuple[tuple[ServerName, frozenset[str]], ...] = ()
    channels: frozenset[str] = frozenset()
    sentinel: SentinelState = SentinelState.RUNNING

    def hears(self, peer: ServerName) -> frozenset[str] | None:
        """The channels it hears ``peer`` on; None when it says nothing of ``peer``."""
        for name, chans in self.heard:
            if name == peer:
                return chans
        return None


@dataclass(frozen=True, slots=True)
class Pulse:
    """One pulse entry in the pulse database: the directory liveness channel (claim 44)."""

    server: ServerName
    counter: int
    stamp: str = ""  # the writer's wall time, only for display and clock-skew checks
    dn: str = ""
    uuid: str = ""
    report: LivenessReport | None = None  # None: its sentinel publishes no report
    # ``ndsclustNetwork``: what its sentinel can hold service addresses on (``net:`` and
    # ``iface:`` values, ``check_network``); None: it publishes nothing (not yet, or an
    # older sentinel).
    networks: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the audit trail under ``ou=events``. An entry may name several
    applications that one server recorded with the same kind and text at once (``tags``,
    with ``tag`` None; ``ldapstore.entries.event_text``): ``each`` gives one event per
    application."""

    id: str
    time: str  # GeneralizedTime, UTC
    kind: str  # failover, failback, swap_conflict, ...
    server: ServerName | None = None
    tag: Tag | None = None
    text: str = ""
    dn: str = ""
    tags: tuple[Tag, ...] = ()

    def each(self) -> tuple[Event, ...]:
        """This event, or one per application it names (id ``<id>/<tag>``, same DN)."""
        if not self.tags:
            return (self,)
        return tuple(replace(self, id=f"{self.id}/{t}", tag=t, tags=()) for t in self.tags)


_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


def parse_service_address(
    value: str,
) -> tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, str | None]:
    """``ip/prefix[@interface]`` as (address with its network, interface or None)."""
    text, _, iface = value.strip().partition("@")
    if "/" not in text:
        raise ValueError(
            f"{value!r} has no prefix length: write it as ip/prefix, e.g. '198.18.5.10/24'"
        )
    try:
        addr = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an address with a prefix: write ip/prefix[@interface], "
            "e.g. '198.18.5.10/24' or 'fd00::10/64@eth0'"
        ) from None
    if iface and not _IFACE_RE.match(iface):
        raise ValueError(f"{value!r}: {iface!r} is not an interface name (1-15 characters)")
    if addr.ip.is_multicast or addr.ip.is_unspecified or addr.ip.is_loopback:
        raise ValueError(f"{value!r} is not a unicast address a server can answer for")
    return addr, iface or None


def check_service_address(value: str) -> str:
    """The canonical form of a service address (``parse_service_address``)."""
    addr, iface = parse_service_address(value)
    return f"{addr.with_prefixlen}@{iface}" if iface else addr.with_prefixlen


def address_needs(addresses: tuple[str, ...]) -> frozenset[str]:
    """What a server must offer to hold these service addresses, as resources: an interface
    on each address's network (``net:<network>``), or the named one (``iface:<name>``)."""
    out: set[str] = set()
    for value in addresses:
        addr, iface = parse_service_address(value)
        out.add(f"iface:{iface}" if iface else f"net:{addr.network.with_prefixlen}")
    return frozenset(out)


NO_NETWORKS = "-"  # the ndsclustNetwork value of a server with no interface to offer


def check_network(value: str) -> str:
    """One published value of ``ndsclustNetwork``: ``net:<network>/<prefix>`` (canonical,
    as ``address_needs`` writes it) or ``iface:<name>``."""
    kind, _, rest = value.partition(":")
    if kind == "iface" and _IFACE_RE.match(rest):
        return value
    if kind == "net":
        try:
            net = ipaddress.ip_network(rest)
        except ValueError:
            pass
        else:
            if "/" in rest and net.with_prefixlen == rest:
                return value
    raise ValueError(
        f"{value!r} is not a network: write net:<network>/<prefix> (e.g. net:198.18.5.0/24) "
        f"or iface:<name>, or {NO_NETWORKS} alone for none"
    )


def parse_networks(values: Sequence[str]) -> frozenset[str] | None:
    """``ndsclustNetwork`` values as published networks; None when there are none at all
    (nothing published), empty for ``-``."""
    if not values:
        return None
    if list(values) == [NO_NETWORKS]:
        return frozenset()
    return frozenset(check_network(v) for v in values)


def networks_values(networks: frozenset[str]) -> list[str]:
    """The ``ndsclustNetwork`` values that publish ``networks`` (``parse_networks``)."""
    return sorted(networks) or [NO_NETWORKS]

"""LDAP entries <-> typed snapshots, with validation of what an operator wrote.

Every parse either returns a frozen ``App``/``Server``/``Pulse``/``Event`` or raises
``EntryInvalid`` naming the DN, the attribute, the value and what is allowed. One bad entry
never stops anything else: callers collect the error and carry on with the rest.

Attribute maps come from ldap3 or the watch as ``{name: [str, ...]}``; names are matched
case-insensitively, as LDAP does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from shlex import join
from typing import Any

from ndsclust.errors import EntryInvalid
from ndsclust.model import (
    MAX_MARKER,
    App,
    AppType,
    Event,
    Pulse,
    Request,
    Server,
    ServerName,
    ServerState,
    StateValue,
    check_resource,
    check_server_name,
    check_tag,
    parse_command,
)

Attrs = Mapping[str, Sequence[Any]]

_ORDERED = re.compile(r"^\{(\d{1,9})\}(.*)$", re.S)
MAX_VALUE = 4096


class _Entry:
    """Case-insensitive, validated access to one entry's attributes."""

    def __init__(self, dn: str, attrs: Attrs) -> None:
        self.dn = dn
        self._a: dict[str, list[str]] = {}
        for k, vs in attrs.items():
            vals = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in (vs if isinstance(vs, (list, tuple)) else [vs])
            ]
            self._a.setdefault(k.lower(), []).extend(vals)

    def bad(self, attr: str, problem: str) -> EntryInvalid:
        return EntryInvalid(self.dn, attr, problem)

    def all(self, attr: str) -> list[str]:
        return self._a.get(attr.lower(), [])

    def one(self, attr: str, *, required: bool = False) -> str | None:
        vals = self.all(attr)
        if not vals:
            if required:
                raise self.bad(attr, "is missing; this attribute is required")
            return None
        if len(vals) > 1:
            raise self.bad(attr, f"has {len(vals)} values {vals!r}; exactly one is allowed")
        v = vals[0]
        if len(v) > (MAX_MARKER if attr == "ndsclustMarker" else MAX_VALUE):
            raise self.bad(attr, f"value is {len(v)} characters long; that is too long")
        return v

    def check(self, attr: str, value: str, fn: Any) -> Any:
        try:
            return fn(value)
        except ValueError as e:
            raise self.bad(attr, str(e)) from None

    def ordered(self, attr: str) -> list[str]:
        """Values of an X-ORDERED 'VALUES' attribute in the operator's order ({n} prefixes)."""
        keyed = []
        for pos, v in enumerate(self.all(attr)):
            m = _ORDERED.match(v)
            keyed.append((int(m.group(1)), m.group(2)) if m else (pos, v))
        return [v for _, v in sorted(keyed, key=lambda kv: kv[0])]

    @property
    def uuid(self) -> str:
        return self.one("entryUUID") or ""

    @property
    def csn(self) -> str:
        return self.one("entryCSN") or ""


def _servers(e: _Entry, attr: str, values: Iterable[str]) -> tuple[ServerName, ...]:
    out: list[ServerName] = []
    for v in values:
        name = e.check(attr, v, check_server_name)
        if name in out:
            raise e.bad(attr, f"names {name!r} twice; list each backup server once")
        out.append(name)
    return tuple(out)


def parse_app(dn: str, attrs: Attrs) -> App:
    """An ``ndsclustApplication`` entry as an App, or EntryInvalid."""
    e = _Entry(dn, attrs)
    tag = e.check("ndsclustTag", e.one("ndsclustTag", required=True) or "", check_tag)
    type_value = e.one("ndsclustType", required=True) or ""
    try:
        app_type = AppType(type_value.lower())
    except ValueError:
        raise e.bad(
            "ndsclustType", f"{type_value!r} is not an application type; allowed: capable, aware"
        ) from None
    command = e.check(
        "ndsclustCommand", e.one("ndsclustCommand", required=True) or "", parse_command
    )
    unload = e.one("ndsclustUnloadCommand")
    health = e.one("ndsclustHealthCommand")
    primary = e.check(
        "ndsclustPrimaryServer",
        e.one("ndsclustPrimaryServer", required=True) or "",
        check_server_name,
    )
    backups = _servers(e, "ndsclustBackupServer", e.ordered("ndsclustBackupServer"))
    if primary in backups:
        raise e.bad(
            "ndsclustBackupServer",
            f"names the primary server {primary!r}; a backup must be another server",
        )
    host_value = e.one("ndsclustHostServer")
    host = e.check("ndsclustHostServer", host_value, check_server_name) if host_value else None
    resources = frozenset(
        e.check("ndsclustResource", r, check_resource) for r in e.all("ndsclustResource")
    )
    auto = e.one("ndsclustAutoRecover")
    if auto is not None and auto not in ("TRUE", "FALSE"):
        raise e.bad("ndsclustAutoRecover", f"{auto!r} is not a boolean; allowed: TRUE, FALSE")
    state_value = e.one("ndsclustState")
    request_value = e.one("ndsclustRequest")
    marker = e.one("ndsclustMarker")
    return App(
        tag=tag,
        type=app_type,
        command=command,
        primary=primary,
        backups=backups,
        host=host,
        unload_command=e.check("ndsclustUnloadCommand", unload, parse_command) if unload else None,
        health_command=e.check("ndsclustHealthCommand", health, parse_command) if health else None,
        resources=resources,
        auto_recover=auto != "FALSE",
        marker=marker,
        state=e.check("ndsclustState", state_value, StateValue.parse)
        if state_value
        else StateValue.parse("stopped"),
        request=e.check("ndsclustRequest", request_value, Request.parse) if request_value else None,
        dn=dn,
        uuid=e.uuid,
        csn=e.csn,
    )


def check_references(app: App, servers: Collection[str]) -> None:
    """Raise EntryInvalid when the application names a server that has no entry."""
    for attr, names in (
        ("ndsclustPrimaryServer", (app.primary,)),
        ("ndsclustBackupServer", app.backups),
        ("ndsclustHostServer", (app.host,) if app.host else ()),
    ):
        for name in names:
            if name not in servers:
                raise EntryInvalid(
                    app.dn,
                    attr,
                    f"names unknown server {name!r}; add cn={name},ou=servers or remove the value",
                )
    if app.request and app.request.target and app.request.target not in servers:
        raise EntryInvalid(
            app.dn, "ndsclustRequest", f"migrate names unknown server {app.request.target!r}"
        )


def parse_server(dn: str, attrs: Attrs) -> Server:
    """An ``ndsclustServer`` entry as a Server, or EntryInvalid."""
    e = _Entry(dn, attrs)
    name = e.check("cn", e.one("cn", required=True) or "", check_server_name)
    addresses = tuple(
        e.check("ndsclustAddress", a, _check_address) for a in e.all("ndsclustAddress")
    )
    state_value = e.one("ndsclustServerState") or "up"
    try:
        state = ServerState(state_value)
    except ValueError:
        raise e.bad(
            "ndsclustServerState",
            f"{state_value!r} is not a server state; allowed: up, down, maintenance",
        ) from None
    return Server(
        name=name,
        addresses=addresses,
        resources=frozenset(
            e.check("ndsclustResource", r, check_resource) for r in e.all("ndsclustResource")
        ),
        state=state,
        dn=dn,
        uuid=e.uuid,
        csn=e.csn,
    )


def _check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        ok = bool(sep) and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{value!r} is not an address; write ip:port, e.g. 198.18.0.2:7946")
    return value


def parse_pulse(dn: str, attrs: Attrs) -> Pulse:
    e = _Entry(dn, attrs)
    name = e.check("cn", e.one("cn", required=True) or "", check_server_name)
    counter = e.one("ndsclustPulse", required=True) or ""
    try:
        n = int(counter)
    except ValueError:
        raise e.bad("ndsclustPulse", f"{counter!r} is not an integer") from None
    return Pulse(server=name, counter=n, stamp=e.one("ndsclustPulseTime") or "", dn=dn, uuid=e.uuid)


def parse_event(dn: str, attrs: Attrs) -> Event:
    e = _Entry(dn, attrs)
    server = e.one("ndsclustEventServer")
    tag = e.one("ndsclustEventTag")
    return Event(
        id=e.one("ndsclustEventId", required=True) or "",
        time=e.one("ndsclustEventTime", required=True) or "",
        kind=e.one("ndsclustEventKind", required=True) or "",
        server=ServerName(server) if server else None,
        tag=check_tag(tag) if tag else None,
        text=e.one("ndsclustEventText") or "",
        dn=dn,
    )


def app_attributes(app: App) -> dict[str, list[str]]:
    """The attributes of an App as written to the directory (add or full replace)."""
    attrs: dict[str, list[str]] = {
        "objectClass": ["top", "ndsclustApplication"],
        "ndsclustTag": [app.tag],
        "ndsclustType": [app.type.value],
        "ndsclustCommand": [join(app.command)],
        "ndsclustPrimaryServer": [app.primary],
        "ndsclustAutoRecover": ["TRUE" if app.auto_recover else "FALSE"],
        "ndsclustState": [str(app.state)],
    }
    if app.backups:
        attrs["ndsclustBackupServer"] = [f"{{{i}}}{b}" for i, b in enumerate(app.backups)]
    if app.host:
        attrs["ndsclustHostServer"] = [app.host]
    if app.unload_command:
        attrs["ndsclustUnloadCommand"] = [join(app.unload_command)]
    if app.health_command:
        attrs["ndsclustHealthCommand"] = [join(app.health_command)]
    if app.resources:
        attrs["ndsclustResource"] = sorted(app.resources)
    if app.marker is not None:
        attrs["ndsclustMarker"] = [app.marker]
    if app.request:
        attrs["ndsclustRequest"] = [str(app.request)]
    return attrs


def server_attributes(server: Server) -> dict[str, list[str]]:
    attrs: dict[str, list[str]] = {
        "objectClass": ["top", "ndsclustServer"],
        "cn": [server.name],
        "ndsclustServerState": [server.state.value],
    }
    if server.addresses:
        attrs["ndsclustAddress"] = list(server.addresses)
    if server.resources:
        attrs["ndsclustResource"] = sorted(server.resources)
    return attrs

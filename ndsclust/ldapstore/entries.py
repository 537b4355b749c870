"""LDAP entries <-> typed snapshots, with validation of what an operator wrote.

Every parse either returns a frozen ``App``/``Server``/``Pulse``/``Event`` or raises
``EntryInvalid`` naming the DN, the attribute, the value and what is allowed. One bad entry
never stops anything else: callers collect the error and carry on with the rest.

An entry arrives as an ``Entry`` (the one decoded, case-insensitive view of an entry, with
its ``uuid``, ``csn`` and ``classes``), or as a DN with an attribute map from ldap3
(``{name: [bytes or str, ...]}``); names are matched case-insensitively, as LDAP does.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from shlex import join
from typing import Any

from ndsclust.errors import EntryInvalid
from ndsclust.liveness import parse_report
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
    Tag,
    check_resource,
    check_server_name,
    check_service_address,
    check_tag,
    parse_command,
    parse_networks,
)

Attrs = Mapping[str, Sequence[Any]]

_ORDERED = re.compile(r"^\{(\d{1,9})\}(.*)$", re.S)
MAX_VALUE = 4096
_NONE: frozenset[str] = frozenset()


# Values many entries share are kept once: a cache of 10 000 applications holds a few
# dozen server names, states and requests, not 10 000 copies of each (tools/bench_cache_memory.py).
def _server_name(value: str) -> ServerName:
    return ServerName(sys.intern(check_server_name(value)))


def _command(value: str) -> tuple[str, ...]:
    # The program recurs across applications: one string for it. Interning every word
    # would cost more than it saves, most arguments being an application's own.
    argv = parse_command(value)
    return (sys.intern(argv[0]), *argv[1:])


@functools.lru_cache(maxsize=1024)
def _state(value: str) -> StateValue:
    return StateValue.parse(value)


@functools.lru_cache(maxsize=1024)
def _request(value: str) -> Request:
    return Request.parse(value)


@functools.lru_cache(maxsize=4096)
def _server_list(names: tuple[ServerName, ...]) -> tuple[ServerName, ...]:
    return names


def _resources(e: _Checked) -> frozenset[str]:
    found = frozenset(
        sys.intern(e.check("ndsclustResource", r, check_resource))
        for r in e.all("ndsclustResource")
    )
    return found or _NONE


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class Entry:
    """One directory entry as the store or the watch received it: the one decoded,
    case-insensitive view of an entry's attributes (values as text, UTF-8 with
    replacement), with its ``uuid``, ``csn`` and object ``classes``.

    Values are decoded when first asked for, so an entry looked at only for its entryCSN
    (the echo of one's own write, see ``cache.py``) costs no decoding of the rest.
    """

    __slots__ = ("_decoded", "_names", "_raw", "dn")

    def __init__(self, dn: str, attrs: Attrs, *, uuid: str | None = None) -> None:
        """``uuid``: the entryUUID as the caller already holds it (the watch's Sync State
        control), kept as the same string rather than decoded again when it matches."""
        self.dn = dn
        self._raw: dict[str, Sequence[Any]] = {}
        self._names: dict[str, str] = {}  # lower-case -> the name as received
        self._decoded: dict[str, tuple[str, ...]] = {}
        if isinstance(attrs, EntryAttributes):
            # Another Entry's attributes (a watch event's, given on as a mapping): share what
            # it holds and what it decoded already, instead of decoding all of it again.
            self._raw, self._names, self._decoded = (
                attrs.of._raw,
                attrs.of._names,
                attrs.of._decoded,
            )
            attrs = {}
        for k, vs in attrs.items():
            key = k.lower()
            vals = vs if isinstance(vs, (list, tuple)) else [vs]
            if key in self._raw:
                self._raw[key] = [*self._raw[key], *vals]
            else:
                self._raw[key] = vals
                self._names[key] = k
        if uuid is not None and self.all("entryUUID") == (uuid,):
            self._decoded["entryuuid"] = (uuid,)

    def __repr__(self) -> str:
        return f"Entry({self.dn!r}, {dict(self.attributes)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return self.dn == other.dn and dict(self.attributes) == dict(other.attributes)

    __hash__ = None  # type: ignore[assignment]

    def all(self, attr: str) -> tuple[str, ...]:
        """Every value of ``attr`` (any case), as text; () when it has none."""
        key = attr.lower()
        got = self._decoded.get(key)
        if got is None:
            got = tuple(_text(v) for v in self._raw.get(key, ()))
            self._decoded[key] = got
        return got

    def first(self, attr: str) -> str | None:
        """The first value of ``attr``, None when it has none (no validation)."""
        vals = self.all(attr)
        return vals[0] if vals else None

    def has(self, attr: str) -> bool:
        return bool(self._raw.get(attr.lower()))

    @property
    def uuid(self) -> str:
        """entryUUID, "" when it was not asked for."""
        return self.first("entryUUID") or ""

    @property
    def csn(self) -> str:
        """entryCSN, "" when it was not asked for."""
        return self.first("entryCSN") or ""

    @property
    def classes(self) -> frozenset[str]:
        """The object classes, lower-case."""
        return frozenset(c.lower() for c in self.all("objectClass"))

    @property
    def attributes(self) -> Mapping[str, tuple[str, ...]]:
        """Every attribute under its name as received (read-only), decoded when read."""
        return EntryAttributes(self)


class EntryAttributes(Mapping[str, tuple[str, ...]]):
    """An Entry's attributes as a read-only mapping, keyed by the names as received; a value
    is decoded when it is read."""

    __slots__ = ("of",)

    def __init__(self, entry: Entry) -> None:
        self.of = entry

    def __getitem__(self, name: str) -> tuple[str, ...]:
        if self.of._names.get(name.lower()) != name:
            raise KeyError(name)
        return self.of.all(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.of._names.values())

    def __len__(self) -> int:
        return len(self.of._names)

    def __repr__(self) -> str:
        return repr(dict(self))


class _Checked:
    """Validated access to one entry's attributes, for the parsers below."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.dn = entry.dn

    def bad(self, attr: str, problem: str) -> EntryInvalid:
        return EntryInvalid(self.dn, attr, problem)

    def all(self, attr: str) -> tuple[str, ...]:
        return self.entry.all(attr)

    def one(self, attr: str, *, required: bool = False) -> str | None:
        vals = self.all(attr)
        if not vals:
            if required:
                raise self.bad(attr, "is missing; this attribute is required")
            return None
        if len(vals) > 1:
            raise self.bad(attr, f"has {len(vals)} values {list(vals)!r}; exactly one is allowed")
        v = vals[0]
        limit = MAX_MARKER if attr == "ndsclustMarker" else MAX_VALUE
        if len(v) > limit:
            raise self.bad(
                attr, f"value is {len(v)} characters long, too long: the limit is {limit}"
            )
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


def entry_of(dn: str | Entry, attrs: Attrs | None = None) -> Entry:
    """``dn`` when it is an Entry already, else the Entry of ``dn`` and ``attrs``."""
    return dn if isinstance(dn, Entry) else Entry(dn, attrs or {})


def _servers(e: _Checked, attr: str, values: Iterable[str]) -> tuple[ServerName, ...]:
    out: list[ServerName] = []
    for v in values:
        name = e.check(attr, v, _server_name)
        if name in out:
            raise e.bad(attr, f"names {name!r} twice; list each backup server once")
        out.append(name)
    return _server_list(tuple(out))


def parse_app(dn: str | Entry, attrs: Attrs | None = None) -> App:
    """An ``ndsclustApplication`` entry as an App, or EntryInvalid."""
    e = _Checked(entry_of(dn, attrs))
    dn = e.dn
    tag = e.check("ndsclustTag", e.one("ndsclustTag", required=True) or "", check_tag)
    type_value = e.one("ndsclustType", required=True) or ""
    try:
        app_type = AppType(type_value.lower())
    except ValueError:
        raise e.bad(
            "ndsclustType", f"{type_value!r} is not an application type; allowed: capable, aware"
        ) from None
    command = e.check("ndsclustCommand", e.one("ndsclustCommand", required=True) or "", _command)
    unload = e.one("ndsclustUnloadCommand")
    health = e.one("ndsclustHealthCommand")
    primary = e.check(
        "ndsclustPrimaryServer", e.one("ndsclustPrimaryServer", required=True) or "", _server_name
    )
    backups = _servers(e, "ndsclustBackupServer", e.ordered("ndsclustBackupServer"))
    if primary in backups:
        raise e.bad(
            "ndsclustBackupServer",
            f"names the primary server {primary!r}; a backup must be another server",
        )
    host_value = e.one("ndsclustHostServer")
    host = e.check("ndsclustHostServer", host_value, _server_name) if host_value else None
    resources = _resources(e)
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
        unload_command=e.check("ndsclustUnloadCommand", unload, _command) if unload else None,
        health_command=e.check("ndsclustHealthCommand", health, _command) if health else None,
        resources=resources,
        auto_recover=auto != "FALSE",
        marker=marker,
        state=e.check("ndsclustState", state_value or "stopped", _state),
        request=e.check("ndsclustRequest", request_value, _request) if request_value else None,
        requested_by=(e.all("modifiersName") or (None,))[0] if request_value else None,
        dn=dn,
        uuid=e.entry.uuid,
        csn=e.entry.csn,
        **_stack_fields(e),
    )


def _stack_fields(e: _Checked) -> dict[str, Any]:
    """The ndsclustStack attributes (service stacks), each value checked."""
    return {
        "requires": tuple(
            sorted({e.check("ndsclustRequires", v, check_tag) for v in e.all("ndsclustRequires")})
        ),
        "avoids": tuple(
            sorted({e.check("ndsclustAvoids", v, check_tag) for v in e.all("ndsclustAvoids")})
        ),
        "addresses": tuple(
            sorted(
                {
                    e.check("ndsclustServiceAddress", v, check_service_address)
                    for v in e.all("ndsclustServiceAddress")
                }
            )
        ),
    }


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


def parse_server(dn: str | Entry, attrs: Attrs | None = None) -> Server:
    """An ``ndsclustServer`` entry as a Server, or EntryInvalid."""
    e = _Checked(entry_of(dn, attrs))
    dn = e.dn
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
        resources=_resources(e),
        state=state,
        dn=dn,
        uuid=e.entry.uuid,
        csn=e.entry.csn,
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


def parse_pulse(dn: str | Entry, attrs: Attrs | None = None) -> Pulse:
    e = _Checked(entry_of(dn, attrs))
    dn = e.dn
    name = e.check("cn", e.one("cn", required=True) or "", check_server_name)
    counter = e.one("ndsclustPulse", required=True) or ""
    try:
        n = int(counter)
    except ValueError:
        raise e.bad("ndsclustPulse", f"{counter!r} is not an integer") from None
    try:
        report = parse_report(
            e.all("ndsclustHeard"), e.all("ndsclustChannels"), e.one("ndsclustSentinelState")
        )
    except ValueError as err:
        raise e.bad("ndsclustHeard", str(err)) from None
    try:
        networks = parse_networks(e.all("ndsclustNetwork"))
    except ValueError as err:
        raise e.bad("ndsclustNetwork", str(err)) from None
    return Pulse(
        server=name,
        counter=n,
        stamp=e.one("ndsclustPulseTime") or "",
        dn=dn,
        uuid=e.entry.uuid,
        report=report,
        networks=networks,
    )


def parse_event(dn: str | Entry, attrs: Attrs | None = None) -> Event:
    """One event entry; one that names several applications (``event_text``) has them in
    ``tags`` (``Event.each`` gives one event per application)."""
    e = _Checked(entry_of(dn, attrs))
    dn = e.dn
    server = e.one("ndsclustEventServer")
    tag = e.one("ndsclustEventTag")
    text = e.one("ndsclustEventText") or ""
    tags: tuple[Tag, ...] = ()
    if not tag and server:
        text, tags = split_event_text(text)
    return Event(
        id=e.one("ndsclustEventId", required=True) or "",
        time=e.one("ndsclustEventTime", required=True) or "",
        kind=e.one("ndsclustEventKind", required=True) or "",
        server=ServerName(server) if server else None,
        tag=check_tag(tag) if tag else None,
        text=text,
        dn=dn,
        tags=tags,
    )


# An event entry that names several applications: no ndsclustEventTag, and the text's last
# line is this prefix and the tags, space-separated (the schema's event attributes are
# single-valued, so the list lives in the text; a reader that does not know it shows it).
EVENT_TAGS_PREFIX = "applications: "
EVENT_TEXT_LIMIT = 1000  # the text of one event is cut to this many characters


def event_text(text: str, tags: Sequence[str]) -> str:
    """The ndsclustEventText of an entry naming ``tags`` (more than one) with ``text``."""
    return f"{text}\n{EVENT_TAGS_PREFIX}{' '.join(tags)}"


def split_event_text(value: str) -> tuple[str, tuple[Tag, ...]]:
    """The text and the tags of an entry written by ``event_text``; (value, ()) for any
    other text, one whose last line only looks like a list of tags included."""
    text, newline, last = value.rpartition("\n")
    if not newline or not last.startswith(EVENT_TAGS_PREFIX):
        return value, ()
    words = last[len(EVENT_TAGS_PREFIX) :].split(" ")
    try:
        tags = tuple(check_tag(w) for w in words)
    except ValueError:
        return value, ()
    return (text, tags) if len(tags) > 1 else (value, ())


def batch_events(
    events: Iterable[tuple[str, str | None, str]], *, limit: int = MAX_VALUE
) -> list[tuple[str, tuple[str, ...], str]]:
    """Events (kind, tag or None, text) as entries to add, (kind, tags, text) in order:
    events of several applications with the same kind and text share one entry, as long
    as its text stays within ``limit`` characters, and every application's events stay in
    the order they came (an event never joins an entry before one holding an earlier
    event of its application). Texts are cut to ``EVENT_TEXT_LIMIT``; an event without a
    tag has an entry of its own."""
    out: list[tuple[str, list[str], str]] = []
    open_: dict[tuple[str, str], int] = {}  # (kind, text) -> the entry that can grow
    sizes: dict[int, int] = {}
    last: dict[str, int] = {}  # tag -> the entry holding its latest event
    for kind, tag, text in events:
        text = text[:EVENT_TEXT_LIMIT]
        if not tag:
            out.append((kind, [], text))
            continue
        i = open_.get((kind, text))
        if (
            i is not None
            and i >= last.get(tag, -1)
            and tag not in out[i][1]
            and sizes[i] + 1 + len(tag) <= limit
        ):
            out[i][1].append(tag)
            sizes[i] += 1 + len(tag)
        else:
            i = len(out)
            out.append((kind, [tag], text))
            open_[(kind, text)] = i
            sizes[i] = len(event_text(text, [tag]))
        last[tag] = i
    return [(kind, tuple(tags), text) for kind, tags, text in out]


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
    stack: dict[str, list[str]] = {
        "ndsclustRequires": list(app.requires),
        "ndsclustAvoids": list(app.avoids),
        "ndsclustServiceAddress": list(app.addresses),
    }
    if any(stack.values()):
        attrs["objectClass"].append("ndsclustStack")
        attrs.update({k: v for k, v in stack.items() if v})
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

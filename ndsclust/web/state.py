"""The console's pure part: what the page shows, what an action writes, who may act.

``console_state`` is ``ndsclust status --json`` (``status_cmd.status_data``) plus the
latest events. ``parse_action`` checks what a browser asks for against the directory
snapshot and returns an ``Action``, whose ``write`` is the same single directory write
the command line makes (``ndsclustRequest`` on an application, ``ndsclustServerState``
on a server). ``Sessions`` holds the operators signed in, each with its own directory
identity and a CSRF token the page must send back with every action.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ndsclust.cli import common
from ndsclust.cli.status_cmd import status_data
from ndsclust.ldapstore.connection import Credentials
from ndsclust.ldapstore.store import Snapshot
from ndsclust.model import Event, Pulse, Request, ServerName, ServerState, Tag

EVENTS_SHOWN = 100
# Verbs on an application, and the ndsclustRequest value each writes; migrate adds
# ":<server>".
APP_VERBS = ("load", "unload", "failback", "migrate", "cleanup")
VERBS = (*APP_VERBS, "maintenance")


def console_state(
    snap: Snapshot, pulses: Mapping[ServerName, Pulse], events: Sequence[Event], now: float
) -> dict[str, Any]:
    """Everything the page shows; ``now`` is wall time (pulse ages)."""
    data = status_data(snap, pulses, events, now)
    data["events"] = [common.event_json(e) for e in events[-EVENTS_SHOWN:]][::-1]
    return data


@dataclass(frozen=True, slots=True)
class Action:
    """One operator action: ``verb`` on application ``tag`` (to ``server`` for migrate),
    or maintenance ``on``/off for ``server``."""

    verb: str
    tag: Tag | None = None
    server: ServerName | None = None
    on: bool = False

    @property
    def request(self) -> str:
        """The ndsclustRequest value (application verbs)."""
        return f"migrate:{self.server}" if self.verb == "migrate" else self.verb

    @property
    def audit_kind(self) -> str:
        if self.verb == "maintenance":
            return "maintenance_on" if self.on else "maintenance_off"
        return f"request_{self.verb}"

    @property
    def text(self) -> str:
        if self.verb == "maintenance":
            return f"server={self.server}"
        return f"request={self.request}"


def parse_action(body: Any, snap: Snapshot) -> Action:
    """The action a browser asked for; ValueError saying what is wrong with it."""
    if not isinstance(body, Mapping):
        raise ValueError("the action must be a JSON object")
    verb = body.get("verb")
    if verb not in VERBS:
        raise ValueError(f"unknown action {verb!r}; allowed: {', '.join(VERBS)}")
    server = body.get("server")
    if server is not None and (not isinstance(server, str) or server not in snap.servers):
        known = ", ".join(sorted(snap.servers)) or "none"
        raise ValueError(f"unknown server {server!r}; known servers: {known}")
    if verb == "maintenance":
        if server is None:
            raise ValueError("maintenance needs a server")
        mode = body.get("mode")
        if mode not in ("on", "off"):
            raise ValueError("maintenance needs mode 'on' or 'off'")
        return Action(verb, server=ServerName(server), on=mode == "on")
    tag = body.get("tag")
    if not isinstance(tag, str) or Tag(tag) not in snap.apps:
        known = ", ".join(sorted(snap.apps)) or "none"
        raise ValueError(f"unknown application {tag!r}; known: {known}")
    if verb == "migrate":
        if server is None:
            raise ValueError("migrate needs a server")
        return Action(verb, Tag(tag), ServerName(server))
    Request.parse(verb)  # a value the model knows (it raises ValueError otherwise)
    return Action(verb, Tag(tag))


def server_state(action: Action) -> ServerState:
    return ServerState.MAINTENANCE if action.on else ServerState.UP


# -- who may act ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """An operator signed in: its directory identity, what the page sends back as CSRF
    token, and when (wall time) the session ends."""

    id: str
    csrf: str
    who: str
    credentials: Credentials
    expires: float


class Sessions:
    """Signed-in operators, at most ``limit`` (the oldest goes first), each for ``ttl``
    seconds. Only the console's HTTP threads touch it, one call at a time (the caller
    holds its lock)."""

    def __init__(
        self, ttl: float = 3600.0, limit: int = 64, token: Callable[[], str] | None = None
    ) -> None:
        self.ttl, self.limit = ttl, limit
        self._token = token or (lambda: secrets.token_urlsafe(32))
        self._by_id: dict[str, Session] = {}

    def create(self, who: str, credentials: Credentials, now: float) -> Session:
        while len(self._by_id) >= self.limit:
            del self._by_id[next(iter(self._by_id))]
        s = Session(self._token(), self._token(), who, credentials, now + self.ttl)
        self._by_id[s.id] = s
        return s

    def get(self, sid: str | None, now: float) -> Session | None:
        s = self._by_id.get(sid or "")
        if s is not None and s.expires <= now:
            del self._by_id[s.id]
            return None
        return s

    def drop(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return session is not None and token is not None and hmac.compare_digest(session.csrf, token)


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """A request that names its origin must come from the console's own page; one without
    (a script, curl) must still carry the session's CSRF token to act."""
    if origin is None:
        return True
    if host is None:
        return False
    u = urlsplit(origin)
    return u.scheme == scheme and u.netloc == host


def cookie(name: str, sid: str, *, secure: bool, max_age: int) -> str:
    attrs = f"{name}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    return attrs + ("; Secure" if secure else "")


def parse_cookies(header: str | None) -> dict[str, str]:
    out = {}
    for part in (header or "").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep:
            out[k] = v
    return out

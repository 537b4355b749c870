"""The control socket's protocol, spoken by both ends: the program's
(``ndsclust.aware``) and the sentinel's (``ndsclust.sentinel.control``). Cluster-aware
programs (claims 17-24, 29-35, 45-50) use it to register their entry (FIG. 6 step 604),
wait paused until their server hosts them (FIG. 7B), read and compare-and-swap their
marker (claims 34-35) and hear when to unload themselves.

Version 1. UTF-8 lines ending in ``\\n``, one JSON object per line, at most ``MAX_LINE``
bytes (cut by ``ndsclust.framing``). The client numbers its requests (``id``, an integer) and
every answer carries the id of its request; answers may come out of order (a ``wait`` is
answered when the start is granted). ``hello`` comes first::

    client -> sentinel                              answer, besides "id" and "ok": true
    {"op": "hello", "protocol": 1,                  "server": S, "supervised": bool,
     "tag": T | null, "token": K | null}            "tag": T | null (the token's tag)
    {"op": "ping"}                                  (nothing more)
    {"op": "register", "app": {"tag": T,            "result": "created" | "updated" |
     "command": [argv...], "primary": S,                      "unchanged",
     "backups": [S...], "resources": [R...]}}       "host": S | null
    {"op": "wait"}                                  "granted": true, when it is
    {"op": "get_marker"}                            "marker": M | null
    {"op": "set_marker", "expected": M | null,      (nothing more)
     "value": M}

    sentinel -> client, unasked:  {"event": "stop", "reason": text}
    error answer:  {"id": n | null, "ok": false, "error": code, "message": text, ...}

Error codes: ``bad-request`` (the line is no valid request: nothing was done; the
connection stays usable unless the line was longer than the limit), ``unavailable`` (the
directory did not answer), ``no-entry``, ``invalid-entry``, ``refused`` (registration; with
``tag`` and ``attribute``; nothing was written), ``not-supervised``, ``not-granted``,
``conflict`` (with ``expected`` and ``current``), ``stopping``.

Who may do what. The sentinel gives each cluster-aware program it starts a fresh token
(``NDSCLUST_TOKEN``); a ``hello`` with it binds the connection to that start of that tag.
Such a connection may register only its own tag, ``wait``, and set the marker once the
start is granted (also while a stop is requested: the program saves its marker on the way
out). A connection without a token is a copy started by hand (FIG. 6 first start): it may
register any tag and read the marker of the tag it named, nothing else. The sentinel
grants a start only while this server hosts the application (``grant``, from the shell);
until then ``wait`` stays unanswered and the copy does nothing: the paused copy of FIG. 7B.

Each error code comes to the program as the exception ``ERROR_CODES`` names (all
``AwareError``, an ``ndsclust.errors.NdsclustError``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from shlex import join
from typing import Final

from ndsclust.errors import EntryInvalid, NdsclustError
from ndsclust.ldapstore import entries
from ndsclust.model import (
    MAX_MARKER,
    App,
    AppState,
    AppType,
    ServerName,
    StateValue,
    Tag,
    check_resource,
    check_server_name,
    check_tag,
    parse_command,
)

PROTOCOL = 1
DEFAULT_SOCKET = "/run/ndsclust/control.sock"
MAX_LINE = 1 << 20  # bytes per protocol line, newline excluded


# ---------------------------------------------------------------------------- errors


class AwareError(NdsclustError):
    """The sentinel refused a request of the cluster-aware API, or could not carry it out."""


class ControlUnavailable(AwareError):
    """The control socket cannot be reached, or the sentinel closed it."""


class RegistrationRefused(AwareError):
    """A registration was refused and nothing was written; names the attribute at fault."""

    def __init__(self, tag: str, attribute: str, problem: str) -> None:
        self.tag = tag
        self.attribute = attribute
        self.problem = problem
        super().__init__(f"cannot register {tag!r}: {attribute}: {problem}; nothing was written")


class NotSupervised(AwareError):
    """The call is for copies the sentinel started; this one was started by hand."""


class NotGranted(AwareError):
    """The call needs the start, which the sentinel has not granted this copy."""


class MarkerConflict(AwareError):
    """The marker is no longer the expected value: re-read and decide again."""

    def __init__(self, expected: str | None, current: str | None) -> None:
        self.expected = expected
        self.current = current
        super().__init__(
            f"the marker is {current!r}, not {expected!r}: another writer changed "
            "it first; re-read it and decide again"
        )


class StopRequested(AwareError):
    """The sentinel asked the program to unload itself (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the sentinel asks the program to unload itself: {reason}")


class WaitTimeout(AwareError):
    """``wait_until_host`` gave up: the start was not granted within its timeout."""


# Error codes on the wire, and the exception each becomes in the program.
ERROR_CODES: Final[Mapping[str, type[AwareError]]] = {
    "bad-request": AwareError,
    "unavailable": AwareError,
    "no-entry": AwareError,
    "invalid-entry": AwareError,
    "refused": RegistrationRefused,
    "not-supervised": NotSupervised,
    "not-granted": NotGranted,
    "conflict": MarkerConflict,
    "stopping": StopRequested,
}


# ---------------------------------------------------------------------------- wire format


class ProtocolError(ValueError):
    """A line that is not a protocol message; the text says what is wrong."""


def encode(message: Mapping[str, object]) -> bytes:
    """One message as a protocol line: compact JSON, UTF-8, ending in a newline."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )
    if len(data) > MAX_LINE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {MAX_LINE}-byte line limit")
    return data + b"\n"


def decode(line: bytes) -> dict[str, object]:
    """A protocol line (without its newline) as a JSON object, or ProtocolError."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("the line is not UTF-8") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"the line is not JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ProtocolError("the line nests too deeply") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"a message is a JSON object, not {type(value).__name__}")
    return value


def error_reply(rid: object, code: str, message: str, **extra: object) -> dict[str, object]:
    return {
        "id": rid if isinstance(rid, int) else None,
        "ok": False,
        "error": code,
        "message": message,
        **extra,
    }


def error_from_reply(reply: Mapping[str, object]) -> AwareError:
    """The exception a program sees for an error reply (``ok`` false)."""
    code = reply.get("error")
    message = reply.get("message")
    text = message if isinstance(message, str) else f"the sentinel answered {reply!r}"
    if code == "refused":
        attribute = reply.get("attribute")
        tag = reply.get("tag")
        return RegistrationRefused(
            tag if isinstance(tag, str) else "?",
            attribute if isinstance(attribute, str) else "app",
            text,
        )
    if code == "conflict":
        expected, current = reply.get("expected"), reply.get("current")
        return MarkerConflict(
            expected if isinstance(expected, str) else None,
            current if isinstance(current, str) else None,
        )
    if code == "stopping":
        return StopRequested(text)
    cls = ERROR_CODES.get(code, AwareError) if isinstance(code, str) else AwareError
    return cls(text)


def check_marker(value: object) -> str:
    """A marker value as the directory can store it, or ValueError saying why not."""
    if not isinstance(value, str):
        raise ValueError(f"a marker is a string, not {type(value).__name__}")
    if not value:
        raise ValueError("a marker cannot be empty (the directory stores no empty string)")
    if len(value) > MAX_MARKER:
        raise ValueError(f"a marker is at most {MAX_MARKER} characters, not {len(value)}")
    if "\0" in value:
        raise ValueError("a marker cannot contain NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a marker must be valid Unicode (no lone surrogates)") from None
    return value


def hello_of(msg: Mapping[str, object]) -> tuple[Tag | None, str | None]:
    """The tag and token a ``hello`` names; ProtocolError when it is no hello spoken here."""
    if msg.get("protocol") != PROTOCOL:
        raise ProtocolError(
            f"protocol {msg.get('protocol')!r} is not spoken here; this sentinel speaks {PROTOCOL}"
        )
    tag, token = msg.get("tag"), msg.get("token")
    if tag is not None and not isinstance(tag, str):
        raise ProtocolError("'tag' must be a string or null")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("'token' must be a string or null")
    try:
        return (None if tag is None else check_tag(tag)), token
    except ValueError as e:
        raise ProtocolError(f"tag: {e}") from None


def marker_swap_of(msg: Mapping[str, object]) -> tuple[str | None, str]:
    """The expected and the new value of a ``set_marker``; ProtocolError when either is no
    marker."""
    expected, value = msg.get("expected"), msg.get("value")
    if expected is not None and not isinstance(expected, str):
        raise ProtocolError("'expected' must be a string or null")
    try:
        return expected, check_marker(value)
    except ValueError as e:
        raise ProtocolError(f"value: {e}") from None


# ---------------------------------------------------------------------------- registration


@dataclass(frozen=True, slots=True)
class Registration:
    """What a program says about itself (FIG. 2 object: TAG, TYPE=aware, COMMAND, PRIMARY
    SERVER, BACKUP SERVER, RESOURCE LIST). Build it with ``registration()``."""

    tag: Tag
    command: tuple[str, ...]
    primary: ServerName
    backups: tuple[ServerName, ...] = ()
    resources: frozenset[str] = frozenset()

    def app(self) -> App:
        """The entry a first registration creates: hosted by its primary, to be loaded."""
        return App(
            tag=self.tag,
            type=AppType.AWARE,
            command=self.command,
            primary=self.primary,
            backups=self.backups,
            host=self.primary,
            resources=self.resources,
            state=StateValue(AppState.LOADING),
        )

    def to_wire(self) -> dict[str, object]:
        return {
            "tag": self.tag,
            "command": list(self.command),
            "primary": self.primary,
            "backups": list(self.backups),
            "resources": sorted(self.resources),
        }

    @classmethod
    def from_wire(cls, raw: object) -> Registration:
        """Check what a client sent; RegistrationRefused names the field at fault."""
        if not isinstance(raw, dict):
            raise RegistrationRefused("?", "app", "must be a JSON object")
        tag = raw.get("tag")
        name = tag if isinstance(tag, str) else "?"

        def strings(key: str, attribute: str) -> list[str]:
            value = raw.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RegistrationRefused(name, attribute, f"'{key}' must be a list of strings")
            return value

        if not isinstance(tag, str):
            raise RegistrationRefused(name, "ndsclustTag", "'tag' must be a string")
        primary = raw.get("primary")
        if not isinstance(primary, str):
            raise RegistrationRefused(name, "ndsclustPrimaryServer", "'primary' must be a string")
        return registration(
            tag,
            strings("command", "ndsclustCommand"),
            primary,
            strings("backups", "ndsclustBackupServer"),
            strings("resources", "ndsclustResource"),
        )


def registration(
    tag: str,
    command: Sequence[str],
    primary: str,
    backups: Iterable[str] = (),
    resources: Iterable[str] = (),
) -> Registration:
    """Check every attribute as the directory would; RegistrationRefused names the first
    that is wrong (and nothing has been written)."""
    try:
        good_tag = check_tag(tag)
    except ValueError as e:
        raise RegistrationRefused(tag, "ndsclustTag", str(e)) from None

    def refuse(attribute: str, problem: str) -> RegistrationRefused:
        return RegistrationRefused(good_tag, attribute, problem)

    argv = tuple(command)
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise refuse("ndsclustCommand", "must be a non-empty list of non-empty arguments")
    try:
        # The entry holds one command line; it must split back into exactly these arguments.
        if parse_command(join(argv)) != argv:
            raise refuse("ndsclustCommand", "does not survive quoting as one command line")
    except ValueError as e:
        raise refuse("ndsclustCommand", str(e)) from None
    try:
        good_primary = check_server_name(primary)
    except ValueError as e:
        raise refuse("ndsclustPrimaryServer", str(e)) from None
    good_backups: list[ServerName] = []
    for b in backups:
        try:
            name = check_server_name(b)
        except ValueError as e:
            raise refuse("ndsclustBackupServer", str(e)) from None
        if name == good_primary:
            raise refuse(
                "ndsclustBackupServer", f"names the primary {name!r}; a backup is another server"
            )
        if name in good_backups:
            raise refuse("ndsclustBackupServer", f"names {name!r} twice")
        good_backups.append(name)
    good_resources: set[str] = set()
    for r in resources:
        try:
            good_resources.add(check_resource(r))
        except ValueError as e:
            raise refuse("ndsclustResource", str(e)) from None
    reg = Registration(good_tag, argv, good_primary, tuple(good_backups), frozenset(good_resources))
    try:
        # The parser every reader of the directory uses has the last word.
        entries.parse_app(f"ndsclustTag={good_tag}", entries.app_attributes(reg.app()))
    except EntryInvalid as e:
        raise refuse(e.attribute, e.problem) from None
    return reg

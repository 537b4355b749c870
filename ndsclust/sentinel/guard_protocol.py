"""The lease guard's protocol, spoken by both ends of its socket: the sentinel's
(``ndsclust.sentinel.supervisor``) and the guard's (``ndsclust.sentinel.guard``).

UTF-8 lines ending in ``\\n``, at most ``MAX_MESSAGE`` bytes each (``ndsclust.framing``
cuts them; a longer line is refused). A tag (``ndsclust.model.check_tag``: no spaces)
names the program in every per-program line.

Sentinel to guard::

    renew                            the lease now ends lease_timeout seconds from now
    start <tag> <json>               run a program (``Spec``) at once
    stop <tag> <grace>               unload: run the unload command if the spec has one,
                                     else SIGTERM the group; SIGKILL it after grace seconds
    health <tag> <timeout> <json>    run a health command (a JSON argument list); SIGKILL
                                     it after timeout seconds

Guard to sentinel::

    started <tag> <pid>              the program runs; its process group id is its pid
    failed <tag> <text>              the program could not be started; last line for it
    output <tag> <stream> <line>     one line of output; stream: stdout, stderr, health,
                                     unload (the last two: the commands' merged output)
    dropped <tag> <count>            output lines dropped while the sentinel did not read
    health <tag> ok | health <tag> fail <text>
    unload <tag> ok | unload <tag> fail <text>
    error <tag>|- <text>             a line from the sentinel was refused; nothing done
    exited <tag> <code>|- <reason>   last line for the program. <code> as in subprocess
                                     (negative: killed by that signal); ``-``: never
                                     started. <reason>: exited (on its own), stopped
                                     (after a stop), lease-expired, sentinel-gone,
                                     guard-terminated

A tag's ``exited`` or ``failed`` comes after everything else about that start (its output
and command results), and a later ``start`` of the same tag begins a new program. Lines
about a tag the guard no longer holds (a ``stop`` crossing an exit) are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from ndsclust.model import Tag, check_tag

MAX_MESSAGE = 1 << 20  # bytes per protocol line
MAX_LINE = 4096  # bytes of program output per output line
STREAMS = frozenset({"stdout", "stderr", "health", "unload"})
EXIT_REASONS = frozenset(
    {"exited", "stopped", "lease-expired", "sentinel-gone", "guard-terminated"}
)


@dataclass(frozen=True, slots=True)
class Spec:
    """What the guard runs, and as whom. ``uid``/``gid``/``groups`` None: the guard's own."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str = "/"
    unload_argv: tuple[str, ...] | None = None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "argv": list(self.argv),
                "env": dict(self.env),
                "cwd": self.cwd,
                "unload_argv": None if self.unload_argv is None else list(self.unload_argv),
                "uid": self.uid,
                "gid": self.gid,
                "groups": None if self.groups is None else list(self.groups),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Spec:
        """Parse and check a spec; ValueError names the field that is wrong."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"spec is not JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError("spec is not a JSON object")
        env = raw.get("env")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError("spec field 'env' must map strings to strings")
        cwd = raw.get("cwd")
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            raise ValueError("spec field 'cwd' must be an absolute path")
        groups = raw.get("groups")
        if groups is not None and not (isinstance(groups, list) and all(_is_id(g) for g in groups)):
            raise ValueError("spec field 'groups' must be null or a list of group ids")
        return cls(
            argv=_argv(raw.get("argv"), "argv"),
            env=dict(env),
            cwd=cwd,
            unload_argv=None
            if raw.get("unload_argv") is None
            else _argv(raw["unload_argv"], "unload_argv"),
            uid=_opt_id(raw.get("uid"), "uid"),
            gid=_opt_id(raw.get("gid"), "gid"),
            groups=None if groups is None else tuple(groups),
        )


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _opt_id(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not _is_id(value):
        raise ValueError(f"spec field {name!r} must be null or a non-negative integer")
    assert isinstance(value, int)
    return value


def _argv(value: object, name: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and value and all(isinstance(a, str) for a in value)):
        raise ValueError(f"{name} must be a non-empty list of strings")
    return tuple(value)


def _tag(text: str) -> Tag:
    try:
        return check_tag(text)
    except ValueError as e:
        raise ValueError(f"bad tag: {e}") from None


@dataclass(frozen=True, slots=True)
class Renew:
    """Nothing but a renewal: any line renews the lease, this one says nothing else."""


@dataclass(frozen=True, slots=True)
class Start:
    tag: Tag
    spec: Spec


@dataclass(frozen=True, slots=True)
class Stop:
    tag: Tag
    grace: float


@dataclass(frozen=True, slots=True)
class Health:
    tag: Tag
    timeout: float
    argv: tuple[str, ...]


Command = Renew | Start | Stop | Health


def encode_command(cmd: Command) -> bytes:
    match cmd:
        case Renew():
            text = "renew"
        case Start(tag, spec):
            text = f"start {tag} {spec.to_json()}"
        case Stop(tag, grace):
            text = f"stop {tag} {grace!r}"
        case Health(tag, timeout, argv):
            text = f"health {tag} {timeout!r} {json.dumps(list(argv))}"
    return text.encode() + b"\n"


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{what} {text!r} must be a finite number of seconds >= 0")
    return value


def parse_command(line: str) -> Command:
    """Parse one line from the sentinel; ValueError says what is wrong with it."""
    word, _, rest = line.partition(" ")
    if word == "renew" and not rest:
        return Renew()
    if word not in ("start", "stop", "health"):
        raise ValueError(f"unknown command {line[:80]!r}")
    tag_text, _, arg = rest.partition(" ")
    tag = _tag(tag_text)
    if word == "start":
        return Start(tag, Spec.from_json(arg))
    if word == "stop":
        return Stop(tag, _seconds(arg, "stop grace"))
    timeout, _, argv = arg.partition(" ")
    try:
        raw = json.loads(argv)
    except json.JSONDecodeError:
        raise ValueError(f"health command {argv[:80]!r} is not a JSON list") from None
    return Health(tag, _seconds(timeout, "health timeout"), _argv(raw, "health command"))


def start_tag(line: str) -> Tag | None:
    """The tag of a ``start`` line whose spec was refused, so the refusal can name it."""
    word, _, rest = line.partition(" ")
    try:
        return check_tag(rest.partition(" ")[0]) if word == "start" else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Started:
    tag: Tag
    pid: int


@dataclass(frozen=True, slots=True)
class Failed:
    tag: Tag
    text: str


@dataclass(frozen=True, slots=True)
class Output:
    tag: Tag
    stream: str
    line: str


@dataclass(frozen=True, slots=True)
class Dropped:
    tag: Tag
    count: int


@dataclass(frozen=True, slots=True)
class HealthResult:
    tag: Tag
    ok: bool
    text: str = ""


@dataclass(frozen=True, slots=True)
class UnloadResult:
    tag: Tag
    ok: bool
    text: str = ""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    tag: Tag | None
    text: str


@dataclass(frozen=True, slots=True)
class Exited:
    tag: Tag
    code: int | None
    reason: str


Report = Started | Failed | Output | Dropped | HealthResult | UnloadResult | ProtocolError | Exited


def _one_line(text: str) -> str:
    return " ".join(text.split())


def encode_report(report: Report) -> bytes:
    match report:
        case Started(tag, pid):
            text = f"started {tag} {pid}"
        case Failed(tag, t):
            text = f"failed {tag} {_one_line(t)}"
        case Output(tag, stream, line):
            # clean_line made the line printable: it holds no newline.
            text = f"output {tag} {stream} {line}"
        case Dropped(tag, count):
            text = f"dropped {tag} {count}"
        case HealthResult(tag, ok, t):
            text = f"health {tag} ok" if ok else f"health {tag} fail {_one_line(t)}"
        case UnloadResult(tag, ok, t):
            text = f"unload {tag} ok" if ok else f"unload {tag} fail {_one_line(t)}"
        case ProtocolError(tag, t):
            text = f"error {tag or '-'} {_one_line(t)}"
        case Exited(tag, code, reason):
            text = f"exited {tag} {'-' if code is None else code} {reason}"
    return text.encode() + b"\n"


def parse_report(line: str) -> Report:
    """Parse one line from the guard; ValueError says what is wrong with it."""
    try:
        return _parse_report(line)
    except ValueError:
        raise ValueError(f"unknown report {line[:80]!r}") from None


def _parse_report(line: str) -> Report:
    word, _, rest = line.partition(" ")
    tag_text, _, arg = rest.partition(" ")
    if word == "error":
        return ProtocolError(None if tag_text == "-" else _tag(tag_text), arg)
    tag = _tag(tag_text)
    if word == "started" and arg.isdigit():
        return Started(tag, int(arg))
    if word == "failed":
        return Failed(tag, arg)
    if word == "output":
        stream, sep, text = arg.partition(" ")
        if stream in STREAMS and sep:
            return Output(tag, stream, text)
    if word == "dropped" and arg.isdigit():
        return Dropped(tag, int(arg))
    if word in ("health", "unload"):
        verdict, _, text = arg.partition(" ")
        if verdict in ("ok", "fail"):
            cls = HealthResult if word == "health" else UnloadResult
            return cls(tag, verdict == "ok", text)
    if word == "exited":
        code, _, reason = arg.partition(" ")
        if reason in EXIT_REASONS and (code == "-" or code.lstrip("-").isdigit()):
            return Exited(tag, None if code == "-" else int(code), reason)
    raise ValueError(line)


def clean_line(raw: bytes) -> str:
    """Program output as one printable line: UTF-8, control characters escaped."""
    text = raw.decode("utf-8", "backslashreplace").removesuffix("\r")
    return "".join(
        c if c == "\t" or (c >= " " and c != "\x7f") else f"\\x{ord(c):02x}" for c in text
    )

"""The ``fencing`` section of the sentinel configuration (docs/design.md section 4,
"Fencing other servers").

::

    fencing:
      required: false       # true: every takeover waits for a confirmed fence
      retry_min: 2s         # backoff between attempts after a failed fence ...
      retry_max: 60s        # ... doubling up to this
      servers:
        alpha:              # the levels of server alpha, tried in this order
          - agent: /usr/sbin/fence_ipmilan
            action: off     # off (default) or reboot
            timeout: 30s
            options: {ip: 10.0.0.11, username: admin, lanplus: 1}
            password_file: /etc/ndsclust/fence-alpha.pw   # -> password=... on stdin
            secrets: {}     # other secret options: option name -> file holding it

Checked when the file is read, every problem with its YAML path (docs/style.md section 6):
the agent is an absolute path to an executable file; it answers ``action=metadata`` (or,
when it has no metadata, ``action=monitor``); every option its metadata marks required is
given, by its name or the deprecated name it replaced; secrets are readable files. A
device with a problem is refused, naming the key. Secrets are read here, kept in memory
and handed to the agent on its standard input only: never on a command line, in the
environment or in the directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndsclust.confread import Reader
from ndsclust.fencing import agent
from ndsclust.model import ServerName, check_server_name

ACTIONS = ("off", "reboot")
# How long the loader waits for ``action=metadata`` or ``action=monitor``.
PROBE_TIMEOUT = 10.0
DEVICE_KEYS = {"agent", "action", "timeout", "options", "password_file", "secrets"}


@dataclass(frozen=True, slots=True)
class Device:
    """One fence device: an agent and what it is told on its standard input."""

    agent: str
    action: str
    timeout: float
    options: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)  # name -> value
    secret_files: tuple[str, ...] = ()  # the files they were read from (doctor checks modes)

    def stdin_options(self) -> dict[str, str]:
        return {**self.options, **self.secrets}

    def describe(self) -> str:
        """Without the secrets: for logs, events and ``doctor``."""
        opts = " ".join(f"{k}={v}" for k, v in self.options.items())
        hidden = " ".join(f"{k}=***" for k in self.secrets)
        return " ".join(x for x in (self.agent, f"action={self.action}", opts, hidden) if x)


@dataclass(frozen=True, slots=True)
class Fencing:
    """Per server, its fencing levels in order; ``required``: no takeover without a fence."""

    servers: Mapping[ServerName, tuple[Device, ...]]
    required: bool = False
    retry_min: float = 2.0
    retry_max: float = 60.0

    def levels(self, server: ServerName) -> tuple[Device, ...]:
        return self.servers.get(server, ())

    def longest(self, server: ServerName) -> float:
        """The longest one attempt at every level of ``server`` can take."""
        return sum(d.timeout for d in self.levels(server))


Probe = Callable[[str, str, Mapping[str, str], float], agent.Result]


def parse(r: Reader, data: Mapping[str, Any], *, probe: Probe = agent.run) -> Fencing | None:
    """The ``fencing`` section of ``data`` (None when absent), problems recorded in ``r``.
    ``probe`` runs an agent (tests pass a fake; the loader runs the real one)."""
    f = r.section(data, "fencing", "", known={"required", "retry_min", "retry_max", "servers"})
    if f is None:
        return None
    retry_min = r.number(f, "retry_min", "fencing.", 2.0, low=0.1, high=3600)
    retry_max = r.number(f, "retry_max", "fencing.", 60.0, low=0.1, high=86400)
    if retry_max < retry_min:
        r.bad("fencing.retry_max", f"{retry_max}s must not be below retry_min ({retry_min}s)")
    servers: dict[ServerName, tuple[Device, ...]] = {}
    answers: dict[str, agent.Result | None] = {}  # agent -> its metadata, asked once
    for name, levels in (r.section(f, "servers", "fencing.") or {}).items():
        path = f"fencing.servers.{name}"
        try:
            server = check_server_name(str(name))
        except ValueError as e:
            r.bad(path, str(e))
            continue
        if not isinstance(levels, list) or not levels:
            r.bad(path, "must be a list of fence devices (agent, options), tried in order")
            continue
        devices = []
        for i, d in enumerate(levels):
            device = _device(r, d, f"{path}[{i}]", probe, answers)
            if device is not None:
                devices.append(device)
        if len(devices) == len(levels):
            servers[server] = tuple(devices)
    return Fencing(
        servers=servers,
        required=bool(r.flag(f, "required", "fencing.", False)),
        retry_min=retry_min,
        retry_max=retry_max,
    )


def _device(
    r: Reader, d: Any, path: str, probe: Probe, answers: dict[str, agent.Result | None]
) -> Device | None:
    if not isinstance(d, Mapping):
        r.bad(path, "must be a mapping with agent and options")
        return None
    before = len(r.problems)
    r.known(d, DEVICE_KEYS, f"{path}.")
    prefix = f"{path}."
    exe = r.string(d, "agent", prefix, required=True) or ""
    action = r.string(d, "action", prefix, default="off") or "off"
    if action not in ACTIONS:
        r.bad(f"{prefix}action", f"{action!r}; allowed: {', '.join(ACTIONS)}")
    timeout = r.number(d, "timeout", prefix, 30.0, low=0.1, high=600)
    options: dict[str, str] = {}
    for key, value in (r.section(d, "options", prefix) or {}).items():
        if not _option(r, f"{prefix}options.{key}", str(key), value):
            continue
        options[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    secret_files: dict[str, str] = {}
    if (pw := r.string(d, "password_file", prefix)) is not None:
        secret_files["password"] = pw
    for key, value in (r.section(d, "secrets", prefix) or {}).items():
        if not isinstance(value, str) or not _option(r, f"{prefix}secrets.{key}", str(key), "x"):
            r.bad(f"{prefix}secrets.{key}", "must name the file that holds the secret")
            continue
        secret_files[str(key)] = value
    secrets: dict[str, str] = {}
    for key, file in secret_files.items():
        where = f"{prefix}password_file" if key == "password" else f"{prefix}secrets.{key}"
        if key in options:
            r.bad(where, f"{key} is also in options; a secret belongs in a file only")
            continue
        try:
            value = Path(file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as e:
            r.bad(where, f"{file}: {e.strerror}")
            continue
        except ValueError as e:  # a NUL in the path, or a file that is not UTF-8
            r.bad(where, f"{file!r}: {e}")
            continue
        if "\n" in value or not value:
            r.bad(where, f"{file}: must hold the secret on one line")
            continue
        secrets[key] = value
    if exe and _executable(r, exe, f"{prefix}agent"):
        _check_agent(r, exe, prefix, {**options, **secrets}, probe, answers)
    if len(r.problems) > before:
        return None
    return Device(exe, action, timeout, options, secrets, tuple(secret_files.values()))


def _option(r: Reader, path: str, key: str, value: Any) -> bool:
    if key == "action" or not key or "=" in key or any(c.isspace() for c in key):
        r.bad(path, "not an option name (action is set by ndsclust)")
        return False
    if not isinstance(value, (str, int, float, bool)) or "\n" in str(value):
        r.bad(path, f"{value!r} must be one line of text")
        return False
    return True


def _executable(r: Reader, exe: str, path: str) -> bool:
    p = Path(exe)
    if not p.is_absolute():
        r.bad(path, f"{exe!r} is not an absolute path")
    elif not p.is_file():
        r.bad(path, f"{exe}: no such file (is the fence-agents package installed?)")
    elif not p.stat().st_mode & 0o111:
        r.bad(path, f"{exe}: not executable")
    else:
        return True
    return False


def _check_agent(
    r: Reader,
    exe: str,
    prefix: str,
    given: Mapping[str, str],
    probe: Probe,
    answers: dict[str, agent.Result | None],
) -> None:
    """The agent answers ``metadata`` and every option it requires is given; an agent
    without metadata must answer ``monitor`` with the options given instead."""
    if exe not in answers:
        answers[exe] = probe(exe, "metadata", {}, PROBE_TIMEOUT)
    meta = answers[exe]
    params: tuple[agent.Parameter, ...] | None = None
    if meta is not None and meta.ok:
        try:
            params = agent.parameters(meta.stdout)
        except ValueError:
            params = None
    if params is None:
        monitor = probe(exe, "monitor", given, PROBE_TIMEOUT)
        if not monitor.ok:
            why = meta.summary() if meta is not None else "no answer"
            r.bad(
                f"{prefix}agent",
                f"{exe} answers neither action=metadata ({why}) "
                f"nor action=monitor ({monitor.summary()})",
            )
        return
    for name in agent.missing_options(params, set(given)):
        where = f"{prefix}password_file" if name == "password" else f"{prefix}options.{name}"
        r.bad(where, f"is missing; {Path(exe).name} requires it (its action=metadata says so)")

"""Sentinel configuration: YAML in, a frozen, validated ``Config`` out (docs/style.md section 6).

All problems are collected and reported together, each with its YAML path; ``main()``
prints them and exits 2. Cross-field rules live here too, above all the fencing
inequality that the no-double-run invariant rests on (see ``check_timing``).

Timing assumptions that safety depends on (README, "The timing argument"):

* a backup declares the host dead only after every channel has been silent for
  ``timeouts.failover`` seconds;
* a host whose sentinel is frozen or killed loses its programs when their lease runs out,
  ``timeouts.lease`` seconds after the last renewal, which happens at least every
  ``loop_interval`` while the sentinel sends heartbeats;
* a host cut off from every peer (and the witness) fences itself: its programs are killed
  within ``timeouts.fence`` seconds of the last moment it heard a peer, and, where the
  witness decides (two servers), within ``channels.witness.timeout`` + KILL_ALLOWANCE of
  its last completed witness probe (``fence_bound``);
* so ``failover`` must exceed ``max(lease, fence)`` by a margin that covers one heartbeat
  interval on each side and the relative clock-rate error of two servers
  (``clock_rate_error``, default 0.1%, monotonic clocks only: wall-clock steps do not matter).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ndsclust import fencing as fencing_section
from ndsclust.channel_config import (
    CHANNEL_KEYS,
    DirectoryChannelSettings,
    DiskSettings,
    LanSettings,
    WitnessSettings,
    parse_channels,
)
from ndsclust.confread import Reader, document, load_yaml
from ndsclust.ldapstore.connection import Credentials, check_uri
from ndsclust.model import ServerName, check_resource, check_server_name

DEFAULT_PATH = "/etc/ndsclust/sentinel.yaml"
# The keys of the timeouts section, which ``ndsclust lab`` tools also read from a file.
TIMEOUT_KEYS = (
    "failover",
    "fence",
    "lease",
    "loop_interval",
    "startup_grace",
    "stop_grace",
    "clock_rate_error",
)
# Time the lease guard needs from "kill" to the program being gone (SIGKILL to a process group).
KILL_ALLOWANCE = 0.1
SCHEDULING_SLACK = 0.05


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    uris: tuple[str, ...]
    suffix: str
    base: str
    pulse_suffix: str
    credentials: Credentials
    local_uri: str | None = None  # this server's own provider: replication catch-up checks
    # URI -> the server that runs that provider: a provider whose server is dead on every
    # channel is skipped at once, and one whose server is alive is never left for latency.
    provider_servers: Mapping[str, ServerName] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Timeouts:
    failover: float
    fence: float
    lease: float
    loop_interval: float
    startup_grace: float
    stop_grace: float
    clock_rate_error: float

    def margin(self, max_interval: float) -> float:
        return max_interval * 2 + self.clock_rate_error * self.failover + SCHEDULING_SLACK


@dataclass(frozen=True, slots=True)
class Supervision:
    max_restarts: int = 3
    restart_window: float = 900.0
    flap_max_failovers: int = 3
    flap_window: float = 3600.0
    health_interval: float = 10.0
    health_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Programs:
    user: str | None = None
    cwd: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    allowed_commands: tuple[str, ...] = ()  # empty: any absolute path


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    server: ServerName
    cluster: str
    directory: DirectorySettings
    resources: frozenset[str]
    lan: LanSettings | None
    disk: DiskSettings | None
    witness: WitnessSettings | None
    directory_channel: DirectoryChannelSettings | None
    timeouts: Timeouts
    supervision: Supervision
    programs: Programs
    notify_command: tuple[str, ...] | None
    control_socket: str | None
    event_limit: int
    log_level: str
    fencing: fencing_section.Fencing | None = None  # other servers' fence devices
    http: HttpSettings | None = None  # the sentinel's HTTP face (``parse_http``)

    def channel_names(self) -> tuple[str, ...]:
        names = []
        if self.lan:
            names.append("lan")
        if self.directory_channel:
            names.append("directory")
        if self.disk:
            names.append("disk")
        return tuple(names)


TOP_KEYS = {
    "server",
    "cluster",
    "directory",
    "resources",
    "channels",
    "timeouts",
    "supervision",
    "programs",
    "notify",
    "control_socket",
    "events",
    "log",
    "fencing",
    "http",
}


def parse(data: Any, source: str = "<config>") -> Config:
    """Validate a loaded YAML document; ConfigError listing every problem."""
    r = Reader()
    data = document(data, source)
    r.known(data, TOP_KEYS)

    server = ServerName("")
    name = r.string(data, "server", "", required=True)
    if name is not None:
        try:
            server = check_server_name(name)
        except ValueError as e:
            r.bad("server", str(e))
    cluster = r.string(data, "cluster", "", default="ndsclust") or "ndsclust"

    d = (
        r.section(
            data,
            "directory",
            "",
            required=True,
            known={
                "uris",
                "local_uri",
                "provider_servers",
                "suffix",
                "base",
                "pulse_suffix",
                "bind_dn",
                "password_file",
                "sasl_external",
                "ca_file",
                "cert_file",
                "key_file",
                "start_tls",
                "allow_plain_ldap",
            },
        )
        or {}
    )
    uris = r.checked_list(d, "uris", "directory.", check_uri)
    if d and not d.get("uris"):
        r.bad("directory.uris", "is missing; list the providers in write-provider order")
    suffix = r.string(d, "suffix", "directory.", required=bool(d)) or ""
    password = None
    pw_file = r.string(d, "password_file", "directory.")
    if pw_file:
        try:
            password = Path(pw_file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as e:
            r.bad("directory.password_file", f"{pw_file}: {e.strerror}")
        except ValueError as e:  # a NUL in the path, or a file that is not UTF-8
            r.bad("directory.password_file", f"{pw_file!r}: {e}")
    creds = Credentials(
        bind_dn=r.string(d, "bind_dn", "directory."),
        password=password,
        sasl_external=bool(d.get("sasl_external", False)),
        ca_file=r.string(d, "ca_file", "directory."),
        cert_file=r.string(d, "cert_file", "directory."),
        key_file=r.string(d, "key_file", "directory."),
        start_tls=bool(d.get("start_tls", False)),
        allow_plain=bool(d.get("allow_plain_ldap", False)),
    )
    local_uri = r.string(d, "local_uri", "directory.")
    for key, uri in [("uris", u) for u in uris] + [("local_uri", local_uri or "")]:
        if uri.lower().startswith("ldap://") and not (creds.start_tls or creds.allow_plain):
            # Refused at every connection: a sentinel would retry forever.
            r.bad(
                f"directory.{key}",
                f"{uri}: plain LDAP without TLS is refused; use ldaps://, set "
                "directory.start_tls: true, use ldapi://, or set allow_plain_ldap: true",
            )
    provider_servers: dict[str, ServerName] = {}
    ps = r.section(d, "provider_servers", "directory.")
    for uri, name in (ps or {}).items():
        key = f"directory.provider_servers.{uri}"
        if uri not in uris:
            r.bad(key, "is not one of directory.uris; name each provider exactly as listed there")
        elif not isinstance(name, str):
            r.bad(key, f"{name!r} must be a server name")
        else:
            try:
                provider_servers[uri] = check_server_name(name)
            except ValueError as e:
                r.bad(key, str(e))
    directory = DirectorySettings(
        uris=tuple(uris),
        suffix=suffix,
        base=r.string(d, "base", "directory.") or f"ou=ndsclust,{suffix}",
        pulse_suffix=r.string(d, "pulse_suffix", "directory.", default="o=ndsclust-pulse") or "",
        credentials=creds,
        local_uri=local_uri,
        provider_servers=provider_servers,
    )

    resources = r.checked_list(data, "resources", "", check_resource)

    ch = r.section(data, "channels", "", required=True, known=CHANNEL_KEYS) or {}
    t = (
        r.section(
            data,
            "timeouts",
            "",
            known=TIMEOUT_KEYS,
        )
        or {}
    )
    failover = r.number(t, "failover", "timeouts.", 0.8, low=0.05, high=600)

    channels = parse_channels(r, ch, server, failover)
    lan, disk, witness = channels.lan, channels.disk, channels.witness
    directory_channel = channels.directory
    intervals = list(channels.intervals)

    timeouts = Timeouts(
        failover=failover,
        fence=r.number(t, "fence", "timeouts.", 0.5, low=0.02, high=600),
        lease=r.number(t, "lease", "timeouts.", 0.5, low=0.02, high=600),
        loop_interval=r.number(t, "loop_interval", "timeouts.", 0.05, low=0.005, high=10),
        startup_grace=r.number(t, "startup_grace", "timeouts.", 2.0, low=0, high=600),
        stop_grace=r.number(t, "stop_grace", "timeouts.", 10.0, low=0, high=3600),
        clock_rate_error=r.number(t, "clock_rate_error", "timeouts.", 0.001, low=0, high=0.1),
    )
    fencing = fencing_section.parse(r, data)
    check_timing(
        timeouts,
        intervals,
        r,
        witness.timeout if witness else None,
        fenced=fencing is not None and fencing.required,
    )

    sv = (
        r.section(
            data,
            "supervision",
            "",
            known={
                "max_restarts",
                "restart_window",
                "flap_max_failovers",
                "flap_window",
                "health_interval",
                "health_timeout",
            },
        )
        or {}
    )
    supervision = Supervision(
        max_restarts=r.integer(sv, "max_restarts", "supervision.", 3, low=0, high=1000),
        restart_window=r.number(sv, "restart_window", "supervision.", 900, low=1, high=86400),
        flap_max_failovers=r.integer(sv, "flap_max_failovers", "supervision.", 3, low=1, high=1000),
        flap_window=r.number(sv, "flap_window", "supervision.", 3600, low=1, high=7 * 86400),
        health_interval=r.number(sv, "health_interval", "supervision.", 10, low=0.1, high=3600),
        health_timeout=r.number(sv, "health_timeout", "supervision.", 5, low=0.1, high=3600),
    )

    p = r.section(data, "programs", "", known={"user", "cwd", "env", "allowed_commands"}) or {}
    env = p.get("env", {}) or {}
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (str, int)) for k, v in env.items()
    ):
        r.bad("programs.env", "must map variable names to strings")
        env = {}
    allowed = r.string_list(p, "allowed_commands", "programs.")
    for i, a in enumerate(allowed):
        if not a.startswith("/"):
            r.bad(f"programs.allowed_commands[{i}]", f"{a!r} is not an absolute path")
    cwd = r.string(p, "cwd", "programs.", default="/") or "/"
    if not cwd.startswith("/"):
        r.bad("programs.cwd", f"{cwd!r} is not an absolute path")
    elif not os.path.isdir(cwd):
        # Every program starts there: without it none can start.
        r.bad(
            "programs.cwd",
            f"{cwd} is not a directory on this server, so no program could start; "
            f"create it (install -d -m 0755 {cwd}) or set another",
        )
    programs = Programs(
        user=r.string(p, "user", "programs."),
        cwd=cwd,
        env={str(k): str(v) for k, v in env.items()},
        allowed_commands=tuple(allowed),
    )

    n = r.section(data, "notify", "", known={"command"}) or {}
    notify = r.string_list(n, "command", "notify.") or None
    if notify and not notify[0].startswith("/"):
        r.bad("notify.command", f"{notify[0]!r} is not an absolute path")

    ev = r.section(data, "events", "", known={"limit"}) or {}
    lg = r.section(data, "log", "", known={"level"}) or {}
    level = (r.string(lg, "level", "log.", default="info") or "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        r.bad("log.level", f"{level!r}; allowed: debug, info, warning, error")

    http = parse_http(r, data)
    r.check(source)
    return Config(
        path=source,
        server=server,
        cluster=cluster,
        directory=directory,
        resources=frozenset(resources),
        lan=lan,
        disk=disk,
        witness=witness,
        directory_channel=directory_channel,
        timeouts=timeouts,
        supervision=supervision,
        programs=programs,
        notify_command=tuple(notify) if notify else None,
        control_socket=r.string(data, "control_socket", ""),
        event_limit=r.integer(ev, "limit", "events.", 1000, low=10, high=1_000_000),
        log_level=level,
        fencing=fencing,
        http=http,
    )


def fence_bound(t: Timeouts, witness_timeout: float | None) -> float:
    """Seconds from the moment a server is cut off until its programs are dead by fencing.
    With two servers, being cut off also takes the witness being unreachable, which is
    known ``channels.witness.timeout`` after its last completed probe; the kill then takes
    KILL_ALLOWANCE."""
    if witness_timeout is None:
        return t.fence
    return max(t.fence, witness_timeout + KILL_ALLOWANCE)


def check_timing(
    t: Timeouts,
    intervals: list[float],
    r: Reader,
    witness_timeout: float | None = None,
    *,
    fenced: bool = False,
) -> None:
    """The fencing inequality (docs/design.md section 4): a backup may start a program only after
    the old host's copy is certainly dead, by lease (frozen sentinel) or fence (cut off).
    ``fenced`` (``fencing.required``): no takeover starts anything before a fence agent or
    an operator confirmed the old host off, so the inequality is not needed for safety."""
    max_interval = max(intervals, default=0.0)
    margin = t.margin(max(max_interval, t.loop_interval))
    fence = fence_bound(t, witness_timeout)
    bound = max(t.lease, fence) + margin
    if t.failover <= bound and not fenced:
        by_witness = (
            f", or witness timeout {witness_timeout}s + {KILL_ALLOWANCE}s"
            if fence != t.fence
            else ""
        )
        r.bad(
            "timeouts.failover",
            f"{t.failover}s must exceed max(lease {t.lease}s, fence {t.fence}s{by_witness}) "
            f"+ margin {margin:.3f}s (2 x heartbeat interval "
            f"{max(max_interval, t.loop_interval)}s + clock rate error "
            f"{t.clock_rate_error:g} x failover + {SCHEDULING_SLACK}s) = "
            f"{bound:.3f}s; raise failover or lower lease/fence"
            + ("/channels.witness.timeout" if by_witness else ""),
        )
    if t.fence <= KILL_ALLOWANCE + 2 * max_interval:
        r.bad(
            "timeouts.fence",
            f"{t.fence}s leaves no time to notice isolation: it must exceed "
            f"{KILL_ALLOWANCE}s + 2 x heartbeat interval ({max_interval}s)",
        )
    if t.lease < 3 * t.loop_interval:
        r.bad(
            "timeouts.lease",
            f"{t.lease}s must be at least 3 x loop_interval "
            f"({t.loop_interval}s) so a busy loop does not kill programs",
        )
    for i in intervals:
        if t.failover < 3 * i:
            r.bad(
                "timeouts.failover",
                f"{t.failover}s must be at least 3 heartbeat intervals "
                f"({i}s): one lost packet must not fail anything over",
            )
            break


def load(path: str | None = None) -> Config:
    path = path or os.environ.get("NDSCLUST_CONFIG") or DEFAULT_PATH
    return parse(load_yaml(path), path)


# -- http: the sentinel's metrics and health endpoints (ndsclust/sentinel/httpd.py) -------

DEFAULT_HTTP_LISTEN = "127.0.0.1:9469"
HTTP_KEYS = {"listen", "cert_file", "key_file", "client_ca_file", "plain", "max_connections"}


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """``http``: where the sentinel serves /metrics, /health and /app/<tag>.

    Loopback by default; another address needs TLS (``cert_file``/``key_file``, and
    ``client_ca_file`` to ask scrapers for a certificate of that CA) or ``plain: true``."""

    listen: str = DEFAULT_HTTP_LISTEN
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    max_connections: int = 64

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def parse_http(r: Reader, data: Mapping[str, Any]) -> HttpSettings | None:
    """The ``http`` section, or None when it is absent (no HTTP served)."""
    h = r.section(data, "http", "", known=HTTP_KEYS)
    if h is None:
        return None
    listen = r.string(h, "listen", "http.", default=DEFAULT_HTTP_LISTEN) or DEFAULT_HTTP_LISTEN
    if r.address(listen, "http.listen") is None:
        listen = DEFAULT_HTTP_LISTEN
    cert = r.string(h, "cert_file", "http.")
    key = r.string(h, "key_file", "http.")
    client_ca = r.string(h, "client_ca_file", "http.")
    if bool(cert) != bool(key):
        r.bad("http.cert_file" if key else "http.key_file", "TLS needs both cert_file and key_file")
    if client_ca and not cert:
        r.bad("http.client_ca_file", "asking for client certificates needs cert_file and key_file")
    host = listen.rpartition(":")[0].strip("[]")
    loopback = host in ("127.0.0.1", "::1") or host.startswith("127.")
    if not loopback and not cert and not r.flag(h, "plain", "http.", False):
        r.bad(
            "http.listen",
            f"{listen} is not loopback: set cert_file and key_file (TLS), or plain: true to "
            "serve metrics and health in the clear on that address",
        )
    return HttpSettings(
        listen=listen,
        cert_file=cert,
        key_file=key,
        client_ca_file=client_ca,
        max_connections=r.integer(h, "max_connections", "http.", 64, low=1, high=1024),
    )

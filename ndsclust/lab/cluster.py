"""A complete local cluster: slapd providers, one sentinel per server, sample programs.

Used by ``ndsclust lab``, the end-to-end tests and the benchmarks. Server ``i`` gets the
provider ``i`` of a ``DirectoryCluster`` as its local provider, its own loopback address
(127.0.1.<i+1>) for LAN heartbeats, a slot in a shared disk-pulse file, and a sentinel
process running ``ndsclust sentinel run`` with a generated configuration. Sample programs
(``ndsclust.lab.sample_app``) append to one ledger, from which double runs are counted.

"Killing a server" SIGKILLs its sentinel, everything below it (lease guard, programs)
and its slapd at once: what a power cut does, as far as one machine can show it.

With ``network`` (a factory such as ``tools.netns.NetLab``, called with the server names)
every server is a network namespace of that network instead: its slapd
and its sentinel (and so its programs) run inside it, its provider listens on its dir
address, its heartbeats use its lan address, and the test process reaches the providers
through the root namespace's address on the dir bridge. The ledger and the disk-pulse file
stay shared (one filesystem: the shared storage). Killing a server then also takes its
links down, as a dead host drops off the network; restarting it brings them up first.

Security is what deploy/ ships (``DirectoryCluster(tls=True)``): providers speak only
``ldaps://`` with certificates of a lab CA, replicate over TLS, and enforce the shipped ACLs.
Each sentinel binds as its own server entry with a password kept in a 0600 file of its
server's directory (deploy/render.py's ``server`` verb, directory.bind_dn and
password_file), verifying the providers against the lab CA (directory.ca_file). The lab's
admin (``cn=admin``) is for the lab's own bookkeeping and the tests, never a sentinel.
A cluster-aware program registers itself through its sentinel (FIG. 6), which creates its
application entry: the shipped ACLs let only operators do that, so a deployment that wants
it puts that server's identity in the operators group (``operator_servers`` here), knowing
that such a server may then create and change applications, commands included.

``witness=True`` adds a witness (claims 12, 43) to every sentinel's configuration: a TCP
listener of this process, on the root namespace's dir-bridge address with ``network``, so
a server reaches it exactly while its dir link works.

Timings (``timeouts``, ``intervals``, ``witness_interval``/``witness_timeout``) go into
each sentinel's configuration as ``ndsclust.lab.sentinel_config`` says.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from ndsclust.lab.directory import DirectoryCluster
from ndsclust.lab.provider import LabError, alive, descendants, die_with, free_ports, wait_until
from ndsclust.lab.sentinel_config import channel_intervals, sentinel_config
from ndsclust.lab.witness import WITNESS_INTERVAL, WITNESS_TIMEOUT, Witness
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import App, AppState, AppType, ServerName, StateValue, Tag

# alive and descendants are imported from here by the tools and the tests too.
__all__ = ["LabCluster", "LabServer", "Network", "Witness", "alive", "descendants"]

SAMPLE_APP = Path(__file__).with_name("sample_app.py")
SERVER_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
# Each namespace has its own port space: every server's heartbeats use the same port.
NETNS_LAN_PORT = 7946
NETNS_HTTP_PORT = 9469


class Network(Protocol):
    """Servers as hosts of their own (``tools.netns.NetLab``): what the lab asks of them."""

    def start(self) -> None: ...
    def teardown(self) -> None: ...
    def address(self, name: str, net: str) -> str:
        """The server's address on ``net``: ``lan`` (heartbeats) or ``dir`` (its provider)."""

    def root_address(self, net: str) -> str:
        """This process's address on ``net``."""

    def exec_prefix(self, name: str) -> tuple[str, ...]:
        """Prefix a command with this to run it on the server."""

    def link_down(self, name: str) -> None: ...
    def link_up(self, name: str) -> None: ...


@dataclass
class LabServer:
    name: ServerName
    index: int
    address: str  # LAN heartbeat ip:port
    dir: Path
    config_path: Path
    log_path: Path
    bind_dn: str = ""  # the server entry its sentinel binds as
    resources: tuple[str, ...] = ()
    timeouts: Mapping[str, Any] = field(default_factory=dict)
    http: str = ""  # where its sentinel serves /metrics, /health, /app/<tag> (ip:port)
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and alive(self.pid)


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class LabCluster:
    """N servers on this machine; see the module docstring. Context manager."""

    def __init__(
        self,
        n: int = 3,
        base_dir: str | Path | None = None,
        *,
        die_with_parent: bool = True,
        timeouts: Mapping[str, Any] | None = None,
        intervals: float | Mapping[str, float] | None = None,
        resources: Mapping[str, Sequence[str]] | None = None,
        log_level: str = "info",
        disk: bool = True,
        network: Callable[[Sequence[str]], Network] | None = None,
        witness: bool = False,
        witness_interval: float | None = None,
        witness_timeout: float | None = None,
        sentinel_wrapper: Sequence[str] = (),
        operator_servers: Sequence[str] = (),
        http: bool = False,
    ) -> None:
        """``sentinel_wrapper``: arguments put between the Python interpreter and
        ``-m ndsclust`` when a sentinel starts (a script that adjusts the process before it
        runs the module); ``{dir}`` and ``{name}`` in them become the server's directory
        and name. ``operator_servers``: servers whose identity joins the operators group
        (see the module docstring). ``http``: every sentinel serves its HTTP face
        (``http.listen``), on a free loopback port, or on its dir address with ``network``."""
        if not 1 <= n <= len(SERVER_NAMES):
            raise LabError(f"a lab has 1 to {len(SERVER_NAMES)} servers, not {n}")
        self.n = n
        self.die_with_parent = die_with_parent
        self.timeouts = dict(timeouts or {})
        self.intervals = channel_intervals(intervals)
        self.witness_interval = WITNESS_INTERVAL if witness_interval is None else witness_interval
        self.witness_timeout = WITNESS_TIMEOUT if witness_timeout is None else witness_timeout
        self.resources = {k: tuple(v) for k, v in (resources or {}).items()}
        self.log_level = log_level
        self.disk = disk
        self.sentinel_wrapper = tuple(sentinel_wrapper)
        self.operator_servers = frozenset(operator_servers)
        self.want_http = http
        self.state_extra: dict[str, Any] = {}  # more keys of lab.json (the console's)
        names = SERVER_NAMES[:n]
        self.net = network(names) if network is not None else None
        net = self.net
        # A lab directory is thrown away: no fsync per commit (render.provider_ldif, durable).
        # With a network, each provider listens on its server's dir address, in its namespace.
        self.directory = DirectoryCluster(
            n=n,
            base_dir=base_dir,
            die_with_parent=die_with_parent,
            durable=False,
            hosts=[net.address(name, "dir") for name in names] if net else None,
            exec_prefixes=[net.exec_prefix(name) for name in names] if net else None,
            tls=True,
        )
        self.want_witness = witness
        self.witness: Witness | None = None
        self.servers: dict[ServerName, LabServer] = {}
        self._store: Store | None = None

    # -- layout ---------------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        return self.directory.base_dir

    @property
    def ledger(self) -> Path:
        return self.base_dir / "ledger"

    @property
    def disk_path(self) -> Path:
        """The shared disk-pulse file (claims 13, 44)."""
        return self.base_dir / "disk.pulse"

    @property
    def names(self) -> list[ServerName]:
        return list(self.servers)

    def store(self) -> Store:
        if self._store is None:
            d = self.directory
            self._store = Store(
                Providers(d.uris, d.admin_credentials(), timeout=1.0),
                d.suffix,
                pulse_base=d.pulse_suffix,
                op_deadline=15.0,
            )
        return self._store

    def __enter__(self) -> LabCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start / stop -----------------------------------------------------------------------

    def start(self) -> float:
        """Providers, base entries, server entries, sentinels; returns seconds taken. On
        failure everything started so far is stopped."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def lan_address(self, i: int, port: int) -> str:
        if self.net is not None:
            return f"{self.net.address(SERVER_NAMES[i], 'lan')}:{NETNS_LAN_PORT}"
        return f"127.0.1.{i + 1}:{port}"

    def write_cluster_key(self) -> None:  # the heartbeat key every lab sentinel shares
        key = self.base_dir / "cluster.key"
        key.write_bytes(secrets.token_hex(32).encode())
        key.chmod(0o600)

    def add_server(self, index: int, name: ServerName, port: int) -> LabServer:
        """Server ``name``: its directory, identity (an operator when in ``operator_servers``)
        and that identity's 0600 password file."""
        sdir = self.base_dir / name
        sdir.mkdir(exist_ok=True)
        server = LabServer(
            name=name,
            index=index,
            address=self.lan_address(index, port),
            dir=sdir,
            config_path=sdir / "sentinel.yaml",
            log_path=sdir / "sentinel.log",
            resources=self.resources.get(name, ()),
        )
        self.servers[name] = server
        server.bind_dn, password = self.directory.add_server_identity(
            name, (server.address,), server.resources
        )
        if name in self.operator_servers:
            self.directory.add_operator(server.bind_dn)
        pw_file = self.password_file(server)
        pw_file.touch(0o600)
        pw_file.write_text(password)
        return server

    def _start(self) -> float:
        began = time.monotonic()
        if self.net is not None:
            self.net.start()
        self.directory.start()
        if self.want_witness:
            self.witness = Witness(self.net.root_address("dir") if self.net else "127.0.0.1")
        ports = free_ports(["127.0.0.1"] * self.n)
        self.write_cluster_key()
        pw = self.base_dir / "admin.pw"
        pw.touch(0o600)
        pw.write_text(self.directory.admin_password)
        self.store().ensure_base()
        for i in range(self.n):
            self.add_server(i, ServerName(SERVER_NAMES[i]), ports[i])
        if self.want_http:
            self.assign_http()
        for server in self.servers.values():
            self.write_config(server)
        for server in self.servers.values():
            self.start_sentinel(server.name)
        self.save_state()
        return time.monotonic() - began

    def assign_http(self) -> None:
        """An HTTP address for every sentinel (``http``)."""
        if self.net is not None:
            for s in self.servers.values():
                s.http = f"{self.net.address(s.name, 'dir')}:{NETNS_HTTP_PORT}"
            return
        for s, port in zip(self.servers.values(), free_ports(["127.0.0.1"] * self.n), strict=True):
            s.http = f"127.0.0.1:{port}"

    def password_file(self, server: LabServer) -> Path:
        """The password of the server's identity (directory.password_file)."""
        return server.dir / "directory.pw"

    def sentinel_config(self, server: LabServer) -> dict[str, Any]:
        """The configuration ``server``'s sentinel runs with (``ndsclust.lab.sentinel_config``)."""
        witness = None
        if self.witness is not None:
            witness = {
                "address": self.witness.address,
                "interval": self.witness_interval,
                "timeout": self.witness_timeout,
            }
        return sentinel_config(
            server,
            self.directory,
            names=self.names,
            key_file=self.base_dir / "cluster.key",
            password_file=self.password_file(server),
            disk_path=self.disk_path if self.disk else None,
            intervals=self.intervals,
            witness=witness,
            timeouts=self.timeouts,
            log_level=self.log_level,
            plain_http=self.net is not None,
        )

    def channel_interval(self, channel: str) -> float | None:
        """The interval the lab sets for a heartbeat channel (None: the sentinel's default)."""
        return self.intervals.get(channel)

    def write_config(self, server: LabServer) -> None:
        server.config_path.write_text(yaml.safe_dump(self.sentinel_config(server), sort_keys=False))

    def start_sentinel(self, name: ServerName) -> None:
        server = self.servers[name]
        if server.running:
            raise LabError(f"the sentinel of {name} is already running (pid {server.pid})")
        prefix = self.net.exec_prefix(name) if self.net is not None else ()
        wrapper = [a.format(dir=server.dir, name=name) for a in self.sentinel_wrapper]
        log = open(server.log_path, "ab")  # noqa: SIM115 (the child keeps it; closed below)
        try:
            server.process = subprocess.Popen(
                [
                    *prefix,
                    sys.executable,
                    *wrapper,
                    "-m",
                    "ndsclust",
                    "sentinel",
                    "run",
                    "--config",
                    str(server.config_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=str(server.dir),
                preexec_fn=die_with(os.getpid()) if self.die_with_parent else None,
                start_new_session=True,
            )
        finally:
            log.close()
        server.pid = server.process.pid
        self.save_state()

    def stop_sentinel(self, name: ServerName, timeout: float = 30.0) -> None:
        """SIGTERM: the sentinel unloads its programs, hands them on and exits."""
        server = self.servers[name]
        if not server.running or server.pid is None:
            return
        os.kill(server.pid, signal.SIGTERM)
        wait_until(
            lambda: not server.running,
            timeout=timeout,
            what=f"sentinel of {name} to exit after SIGTERM",
        )

    def kill_sentinel(self, name: ServerName, sig: int = signal.SIGKILL) -> None:
        server = self.servers[name]
        if server.pid is not None and server.running:
            os.kill(server.pid, sig)
            if sig == signal.SIGKILL:
                self._reap(server)

    def kill_server(self, name: ServerName) -> float:
        """SIGKILL the server's sentinel, its guards and programs and its slapd at once
        (and take its links down, with ``network``); returns the CLOCK_MONOTONIC time of
        the kill."""
        server = self.servers[name]
        pids = []
        if server.pid is not None and server.running:
            pids = [server.pid, *descendants(server.pid)]
        provider = self.directory.providers[server.index]
        if provider.running and provider.pid is not None:
            pids.append(provider.pid)
        t = time.monotonic()
        _kill(pids)
        if self.net is not None:
            self.net.link_down(name)
        self._reap(server)
        provider.kill()
        return t

    def restart_server(self, name: ServerName) -> None:
        """Bring a killed server back: its links (with ``network``), its slapd, then its
        sentinel."""
        server = self.servers[name]
        provider = self.directory.providers[server.index]
        if self.net is not None:
            self.net.link_up(name)
        if not provider.running:
            provider.start()
        self.start_sentinel(name)

    def _reap(self, server: LabServer) -> None:
        if server.process is not None:
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        """Stop everything this lab started and remove its directory (idempotent)."""
        for server in self.servers.values():
            if server.pid is not None and server.running:
                _kill([server.pid, *descendants(server.pid)])
                self._reap(server)
        if self._store is not None:
            self._store.close()
            self._store = None
        try:
            self.directory.stop()
        finally:
            if self.witness is not None:
                self.witness.close()
                self.witness = None
            if self.net is not None:
                self.net.teardown()

    def save_state(self) -> None:
        """``lab.json``: every server's pid, addresses, files and HTTP face."""
        state: dict[str, Any] = {
            "servers": {
                s.name: {
                    "pid": s.pid,
                    "address": s.address,
                    "index": s.index,
                    "config": str(s.config_path),
                    "log": str(s.log_path),
                    **({"http": f"http://{s.http}"} if s.http else {}),
                }
                for s in self.servers.values()
            },
            **self.state_extra,
        }
        (self.base_dir / "lab.json").write_text(json.dumps(state, indent=2))

    # -- applications -----------------------------------------------------------------------

    def sample_command(self, tag: str, *extra: str) -> tuple[str, ...]:
        # The sample program needs only the standard library: without the site module (and
        # the package finders it loads) Python starts it in about 15 ms instead of 75, so a
        # failover timed to its first ledger line times ndsclust rather than the interpreter.
        return (
            sys.executable,
            "-S",
            str(SAMPLE_APP),
            "--ledger",
            str(self.ledger),
            "--tag",
            tag,
            *extra,
        )

    def add_app(
        self,
        tag: str,
        primary: str,
        backups: Iterable[str],
        *,
        auto_recover: bool = True,
        resources: Iterable[str] = (),
        extra: Sequence[str] = (),
        host: str | bool | None = True,
        app_type: AppType = AppType.CAPABLE,
    ) -> App:
        """Register a sample program; by default its host is its primary (load at once)."""
        h = ServerName(primary) if host is True else (ServerName(host) if host else None)
        app = App(
            tag=Tag(tag),
            type=app_type,
            command=self.sample_command(tag, *extra),
            primary=ServerName(primary),
            backups=tuple(ServerName(b) for b in backups),
            host=h,
            resources=frozenset(resources),
            auto_recover=auto_recover,
            state=StateValue(AppState.LOADING if h else AppState.STOPPED),
        )
        self.store().add_app(app)
        return app

    def ledger_lines(self) -> list[str]:
        try:
            return self.ledger.read_text().splitlines()
        except FileNotFoundError:
            return []

    def running_on(self, tag: str) -> set[str]:
        """Servers whose copy of ``tag`` has started and not stopped, by the ledger
        (a killed copy shows until its server's lives are closed by the checker)."""
        live: dict[tuple[str, str], bool] = {}
        for line in self.ledger_lines():
            parts = line.split()
            if len(parts) == 5 and parts[2] == tag:
                key = (parts[0], parts[1])
                if parts[3] == "start":
                    live[key] = True
                elif parts[3] == "stop":
                    live[key] = False
        return {srv for (srv, pid), up in live.items() if up and alive(int(pid))}

    def first_start_after(self, tag: str, t: float, server: str | None = None) -> float | None:
        for line in self.ledger_lines():
            parts = line.split()
            if (
                len(parts) == 5
                and parts[2] == tag
                and parts[3] == "start"
                and (server is None or parts[0] == server)
                and float(parts[4]) >= t
            ):
                return float(parts[4])
        return None

    def wait_running(self, tag: str, server: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: self.running_on(tag) == {server},
            timeout=timeout,
            what=f"{tag} running on {server} only (now: {sorted(self.running_on(tag))})",
        )

    def app(self, tag: str) -> App:
        return self.store().app(tag)

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(
                self.servers[ServerName(name)].log_path.read_text().splitlines()[-lines:]
            )
        except FileNotFoundError:
            return ""

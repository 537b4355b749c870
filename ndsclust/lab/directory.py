"""A local directory cluster: N real slapd providers in multi-provider delta-syncrepl.

Used by the integration fixtures, ``ndsclust lab``, the benchmarks and the fault harness.
Each provider is a foreground ``slapd -d 0`` child with its own cn=config and data
directories under ``base_dir/p<index>``, listening on ``ldap://HOST:PORT`` (``ldaps://``
with ``tls``) and on an ldapi socket. Everything the lab itself does over LDAP (readiness, replication state, contextCSN
reads) goes through the ldapi socket, so it also works when a provider runs inside a
network namespace this process cannot route to.

Databases per provider, in this order (docs/design.md section 2, docs/platform.md facts 1-4):

1. ``cn=accesslog``: the change log that delta-syncrepl replays. It comes before the main
   database, and the replication identity is its root DN, so a catch-up is never capped by
   size limits or ACLs.
2. the main suffix: cluster data, delta-syncrepl from every other provider, so concurrent
   edits of different attributes of one entry merge instead of overwriting each other.
3. the pulse suffix: one frequently rewritten pulse entry per server (patent claim 44),
   plain syncrepl, no accesslog, no fsync, so pulses never flood the accesslog.
4. ``cn=Monitor``: the sync phase of every replication agreement, which tells when the
   cluster is really replicating (``wait_replicating``).

One identity, ``cn=admin,<suffix>``, is the root DN of every database: it binds against the
main database (the only one holding its password) and is root in the others too, so a
client needs one bind for cluster data and pulses alike.

Two modes. Plain (the default, for the integration tests of the store and the watch): the
configuration above generated here, ``ldap://`` without TLS, no ACLs, replication as the
admin. With ``tls=True`` (what ``LabCluster`` uses) every provider is rendered by
``ndsclust.site`` from the templates deploy/ ships: a lab CA made with ``ndsclust.pki``
under ``base_dir/pki``, one certificate per provider naming the address it listens on,
``ldaps://`` only, replication over TLS as the replication identity, the shipped ACLs and
groups, and the seed entries of deploy/ (cluster base, operators, auditors). The admin
then stays root of every database for the lab's own bookkeeping; sentinels bind as their
server entries (``add_server_identity``).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import ldap3
from ldap3.core.exceptions import LDAPBindError, LDAPException

from ndsclust import pki, schema, site
from ndsclust.errors import NdsclustError
from ndsclust.ldapstore.connection import Credentials, close_socket
from ndsclust.ldapstore.replication import Tree, search_tree

T = TypeVar("T")

STATE_FILE = "cluster.json"
STANDARD_SCHEMAS = ("core", "cosine", "inetorgperson")
SCHEMA_DIR = Path("/etc/ldap/schema")
ACCESSLOG_SUFFIX = "cn=accesslog"
MAIN_DB = "olcDatabase={2}mdb,cn=config"
PULSE_DB = "olcDatabase={3}mdb,cn=config"
# Root over ldapi (SASL EXTERNAL) manages cn=config, e.g. loads a schema on a live provider.
LDAPI_ROOT = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"
# Attributes the store searches by equality; indexed only when the ndsclust schema is loaded.
NDSCLUST_EQ_INDEXES = (
    "ndsclustTag",
    "ndsclustHostServer",
    "ndsclustPrimaryServer",
    "ndsclustBackupServer",
    "ndsclustEventTime",
)
MAIN_RID_BASE = 100  # rid = base + server id of the provider replicated from
PULSE_RID_BASE = 200
MAX_PROVIDERS = 99  # keeps every rid within syncrepl's three decimal digits
SUN_PATH_MAX = 107  # AF_UNIX path limit, minus the terminating NUL
PR_SET_PDEATHSIG = 1
LOG_TAIL_LINES = 20
PKI_DIR = "pki"
LAB_CLUSTER_NAME = "lab"
SECRET_BYTES = 24  # random passwords: 32 url-safe characters


class LabError(NdsclustError):
    """The lab directory cluster could not be built, started, reached or stopped."""


class LabTimeout(LabError):
    """A bounded wait of the lab ran out."""


def bound(conn: ldap3.Connection) -> ldap3.Connection:
    """``conn`` opened and bound (simple with its user, anonymous without); raises
    LDAPException, with the socket closed, when it cannot be."""
    try:
        conn.open()
        if not conn.bind():
            raise LDAPBindError(f"bind not successful - {conn.result.get('description')}")
    except BaseException:
        close_socket(conn)
        raise
    return conn


def wait_until(
    cond: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, what: str = "condition"
) -> T:
    """Call ``cond`` until it returns something truthy and return that; raise LabTimeout
    naming ``what`` when ``timeout`` seconds pass first. ``cond`` is called at least once,
    and once more at the deadline, so a slow poll cannot miss its last chance."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        now = time.monotonic()
        if now >= deadline:
            raise LabTimeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, deadline - now))


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise LabError(f"{name} not found; install the slapd and ldap-utils packages")
    return found


def _die_with(parent: int, libc: ctypes.CDLL) -> Callable[[], None]:
    """preexec_fn: SIGKILL the child when the thread that spawned it exits, so an
    interrupted test run cannot leave a slapd behind. The getppid() check closes the race
    of the parent dying between fork and prctl."""

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def _proc_state(pid: int) -> str | None:
    """The state letter in /proc/PID/stat, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2 :].split(" ", 1)[0]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return raw.decode(errors="replace").split("\0")


def _server_port_range() -> range:
    """Ports below the kernel's ephemeral range. A port there cannot be taken by some
    client's outgoing connection between our choice and slapd's bind, nor while a
    provider is down and its peers keep reconnecting to it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, max(low, 10001))


def _hold_port(host: str, ports: range, rng: secrets.SystemRandom) -> socket.socket:
    """A socket bound to a free port of ``host``, or of loopback when this process cannot
    bind ``host`` (an address inside another network namespace)."""
    for addr in (host, "127.0.0.1"):
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        for port in [rng.choice(ports) for _ in range(50)] + [0]:
            s = socket.socket(family)
            try:
                s.bind((addr, port))
                return s
            except OSError:
                s.close()
    raise LabError(f"found no free TCP port for {host}")


def free_ports(hosts: Sequence[str]) -> list[int]:
    """One free TCP port per host, random, and distinct for each address: every socket is
    held until all are chosen."""
    ports = _server_port_range()
    rng = secrets.SystemRandom()
    held: list[socket.socket] = []
    try:
        for host in hosts:
            held.append(_hold_port(host, ports, rng))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def _host_url(host: str, port: int, scheme: str = "ldap") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _decode(values: Sequence[bytes]) -> tuple[str, ...]:
    return tuple(sorted(v.decode("utf-8", errors="replace") for v in values))


class Provider:
    """One slapd provider: its directories, its process, and the signals sent to it."""

    def __init__(
        self,
        index: int,
        host: str,
        port: int,
        dir: Path,
        exec_prefix: Sequence[str] = (),
        die_with_parent: bool = True,
        pid: int | None = None,
        log_level: str = "0",
        tls: bool = False,
    ) -> None:
        """``tls``: listen on ``ldaps://`` instead of ``ldap://``."""
        self.index = index
        self.server_id = index + 1
        self.host = host
        self.port = port
        self.tls = tls
        self.url = _host_url(host, port, "ldaps" if tls else "ldap")
        self.dir = dir
        self.conf_dir = dir / "slapd.d"
        self.log_path = dir / "slapd.log"
        self.ldapi_path = dir / "ldapi"
        self.ldapi_url = "ldapi://" + quote(str(self.ldapi_path), safe="")
        self.exec_prefix = tuple(exec_prefix)
        self.die_with_parent = die_with_parent
        self.log_level = log_level
        self.pid = pid
        self.paused = False
        self.on_spawn: Callable[[Provider], None] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        if len(str(self.ldapi_path)) > SUN_PATH_MAX:
            raise LabError(
                f"provider {index}: ldapi socket path {self.ldapi_path} is longer "
                f"than {SUN_PATH_MAX} bytes; use a shorter base_dir"
            )

    def __repr__(self) -> str:
        return f"Provider(index={self.index}, url={self.url!r}, pid={self.pid})"

    @property
    def name(self) -> str:
        return f"provider {self.index} ({self.url})"

    @property
    def running(self) -> bool:
        """The slapd process exists (it may be paused)."""
        if self.pid is None:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        # A pid from a state file may have been reused: only a live slapd serving this
        # provider's config directory is ours.
        if _proc_state(self.pid) in (None, "Z", "X"):
            return False
        cmd = _cmdline(self.pid)
        return any(Path(a).name == "slapd" for a in cmd) and str(self.conf_dir) in cmd

    def command(self) -> list[str]:
        # -d keeps slapd in the foreground (the child PID is slapd's) and sends its debug
        # output, the only log slapd 2.5 writes without syslog, to the log file.
        debug = [a for level in self.log_level.split() for a in ("-d", level)]
        return [
            *self.exec_prefix,
            _tool("slapd"),
            *debug,
            "-F",
            str(self.conf_dir),
            "-h",
            f"{self.url} {self.ldapi_url}",
        ]

    def spawn(self) -> None:
        """Launch slapd from the existing config and data without waiting for it. With
        ``die_with_parent`` slapd dies with the calling *thread*: spawn from a thread that
        lives as long as the provider should (normally the main thread)."""
        if self.running:
            raise LabError(f"{self.name} is already running as pid {self.pid}")
        if not self.conf_dir.is_dir():
            raise LabError(
                f"{self.name}: no configuration in {self.conf_dir}; "
                "the cluster was stopped or never built"
            )
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                preexec_fn=(
                    _die_with(os.getpid(), ctypes.CDLL(None, use_errno=True))
                    if self.die_with_parent
                    else None
                ),
                # A cluster meant to outlive its creator must not get the terminal's Ctrl-C.
                start_new_session=not self.die_with_parent,
            )
        self.pid = self._proc.pid
        self.paused = False
        if self.on_spawn is not None:
            self.on_spawn(self)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        tail = text.splitlines()[-lines:]
        return "\n".join(tail) if tail else "(log is empty)"

    def _answers(self) -> bool:
        try:
            conn = bound(
                ldap3.Connection(
                    ldap3.Server(self.ldapi_url, connect_timeout=1, get_info=ldap3.NONE),
                    receive_timeout=1,
                )
            )
        except LDAPException:
            return False
        try:
            return bool(
                conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["namingContexts"])
            )
        except LDAPException:
            return False
        finally:
            conn.unbind()

    def wait_answering(self, deadline: float) -> None:
        """Block until slapd answers a root DSE search on its ldapi socket; raise LabError
        with the tail of its log if it exits first or the monotonic ``deadline`` passes."""
        while True:
            if not self.running:
                raise LabError(
                    f"{self.name} exited during start-up; its log "
                    f"({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if self._answers():
                return
            if time.monotonic() >= deadline:
                raise LabTimeout(
                    f"{self.name} (pid {self.pid}) did not answer in time; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            time.sleep(0.005)

    def start(self, timeout: float = 10.0) -> None:
        """Start or restart slapd from its existing config and data (also after SIGKILL:
        mdb needs no recovery and slapd replaces a stale ldapi socket)."""
        self.spawn()
        self.wait_answering(time.monotonic() + timeout)

    def kill(self, sig: int = signal.SIGKILL, wait: bool = True) -> None:
        """Send ``sig`` to slapd. With ``wait``, a SIGKILL is also waited for, so the port
        and the data files are free when this returns."""
        if self.pid is None or not self.running:
            return
        if self._proc is not None:
            self._proc.send_signal(sig)
        else:
            os.kill(self.pid, sig)
        if sig == signal.SIGKILL and wait and not self.wait_exit(5.0):
            raise LabError(f"{self.name} (pid {self.pid}) survived SIGKILL")

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for slapd to be gone (and reaped, when it is our
        child); True when it is."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        else:
            try:
                wait_until(lambda: not self.running, timeout, what=f"{self.name} to exit")
            except LabTimeout:
                return False
        self.paused = False
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if slapd is still there after
        ``timeout`` seconds. A clean shutdown, like any cn=config write, first waits for
        the replication tasks to yield, which takes up to the agreements' ``timeout=3``
        right after they received data."""
        if not self.running:
            return
        self.kill(signal.SIGTERM)
        if self.paused:
            self.resume()  # a stopped process acts on SIGTERM only once continued
        if not self.wait_exit(timeout):
            self.kill(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: slapd keeps its connections open but answers nothing, like a hung host."""
        self.kill(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.kill(signal.SIGCONT)
        self.paused = False


def _entry(dn: str, **attrs: str | Sequence[str]) -> str:
    lines = [f"dn: {dn}"]
    for attr, value in attrs.items():
        lines += [f"{attr}: {v}" for v in ([value] if isinstance(value, str) else value)]
    return "\n".join(lines)


def _base_entry(dn: str) -> tuple[list[str], dict[str, str]]:
    """Object classes and attributes of a naming context entry: dc=... as dcObject +
    organization, o=... as organization."""
    attr, _, value = dn.split(",", 1)[0].partition("=")
    attr = attr.strip().lower()
    if attr == "dc":
        return ["dcObject", "organization"], {"dc": value, "o": value}
    if attr == "o":
        return ["organization"], {"o": value}
    raise LabError(f"suffix {dn!r}: its first RDN must be dc=... or o=...")


def _config_managers() -> list[str]:
    """Identities that manage cn=config over ldapi (SASL EXTERNAL): root, and the user
    running the lab when that is not root."""
    own = f"gidNumber={os.getgid()}+uidNumber={os.getuid()},cn=peercred,cn=external,cn=auth"
    return [LDAPI_ROOT] if own == LDAPI_ROOT else [LDAPI_ROOT, own]


def replication_config(
    *,
    peers: Sequence[tuple[int, str]],
    suffix: str,
    pulse_suffix: str,
    admin_dn: str,
    admin_password: str,
    retry: str,
) -> dict[str, dict[str, list[str]]]:
    """The replication attributes of one provider's main and pulse database entries: one
    syncrepl agreement per other provider (``peers``: server id, ldap URL) and
    multi-provider mode. Main: delta-syncrepl from the peer's accesslog; pulse: plain."""
    if not peers:
        return {}
    common = (
        f'bindmethod=simple binddn="{admin_dn}" credentials="{admin_password}" '
        f'type=refreshAndPersist retry="{retry}" timeout=3 network-timeout=2 '
        f"keepalive=30:3:5"
    )
    main = [
        f"{{{i}}}rid={MAIN_RID_BASE + sid:03d} provider={url} {common} "
        f'searchbase="{suffix}" syncdata=accesslog logbase="{ACCESSLOG_SUFFIX}" '
        f'logfilter="(&(objectClass=auditWriteObject)(reqResult=0))"'
        for i, (sid, url) in enumerate(peers)
    ]
    pulse = [
        f'{{{i}}}rid={PULSE_RID_BASE + sid:03d} provider={url} {common} searchbase="{pulse_suffix}"'
        for i, (sid, url) in enumerate(peers)
    ]
    return {
        MAIN_DB: {"olcSyncrepl": main, "olcMultiProvider": ["TRUE"]},
        PULSE_DB: {"olcSyncrepl": pulse, "olcMultiProvider": ["TRUE"]},
    }


def provider_config(
    *,
    server_id: int,
    dir: Path,
    peers: Sequence[tuple[int, str]],
    suffix: str,
    pulse_suffix: str,
    admin_dn: str,
    admin_password: str,
    retry: str,
    accesslog_purge: str,
    with_schema: bool,
    durable: bool = True,
) -> str:
    """The cn=config LDIF of one provider, for ``slapadd -n0``. ``peers`` are the
    (server id, ldap URL) of every other provider. It follows a measured working
    delta-syncrepl multi-provider setup (docs/platform.md facts 1-2). ``durable=False``
    turns off the fsync of every commit (``olcDbNoSync``) for throwaway lab and test
    directories: a thousand applications failing over cost three writes each, and with one
    fsync per commit on each of three providers the disk, not ndsclust, sets the pace
    (deploy/ keeps it on)."""
    nosync = {} if durable else {"olcDbNoSync": "TRUE"}
    replication = replication_config(
        peers=peers,
        suffix=suffix,
        pulse_suffix=pulse_suffix,
        admin_dn=admin_dn,
        admin_password=admin_password,
        retry=retry,
    )
    limits = f'dn.exact="{admin_dn}" time=unlimited size=unlimited'
    config_access = (
        "{0}to * "
        + " ".join(f"by dn.exact={dn} manage" for dn in _config_managers())
        + " by * break"
    )
    main_index = ["objectClass eq", "entryCSN eq", "entryUUID eq"]
    if with_schema:
        main_index += [f"{a} eq" for a in NDSCLUST_EQ_INDEXES]
    blocks = [
        _entry(
            "cn=config",
            objectClass="olcGlobal",
            cn="config",
            olcServerID=str(server_id),
            olcPidFile=str(dir / "slapd.pid"),
            olcArgsFile=str(dir / "slapd.args"),
            olcLogLevel="none",
        ),
        _entry(
            "cn=module{0},cn=config",
            objectClass="olcModuleList",
            cn="module{0}",
            olcModulePath="/usr/lib/ldap",
            olcModuleLoad=["back_mdb", "back_monitor", "syncprov", "accesslog"],
        ),
        _entry("cn=schema,cn=config", objectClass="olcSchemaConfig", cn="schema"),
        *(f"include: file://{SCHEMA_DIR / name}.ldif" for name in STANDARD_SCHEMAS),
    ]
    if with_schema:
        blocks.append(schema.render_ldif().strip())
    blocks += [
        _entry(
            "olcDatabase={-1}frontend,cn=config",
            objectClass=["olcDatabaseConfig", "olcFrontendConfig"],
            olcDatabase="{-1}frontend",
        ),
        _entry(
            "olcDatabase={0}config,cn=config",
            objectClass="olcDatabaseConfig",
            olcDatabase="{0}config",
            olcAccess=config_access,
        ),
        # Before the main database (docs/platform.md fact 2): delta-syncrepl reads it as the
        # replication identity, which must not meet the default size limit of 500 during a catch-up.
        _entry(
            "olcDatabase={1}mdb,cn=config",
            objectClass=["olcDatabaseConfig", "olcMdbConfig"],
            olcDatabase="{1}mdb",
            olcDbDirectory=str(dir / "accesslog"),
            olcSuffix=ACCESSLOG_SUFFIX,
            olcRootDN=admin_dn,
            olcDbMaxSize="1073741824",
            olcDbIndex=["default eq", "entryCSN,objectClass,reqEnd,reqResult,reqStart,reqDN"],
            olcLimits=limits,
            **nosync,
        ),
        _entry(
            "olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config",
            objectClass=["olcOverlayConfig", "olcSyncProvConfig"],
            olcOverlay="{0}syncprov",
            olcSpNoPresent="TRUE",
            olcSpReloadHint="TRUE",
        ),
        _entry(
            MAIN_DB,
            objectClass=["olcDatabaseConfig", "olcMdbConfig"],
            olcDatabase="{2}mdb",
            olcDbDirectory=str(dir / "db"),
            olcSuffix=suffix,
            olcRootDN=admin_dn,
            olcRootPW=admin_password,
            olcDbMaxSize="1073741824",
            olcDbIndex=main_index,
            olcLimits=limits,
            **nosync,
            **replication.get(MAIN_DB, {}),
        ),
        _entry(
            f"olcOverlay={{0}}syncprov,{MAIN_DB}",
            objectClass=["olcOverlayConfig", "olcSyncProvConfig"],
            olcOverlay="{0}syncprov",
            olcSpCheckpoint="100 10",
            olcSpSessionLog="10000",
        ),
        _entry(
            f"olcOverlay={{1}}accesslog,{MAIN_DB}",
            objectClass=["olcOverlayConfig", "olcAccessLogConfig"],
            olcOverlay="{1}accesslog",
            olcAccessLogDB=ACCESSLOG_SUFFIX,
            olcAccessLogOps="writes",
            olcAccessLogSuccess="TRUE",
            olcAccessLogPurge=accesslog_purge,
        ),
        # Pulses (claim 44) are rewritten every few seconds, each by one writer: whole-entry
        # syncrepl is exact for them and keeps them out of the accesslog; losing the last
        # pulses in a crash is harmless, so durability is off.
        _entry(
            PULSE_DB,
            objectClass=["olcDatabaseConfig", "olcMdbConfig"],
            olcDatabase="{3}mdb",
            olcDbDirectory=str(dir / "pulse"),
            olcSuffix=pulse_suffix,
            olcRootDN=admin_dn,
            olcDbMaxSize="67108864",
            olcDbNoSync="TRUE",
            olcDbIndex=["objectClass eq", "entryCSN eq", "entryUUID eq"],
            olcLimits=limits,
            **replication.get(PULSE_DB, {}),
        ),
        _entry(
            f"olcOverlay={{0}}syncprov,{PULSE_DB}",
            objectClass=["olcOverlayConfig", "olcSyncProvConfig"],
            olcOverlay="{0}syncprov",
            olcSpCheckpoint="100 10",
            olcSpSessionLog="1000",
        ),
        _entry(
            "olcDatabase={4}monitor,cn=config",
            objectClass="olcDatabaseConfig",
            olcDatabase="{4}monitor",
            olcRootDN=admin_dn,
            olcAccess="{0}to * by * none",
        ),
    ]
    return "\n\n".join(blocks) + "\n"


def base_entry_ldif(dn: str, admin_dn: str, server_id: int, now: datetime) -> str:
    """A naming context entry with every operational attribute fixed (entryUUID, entryCSN
    of ``server_id`` at ``now``), so that loading it into each provider gives the same entry
    everywhere, exactly as if it had replicated."""
    classes, attrs = _base_entry(dn)
    stamp = now.strftime("%Y%m%d%H%M%SZ")
    return (
        _entry(
            dn,
            objectClass=classes,
            **attrs,
            structuralObjectClass=classes[-1],
            entryUUID=str(uuid.uuid4()),
            creatorsName=admin_dn,
            createTimestamp=stamp,
            modifiersName=admin_dn,
            modifyTimestamp=stamp,
            entryCSN=f"{now.strftime('%Y%m%d%H%M%S.%f')}Z#000000#{server_id:03x}#000000",
        )
        + "\n"
    )


def _slapadd_all(jobs: Sequence[tuple[Provider, Sequence[str]]]) -> None:
    """Run ``slapadd -F CONFDIR ARGS`` for every (provider, ARGS) at once; raise LabError
    with the output of each one that failed."""
    procs = [
        (
            p,
            args,
            subprocess.Popen(
                [_tool("slapadd"), "-F", str(p.conf_dir), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            ),
        )
        for p, args in jobs
    ]
    failures = []
    for p, args, proc in procs:
        out, _ = proc.communicate(timeout=60)
        if proc.returncode != 0:
            failures.append(
                f"{p.name}: slapadd {' '.join(args)} exited {proc.returncode}:\n"
                f"{out.decode(errors='replace').strip()}"
            )
    if failures:
        raise LabError("could not load the providers\n" + "\n".join(failures))


def _cert_stem(p: Provider) -> str:
    """File stem (and certificate subject name) of a provider's TLS certificate."""
    return f"provider{p.server_id}"


def _peer_of(rid: int) -> int:
    """Server id of the provider an agreement replicates from (see MAIN_RID_BASE)."""
    return rid - (PULSE_RID_BASE if rid >= PULSE_RID_BASE else MAIN_RID_BASE)


class DirectoryCluster:
    """N providers replicating both suffixes to each other (multi-provider).

    ``start()`` builds and starts them; ``stop()`` kills them and removes ``base_dir``. With
    ``die_with_parent`` (tests) every slapd dies with the thread that started it and an
    atexit hook stops the cluster; without it (``ndsclust lab up``) the cluster outlives its
    creator, and another process takes it over with ``DirectoryCluster.attach(base_dir)``.
    """

    def __init__(
        self,
        n: int = 3,
        base_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        hosts: Sequence[str] | None = None,
        suffix: str = "dc=ndsclust,dc=test",
        pulse_suffix: str = "o=ndsclust-pulse",
        admin_password: str | None = None,
        retry: str = "1 +",
        die_with_parent: bool = True,
        accesslog_purge: str = "07+00:00 01+00:00",
        with_schema: bool = True,
        exec_prefixes: Sequence[Sequence[str]] | None = None,
        log_level: str = "0",
        durable: bool = True,
        tls: bool = False,
        replicator_password: str | None = None,
    ) -> None:
        """``base_dir``: a new or empty directory (removed by ``stop()``), default a fresh
        temporary one. ``hosts``: one listen address per provider (default ``host`` for
        all). ``exec_prefixes``: one command prefix per provider, e.g.
        ``("ip", "netns", "exec", "ns1")``. ``log_level``: slapd's ``-d`` level for its log
        file (``0``: start-up errors only; ``"sync stats"`` to debug replication).
        ``tls``: the deploy/ configuration, TLS and ACLs (module docstring); it needs the
        ndsclust schema (``with_schema``)."""
        if not 1 <= n <= MAX_PROVIDERS:
            raise LabError(f"a lab cluster has 1 to {MAX_PROVIDERS} providers, not {n}")
        self._hosts = tuple(hosts) if hosts is not None else (host,) * n
        self._exec_prefixes = (
            tuple(tuple(p) for p in exec_prefixes) if exec_prefixes is not None else ((),) * n
        )
        for what, seq in (("hosts", self._hosts), ("exec_prefixes", self._exec_prefixes)):
            if len(seq) != n:
                raise LabError(f"{what} has {len(seq)} items for {n} providers")
        _base_entry(suffix)
        _base_entry(pulse_suffix)
        if tls and not with_schema:
            raise LabError(
                "tls=True renders the deploy/ configuration, which holds the "
                "ndsclust schema: it needs with_schema=True"
            )
        self.n = n
        self.tls = tls
        self._replicator_password = replicator_password or secrets.token_urlsafe(SECRET_BYTES)
        self._requested_dir = Path(base_dir) if base_dir is not None else None
        self._base_dir: Path | None = None
        self._suffix = suffix
        self._pulse_suffix = pulse_suffix
        self._admin_password = admin_password or secrets.token_urlsafe(18)
        self.retry = retry
        self.die_with_parent = die_with_parent
        self.accesslog_purge = accesslog_purge
        self.with_schema = with_schema
        self.log_level = log_level
        self.durable = durable
        self._providers: tuple[Provider, ...] = ()
        self._started = False
        self._stopped = False

    # -- identity -------------------------------------------------------------------------

    @property
    def providers(self) -> tuple[Provider, ...]:
        return self._providers

    @property
    def uris(self) -> list[str]:
        """URLs of the providers (ldaps:// with ``tls``), in order: the first is the write
        provider."""
        return [p.url for p in self._providers]

    @property
    def suffix(self) -> str:
        return self._suffix

    @property
    def pulse_suffix(self) -> str:
        return self._pulse_suffix

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{self._suffix}"

    @property
    def pulse_admin_dn(self) -> str:
        """Bind DN that writes the pulse suffix: the admin, root there too."""
        return self.admin_dn

    @property
    def admin_password(self) -> str:
        return self._admin_password

    @property
    def base(self) -> str:
        """The cluster base entry: the store's default, ``ou=ndsclust,<suffix>``."""
        return f"ou=ndsclust,{self._suffix}"

    @property
    def ca_file(self) -> str | None:
        """The lab CA's certificate, which signed every provider's (``tls`` only)."""
        return str(self.base_dir / PKI_DIR / pki.CA_CERT) if self.tls else None

    def admin_credentials(self) -> Credentials:
        """How the lab's own admin reaches the providers' URIs: over verified TLS in the
        ``tls`` mode, else plain LDAP (allowed explicitly: it is the plain mode)."""
        return Credentials(
            bind_dn=self.admin_dn,
            password=self._admin_password,
            ca_file=self.ca_file,
            allow_plain=not self.tls,
        )

    def deploy_site(self, provider: Provider | None = None) -> site.Site:
        """The deploy/ site description of this cluster (``tls`` mode), with the TLS files
        of ``provider`` (default the first one): the input of ``ndsclust.site``."""
        if not self.tls:
            raise LabError("a plain lab cluster has no site description; use tls=True")
        p = provider or self._providers[0]
        pki_dir = self.base_dir / PKI_DIR
        stem = _cert_stem(p)
        return site.Site(
            suffix=self._suffix,
            base=self.base,
            pulse_suffix=self._pulse_suffix,
            admin_dn=self.admin_dn,
            replicator_dn=f"cn=replicator,{self._suffix}",
            replicator_password=self._replicator_password,
            providers=tuple(site.Provider(q.server_id, q.url) for q in self._providers),
            # Groups need a member; the admin is root anyway, so membership grants it
            # nothing it does not have.
            operators=(self.admin_dn,),
            auditors=(self.admin_dn,),
            tls=site.Tls(
                str(pki_dir / pki.CA_CERT),
                str(pki_dir / f"{stem}.crt"),
                str(pki_dir / f"{stem}.key"),
            ),
            data_dir=str(p.dir),
            run_dir=str(p.dir),
            module_path="/usr/lib/ldap",
            schema_dir=str(SCHEMA_DIR),
            retry=self.retry,
            accesslog_purge=self.accesslog_purge,
        )

    def add_server_identity(
        self, name: str, addresses: Sequence[str], resources: Sequence[str] = ()
    ) -> tuple[str, str]:
        """Add the entry of server ``name`` as deploy/render.py's ``server`` verb renders
        it: the identity its sentinel binds as, with a new random password. Written as the
        admin on the write provider (its ldapi socket). Returns (DN, password)."""
        password = secrets.token_urlsafe(SECRET_BYTES)
        dn, attrs = site.server_entry(self.deploy_site(), name, addresses, resources, password)
        with self._bound(self._providers[0]) as conn:
            if not conn.add(dn, attributes=attrs):
                raise LabError(
                    f"cannot add {dn}: {conn.result.get('description')} "
                    f"{conn.result.get('message', '')}".rstrip()
                )
        return dn, password

    def add_operator(self, dn: str) -> None:
        """Make ``dn`` a member of the operators group (``tls`` mode), as an admin does with
        ldapmodify: it may then create applications and change their commands."""
        group = f"cn=operators,{self.base}"
        with self._bound(self._providers[0]) as conn:
            if not conn.modify(group, {"member": [(ldap3.MODIFY_ADD, [dn])]}):
                raise LabError(
                    f"cannot add {dn} to {group}: {conn.result.get('description')} "
                    f"{conn.result.get('message', '')}".rstrip()
                )

    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise LabError("the cluster has no directory yet: call start() first")
        return self._base_dir

    def __repr__(self) -> str:
        return f"DirectoryCluster(n={self.n}, uris={self.uris}, base_dir={self._base_dir})"

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> DirectoryCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> float:
        """Build and start every provider, in parallel. Return the seconds from the first
        spawn until every provider answers, holds the base entries and replicates from
        every other one (all agreements in the persist phase). On any failure everything
        started is stopped and removed before the error propagates."""
        if self._started:
            raise LabError("this cluster was already started; build a new DirectoryCluster")
        self._started = True
        try:
            self._base_dir = self._make_base_dir()
            if self.die_with_parent:
                atexit.register(self.stop)
            self._build()
            began = time.monotonic()
            deadline = began + timeout
            for p in self._providers:
                p.spawn()
            for p in self._providers:
                p.wait_answering(deadline)
            self.wait_replicating(deadline - time.monotonic())
            elapsed = time.monotonic() - began
            self.wait_converged(max(deadline - time.monotonic(), 1.0))
            return elapsed
        except BaseException as e:
            try:
                self.stop()
            except LabError as cleanup:
                e.add_note(f"cleaning up also failed: {cleanup}")
            raise

    def _make_base_dir(self) -> Path:
        if self._requested_dir is None:
            return Path(tempfile.mkdtemp(prefix="ndsclust-lab-"))
        d = self._requested_dir.resolve()
        if d.exists() and any(d.iterdir()):
            # stop() removes base_dir: never adopt a directory that holds anything else.
            raise LabError(f"base_dir {d} is not empty; give a new or empty directory")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _build(self) -> None:
        base = self.base_dir
        ports = free_ports(self._hosts)
        self._providers = tuple(
            Provider(
                i,
                self._hosts[i],
                ports[i],
                base / f"p{i}",
                self._exec_prefixes[i],
                self.die_with_parent,
                log_level=self.log_level,
                tls=self.tls,
            )
            for i in range(self.n)
        )
        if self.tls:
            self._build_tls()
            return
        configs = []
        for p in self._providers:
            p.on_spawn = self._provider_spawned
            for sub in ("slapd.d", "accesslog", "db", "pulse"):
                (p.dir / sub).mkdir(parents=True)
            ldif = p.dir / "config.ldif"
            ldif.touch(0o600)  # it holds the admin password
            ldif.write_text(
                provider_config(
                    server_id=p.server_id,
                    dir=p.dir,
                    peers=[(q.server_id, q.url) for q in self._providers if q is not p],
                    suffix=self._suffix,
                    pulse_suffix=self._pulse_suffix,
                    admin_dn=self.admin_dn,
                    admin_password=self._admin_password,
                    retry=self.retry,
                    accesslog_purge=self.accesslog_purge,
                    with_schema=self.with_schema,
                    durable=self.durable,
                )
            )
            configs.append((p, ["-n0", "-l", str(ldif)]))
        _slapadd_all(configs)
        # Every provider gets the same naming context entries (same entryUUID and entryCSN;
        # -w records the contextCSN) before its first start. Created on one provider after
        # start instead, every agreement's first refresh would find no search base on some
        # peer, fail with noSuchObject and wait a retry interval: measured 1.8 s to a
        # replicating cluster instead of 0.8 s.
        now = datetime.now(UTC)
        seeds = []
        for i, dn in enumerate((self._suffix, self._pulse_suffix)):
            path = base / f"base-{i}.ldif"
            path.write_text(base_entry_ldif(dn, self.admin_dn, server_id=1, now=now))
            seeds += [(p, ["-q", "-w", "-b", dn, "-l", str(path)]) for p in self._providers]
        _slapadd_all(seeds)

    def _build_tls(self) -> None:
        """The ``tls`` mode of ``_build``: lab CA and provider certificates, then the
        deploy/ configuration and seed entries, rendered by ``ndsclust.site``."""
        base = self.base_dir
        now = datetime.now(UTC)
        pki_dir = base / PKI_DIR
        pki.init_ca(pki_dir, LAB_CLUSTER_NAME, now)
        configs = []
        for p in self._providers:
            p.on_spawn = self._provider_spawned
            for sub in ("slapd.d", "accesslog", "db", "pulse"):
                (p.dir / sub).mkdir(parents=True)
            # The certificate names the address clients and peers put in its URI.
            pki.issue(pki_dir, _cert_stem(p), now, ips=[p.host])
            ldif = p.dir / "config.ldif"
            ldif.touch(0o600)  # it holds the admin and replication passwords
            ldif.write_text(
                site.provider_ldif(
                    self.deploy_site(p),
                    p.server_id,
                    root_password=self._admin_password,
                    durable=self.durable,
                    config_managers=_config_managers(),
                )
            )
            configs.append((p, ["-n0", "-l", str(ldif)]))
        _slapadd_all(configs)
        seeds = []
        for name, text in site.seed_ldifs(self.deploy_site(), now).items():
            path = base / name
            path.touch(0o600)  # the replication identity's password hash
            path.write_text(text)
            dn = self._suffix if name == "seed-main.ldif" else self._pulse_suffix
            seeds += [(p, ["-q", "-w", "-b", dn, "-l", str(path)]) for p in self._providers]
        _slapadd_all(seeds)

    def stop(self) -> None:
        """Kill every slapd (SIGKILL: lab data is thrown away), wait for each, remove
        base_dir. Idempotent; safe after a partial start and from another process."""
        if self._stopped:
            return
        for p in self._providers:
            p.kill(signal.SIGKILL, wait=False)
        survivors = [f"{p.name} pid {p.pid}" for p in self._providers if not p.wait_exit(5.0)]
        if survivors:
            raise LabError("could not stop " + ", ".join(survivors))
        self._stopped = True
        atexit.unregister(self.stop)
        if self._base_dir is not None and self._base_dir.exists():
            shutil.rmtree(self._base_dir)

    # -- state file, for a cluster that outlives its creator -------------------------------

    def _provider_spawned(self, provider: Provider) -> None:
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "n": self.n,
            "suffix": self._suffix,
            "pulse_suffix": self._pulse_suffix,
            "admin_dn": self.admin_dn,
            "pulse_admin_dn": self.pulse_admin_dn,
            "admin_password": self._admin_password,
            "retry": self.retry,
            "die_with_parent": self.die_with_parent,
            "accesslog_purge": self.accesslog_purge,
            "with_schema": self.with_schema,
            "log_level": self.log_level,
            "uris": self.uris,
            "tls": self.tls,
            "replicator_password": self._replicator_password,
            "providers": [
                {
                    "index": p.index,
                    "server_id": p.server_id,
                    "host": p.host,
                    "port": p.port,
                    "url": p.url,
                    "ldapi_url": p.ldapi_url,
                    "dir": str(p.dir),
                    "pid": p.pid,
                    "exec_prefix": list(p.exec_prefix),
                }
                for p in self._providers
            ],
        }
        path = self.base_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        # It holds the admin and replication passwords: owner only, replaced atomically.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
        tmp.replace(path)

    @classmethod
    def attach(cls, base_dir: str | Path) -> DirectoryCluster:
        """The running cluster whose state file is in ``base_dir``, as written by the
        process that started it (``ndsclust lab up``); its ``stop()`` works from here."""
        base = Path(base_dir).resolve()
        try:
            state = json.loads((base / STATE_FILE).read_text())
            cluster = cls(
                n=state["n"],
                hosts=[p["host"] for p in state["providers"]],
                suffix=state["suffix"],
                pulse_suffix=state["pulse_suffix"],
                admin_password=state["admin_password"],
                retry=state["retry"],
                die_with_parent=state["die_with_parent"],
                accesslog_purge=state["accesslog_purge"],
                with_schema=state["with_schema"],
                exec_prefixes=[p["exec_prefix"] for p in state["providers"]],
                log_level=state["log_level"],
                tls=state["tls"],
                replicator_password=state["replicator_password"],
            )
            cluster._providers = tuple(
                Provider(
                    p["index"],
                    p["host"],
                    p["port"],
                    Path(p["dir"]),
                    p["exec_prefix"],
                    state["die_with_parent"],
                    p["pid"],
                    state["log_level"],
                    state["tls"],
                )
                for p in state["providers"]
            )
        except FileNotFoundError as e:
            raise LabError(f"{base} holds no lab cluster ({STATE_FILE} is missing)") from e
        except (ValueError, KeyError, TypeError) as e:
            raise LabError(f"{base / STATE_FILE} is damaged: {e!r}") from e
        cluster._base_dir = base
        cluster._started = True
        for p in cluster._providers:
            p.on_spawn = cluster._provider_spawned
        return cluster

    # -- LDAP through the ldapi sockets ----------------------------------------------------

    @contextmanager
    def _bound(self, p: Provider) -> Iterator[Any]:
        try:
            conn = bound(
                ldap3.Connection(
                    ldap3.Server(p.ldapi_url, connect_timeout=2, get_info=ldap3.NONE),
                    user=self.admin_dn,
                    password=self._admin_password,
                    receive_timeout=2,
                )
            )
        except LDAPException as e:
            raise LabError(
                f"{p.name}: cannot bind as {self.admin_dn} over {p.ldapi_url}: {e}"
            ) from e
        try:
            yield conn
        except LDAPException as e:
            raise LabError(f"{p.name}: {e}") from e
        finally:
            conn.unbind()

    def _answering(self) -> list[Provider]:
        return [p for p in self._providers if p.running and not p.paused]

    def replication_state(self) -> dict[int, dict[int, str]]:
        """The sync phase of every replication agreement, from cn=Monitor, by provider
        index then rid (``MAIN_RID_BASE`` or ``PULSE_RID_BASE`` + the server id replicated
        from): ``Persist`` when connected and current. Providers that are not running or
        are paused are left out: they cannot answer."""
        out: dict[int, dict[int, str]] = {}
        for p in self._answering():
            with self._bound(p) as conn:
                conn.search(
                    "cn=Databases,cn=Monitor",
                    "(objectClass=olmSyncReplInstance)",
                    ldap3.SUBTREE,
                    attributes=["olmSRSyncPhase"],
                )
                out[p.index] = {
                    int(e["dn"].split(",", 1)[0].rsplit(" ", 1)[1]): (
                        _decode(e["raw_attributes"].get("olmSRSyncPhase", [])) or ("",)
                    )[0]
                    for e in conn.response
                    if e["type"] == "searchResEntry"
                }
        return out

    def wait_replicating(self, timeout: float = 5.0) -> None:
        """Wait until every agreement between two running, unpaused providers is in the
        persist phase: from then on a write anywhere reaches them all within milliseconds
        (docs/platform.md fact 5). An agreement whose first connect was refused waits a
        whole ``retry`` interval (docs/platform.md fact 4), so this is what bounds a start or
        a restart."""
        live = {p.server_id for p in self._answering()}
        pending: list[str] = []

        def replicating() -> bool:
            try:
                state = self.replication_state()
            except LabError as e:
                pending[:] = [str(e)]
                return False
            pending[:] = [
                f"provider {i} rid {rid}: {phase or 'not connected'}"
                for i, phases in state.items()
                for rid, phase in phases.items()
                if _peer_of(rid) in live and phase != "Persist"
            ]
            return not pending

        try:
            wait_until(
                replicating,
                timeout,
                interval=0.02,
                what="every replication agreement to reach the persist phase",
            )
        except LabTimeout as e:
            raise LabTimeout(f"{e}; still waiting: " + "; ".join(pending)) from e

    def contextcsns(self) -> dict[int, dict[str, set[str]]]:
        """contextCSN values of both suffixes, by provider index then suffix. Providers that
        are not running or are paused are left out: they cannot answer."""
        out: dict[int, dict[str, set[str]]] = {}
        for p in self._answering():
            with self._bound(p) as conn:
                out[p.index] = {}
                for dn in (self._suffix, self._pulse_suffix):
                    conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["contextCSN"])
                    found = [e for e in conn.response if e["type"] == "searchResEntry"]
                    raw = found[0]["raw_attributes"].get("contextCSN", []) if found else []
                    out[p.index][dn] = set(_decode(raw))
        return out

    def wait_converged(self, timeout: float = 10.0) -> None:
        """Wait until every running, unpaused provider holds the same contextCSN set for
        both suffixes; on timeout raise LabTimeout listing each provider's values."""
        last: dict[int, dict[str, set[str]]] = {}
        error = ""

        def converged() -> bool:
            nonlocal last, error
            try:
                last = self.contextcsns()
            except LabError as e:
                error = str(e)
                return False
            error = ""
            views = list(last.values())
            return all(v == views[0] for v in views[1:])

        try:
            wait_until(converged, timeout, interval=0.02, what="the providers to converge")
        except LabTimeout as e:
            detail = error or "\n".join(
                f"  provider {i}: "
                + "; ".join(f"{dn}: {', '.join(sorted(csns)) or '-'}" for dn, csns in by_dn.items())
                for i, by_dn in last.items()
            )
            raise LabTimeout(f"{e}; contextCSN per provider:\n{detail}") from e

    def read_tree(self, index: int, base: str | None = None) -> Tree:
        """Every entry under ``base`` (default: the main suffix) on one provider, as
        lower-cased DN -> attribute -> sorted values, user attributes only; empty when
        ``base`` does not exist there. Compare providers by values: one may keep another
        entryCSN for equal values (docs/platform.md fact 9)."""
        with self._bound(self._providers[index]) as conn:
            return search_tree(conn, base or self._suffix)

"""One slapd provider of a lab directory: its directories, its process, its signals.

A provider is a foreground ``slapd -d 0`` child with its own cn=config and data
directories, listening on ``ldap://HOST:PORT`` (``ldaps://`` with ``tls``) and on an ldapi
socket. Everything the lab itself asks a provider (does it answer, its replication state)
goes through the ldapi socket, so it also works when the provider runs inside a network
namespace this process cannot route to. Also the lab's bounded waits (``wait_until``), its
errors and its choice of free ports.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from ndsclust.errors import NdsclustError
from ndsclust.ldapstore import provider_admin

T = TypeVar("T")

SUN_PATH_MAX = 107  # AF_UNIX path limit, minus the terminating NUL
PR_SET_PDEATHSIG = 1
LOG_TAIL_LINES = 20


class LabError(NdsclustError):
    """The lab directory cluster could not be built, started, reached or stopped."""


class LabTimeout(LabError):
    """A bounded wait of the lab ran out."""


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


def die_with(parent: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL the child when the thread of ``parent`` that spawned it exits, so
    an interrupted test run cannot leave a slapd or a sentinel behind. The getppid() check
    closes the race of the parent dying between fork and prctl."""
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def _proc_state(pid: int) -> str | None:
    """The state letter in /proc/PID/stat, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0] or None


def alive(pid: int) -> bool:
    """The process exists and is neither a zombie nor dead."""
    return _proc_state(pid) not in (None, "Z", "X")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found through /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


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


def host_url(host: str, port: int, scheme: str = "ldap") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


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
        self.url = host_url(host, port, "ldaps" if tls else "ldap")
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
        if not alive(self.pid):
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
                preexec_fn=die_with(os.getpid()) if self.die_with_parent else None,
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
        return provider_admin.answers(self.ldapi_url)

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


def slapadd_all(jobs: Sequence[tuple[Provider, Sequence[str]]]) -> None:
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

"""Many servers over a few providers, and what the scale benchmarks read from them.

``ScaleLab`` is a ``LabCluster`` whose servers outnumber its slapd providers: server ``i``
has its own loopback address (127.0.1.<i+1>) and sentinel, and provider ``i % providers``
as its local provider, as in a site where only some servers run slapd. The first eight
servers have the lab's names (alpha ... theta), the others ``s09``, ``s10``, ...
``start()`` builds the providers, the base and every server's identity and configuration
but starts no sentinel, so that a benchmark can fill the directory first (``add_apps``)
and then start every sentinel at once (``start_sentinels``). ``stop()`` is the lab's.

``ProcStat`` reads a process's CPU time and resident memory from /proc; ``sentinel_events``
reads the ``event=`` lines of a sentinel's log (docs/style.md section 7).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.cluster import SERVER_NAMES, LabCluster, LabServer, descendants
from ndsclust.lab.directory import LabError, free_ports
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import App, AppState, AppType, ServerName, StateValue, Tag

SLEEP = ("/bin/sleep", "1000000")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ADD_WORKERS = 4  # connections that fill the directory side by side
GUARD_MODULE = "ndsclust.sentinel.guard"


def server_names(n: int) -> list[ServerName]:
    return [
        ServerName(SERVER_NAMES[i] if i < len(SERVER_NAMES) else f"s{i + 1:02d}") for i in range(n)
    ]


class ScaleLab(LabCluster):
    """``servers`` sentinels over ``providers`` slapd providers; see the module docstring."""

    def __init__(self, servers: int, providers: int = 3, **kwargs: Any) -> None:
        if not 1 <= providers <= min(servers, len(SERVER_NAMES)):
            raise LabError(f"{providers} providers for {servers} servers: 1 to min(servers, 8)")
        if servers > 250:
            raise LabError(f"{servers} servers: at most 250 loopback addresses")
        super().__init__(providers, **kwargs)
        self.n = servers

    def _start(self) -> float:
        began = time.monotonic()
        self.directory.start()
        self.write_cluster_key()
        self.store().ensure_base()
        ports = free_ports(["127.0.0.1"] * self.n)
        for i, name in enumerate(server_names(self.n)):
            self.add_server(i, name, ports[i])
        for server in self.servers.values():
            self.write_config(server)
        return time.monotonic() - began

    def sentinel_config(self, server: LabServer) -> dict[str, Any]:
        # The lab's configuration with the local provider of server index % providers; the
        # provider -> server map is already right, providers belonging to the first servers.
        local = replace(server, index=server.index % len(self.directory.providers))
        return super().sentinel_config(local)

    def start_sentinels(self) -> float:
        """Start every sentinel; returns the CLOCK_MONOTONIC time of the first spawn."""
        t0 = time.monotonic()
        for name in self.servers:
            self.start_sentinel(name)
        return t0

    def admin_store(self) -> Store:
        d = self.directory
        return Store(
            Providers(d.uris, d.admin_credentials(), timeout=5.0),
            d.suffix,
            pulse_base=d.pulse_suffix,
            op_deadline=60.0,
        )

    def add_apps(self, apps: Sequence[App]) -> float:
        """Add ``apps`` on ADD_WORKERS connections side by side; returns the seconds taken."""
        began = time.monotonic()
        errors: list[BaseException] = []

        def work(part: Sequence[App]) -> None:
            store = self.admin_store()
            try:
                for app in part:
                    store.add_app(app)
            except BaseException as e:
                errors.append(e)
            finally:
                store.close()

        threads = [
            threading.Thread(target=work, args=(apps[k::ADD_WORKERS],), daemon=True)
            for k in range(ADD_WORKERS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return time.monotonic() - began

    def sentinel_pids(self) -> dict[ServerName, int]:
        return {n: s.pid for n, s in self.servers.items() if s.pid is not None and s.running}

    def guard_pid(self, name: ServerName) -> int | None:
        pid = self.servers[name].pid
        if pid is None:
            return None
        for child in descendants(pid):
            if GUARD_MODULE in cmdline(child):
                return child
        return None

    def save_logs(self, dest: Path) -> None:
        """Copy every sentinel's log to ``dest/<server>.log`` (before ``stop()`` removes them)."""
        dest.mkdir(parents=True, exist_ok=True)
        for name, server in self.servers.items():
            if server.log_path.exists():
                shutil.copyfile(server.log_path, dest / f"{name}.log")

    def slapd_pids(self) -> list[int]:
        return [p.pid for p in self.directory.providers if p.pid is not None and p.running]


def sample_apps(names: Sequence[ServerName], n: int, running: int, prefix: str = "b") -> list[App]:
    """``n`` applications of ``/bin/sleep``, primaries round robin over ``names``, the next
    two servers as backups; the first ``running`` hosted by their primary (``loading``, so
    a sentinel writing ``running`` shows it has started it), the others unloaded."""
    out = []
    k = len(names)
    for i in range(n):
        primary = names[i % k]
        backups = tuple(names[(i + j) % k] for j in (1, 2) if j < k)
        host = primary if i < running else None
        out.append(
            App(
                tag=Tag(f"{prefix}{i:05d}"),
                type=AppType.CAPABLE,
                command=SLEEP,
                primary=primary,
                backups=backups,
                host=host,
                state=StateValue(AppState.LOADING if host else AppState.STOPPED),
            )
        )
    return out


def count_running(store: Store) -> tuple[int, int]:
    """Applications hosted and ``running``, and applications hosted, in the directory (one
    search of their states only: the benchmark must not load the machine it measures)."""
    found = store.search(
        store.apps_dn,
        "(&(objectClass=ndsclustApplication)(ndsclustHostServer=*))",
        attributes=("ndsclustState",),
    )
    states = [
        v[0] for _, attrs in found for k, v in attrs.items() if k.lower() == "ndscluststate" and v
    ]
    return sum(1 for s in states if s in (b"running", "running")), len(states)


# -- /proc ----------------------------------------------------------------------------------


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class ProcStat:
    """CPU seconds (user + system, every thread) and resident memory of one process."""

    cpu_s: float
    rss_bytes: int

    @classmethod
    def read(cls, pid: int) -> ProcStat | None:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, IndexError, ValueError, StopIteration):
            return None
        # Fields 14 and 15 of stat (utime, stime), counted after the command's ")".
        return cls((int(fields[11]) + int(fields[12])) / CLK_TCK, rss_kb * 1024)


@dataclass
class Usage:
    """What one process used over an idle window: the largest RSS seen and the CPU of each
    ``window``-second slice, as a percentage of one core."""

    rss_max: int = 0
    cpu_pcts: list[float] | None = None

    @property
    def cpu_pct_max(self) -> float:
        return max(self.cpu_pcts or [0.0])

    @property
    def cpu_pct_mean(self) -> float:
        pcts = self.cpu_pcts or [0.0]
        return sum(pcts) / len(pcts)


def watch_usage(
    pids: dict[str, int], duration: float, window: float = 5.0, every: float = 1.0
) -> dict[str, Usage]:
    """Sample ``pids`` every ``every`` seconds for ``duration`` seconds; CPU per ``window``."""
    usage = {k: Usage(cpu_pcts=[]) for k in pids}
    start = {k: ProcStat.read(p) for k, p in pids.items()}
    t_start = time.monotonic()
    end = t_start + duration
    slice_start = dict(start)
    t_slice = t_start
    while (now := time.monotonic()) < end:
        time.sleep(min(every, end - now))
        now = time.monotonic()
        stats = {k: ProcStat.read(p) for k, p in pids.items()}
        for k, st in stats.items():
            if st is not None:
                usage[k].rss_max = max(usage[k].rss_max, st.rss_bytes)
        if now - t_slice >= window - 1e-3 or now >= end:
            for k, st in stats.items():
                before = slice_start[k]
                if st is not None and before is not None and now > t_slice:
                    pcts = usage[k].cpu_pcts
                    assert pcts is not None
                    pcts.append(100 * (st.cpu_s - before.cpu_s) / (now - t_slice))
            slice_start, t_slice = stats, now
    return usage


# -- sentinel logs -----------------------------------------------------------------------------

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (event=.*)$")
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


@dataclass(frozen=True, slots=True)
class LogEvent:
    wall: float  # seconds since the epoch (the line's asctime, local time)
    level: str
    event: str
    fields: dict[str, str]


def sentinel_events(path: Path, since: float = 0.0) -> Iterator[LogEvent]:
    """The ``event=`` lines of a sentinel log at or after wall time ``since``."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        wall = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if wall < since:
            continue
        fields = {k: v[1:-1] if v.startswith('"') else v for k, v in _FIELD.findall(m[3])}
        yield LogEvent(wall, m[2], fields.pop("event", ""), fields)


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so the benchmark's ``finally`` stops the lab."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)

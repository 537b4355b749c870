"""Fault injection on a lab cluster whose servers are network namespaces.

``make_lab(n, ...)`` builds the ``LabCluster`` (``network=NetLab``, sentinels started through
``wallclock.py`` so their wall clock can be stepped); ``Faults(lab)`` injects faults and
remembers each one, so ``heal()`` undoes them all and leaves every server running again:

processes   SIGKILL of a sentinel, a program or a provider; SIGSTOP and SIGCONT of each;
            a whole server down (everything in its namespace killed, its links down)
network     links down; a partition into groups, both ways or one way; random loss;
            delay and jitter (``tools.netns``: tc BPF filters, bridges, and a
            userspace relay for delay, since the kernel here has no netem)
isolation   one server cut off on every channel at once (``isolate``): both its links on a
            bridge of its own, its disk-pulse path cut, and so the witness (which listens
            on the main dir bridge) out of its reach
disk        the shared disk-pulse file unwritable for every server (``chattr +i``: ext4
            refuses writes even on descriptors already open), or cut off for one server
            (a read-only file bind-mounted over the path in that sentinel's mount
            namespace, then one short ``chattr +i`` so every open descriptor fails once and
            is reopened: the others find the file again, that server finds the stand-in)
clock       a step of one server's wall clock (``wallclock.py``); CLOCK_MONOTONIC, which
            every timeout uses, is never touched

Every fault names what it did in ``log`` (one line each), which is what ``chaos.py`` prints
for a failing trial.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from ndsclust.lab.cluster import LabCluster, alive
from ndsclust.lab.directory import LabError, wait_until
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import ServerName
from tools.netns import NETS, NetLab

HERE = Path(__file__).resolve().parent
WALLCLOCK = HERE / "wallclock.py"
OFFSET_FILE = "wall-offset"
DISK_STAND_IN = "disk.cut"
# How long the shared file stays immutable to make every sentinel reopen it: a few disk
# intervals (DISK_BLIP_INTERVALS of the lab's, at least DISK_BLIP), well under the disk
# channel's timeout.
DISK_BLIP = 0.3
DISK_BLIP_INTERVALS = 3
DISK_REOPEN_TRIES = 5


class FaultError(LabError):
    """A fault could not be injected or undone."""


def lab_options() -> dict[str, Any]:
    """LabCluster options for a lab ``Faults`` can work on: namespaces, and sentinels
    started through ``wallclock.py`` so that ``clock_step`` reaches them."""
    return {"network": NetLab, "sentinel_wrapper": (str(WALLCLOCK), "{dir}/" + OFFSET_FILE)}


def make_lab(n: int = 3, **options: Any) -> LabCluster:
    """A started LabCluster of ``n`` namespaces (see ``lab_options``)."""
    lab = LabCluster(n, **{**lab_options(), **options})
    lab.start()
    return lab


def provider_store(lab: LabCluster, name: str) -> Store:
    """A store that talks to one server's provider only, over its ldapi socket: an operator
    at that server's console, on whichever side of a partition it is."""
    d = lab.directory
    p = d.providers[lab.servers[ServerName(name)].index]
    creds = d.admin_credentials()
    return Store(
        Providers([p.ldapi_url], creds, timeout=1.0),
        d.suffix,
        pulse_base=d.pulse_suffix,
        op_deadline=5.0,
    )


def live_copies(lab: LabCluster, tag: str) -> dict[str, int]:
    """Server -> pid of each copy of ``tag`` that started, has not stopped and still lives."""
    live: dict[tuple[str, int], bool] = {}
    for line in lab.ledger_lines():
        parts = line.split()
        if len(parts) == 5 and parts[2] == tag and parts[3] in ("start", "stop"):
            live[(parts[0], int(parts[1]))] = parts[3] == "start"
    return {srv: pid for (srv, pid), up in live.items() if up and alive(pid)}


class Faults:
    """Faults on ``lab`` (built by ``make_lab``); see the module docstring."""

    def __init__(self, lab: LabCluster) -> None:
        if not isinstance(lab.net, NetLab):
            raise FaultError("fault injection needs a lab of network namespaces (network=NetLab)")
        self.lab = lab
        self.net: NetLab = lab.net
        self.log: list[str] = []
        self._paused: dict[int, str] = {}  # pid -> what it is
        self._dead_sentinels: set[str] = set()
        self._dead_providers: set[str] = set()
        self._down_servers: set[str] = set()
        self._disk_immutable = False
        self._disk_cut: dict[str, int] = {}  # server -> sentinel pid holding the mount
        self._clock: set[str] = set()

    def _note(self, text: str) -> None:
        self.log.append(f"{time.monotonic():.3f} {text}")

    def _server(self, name: str) -> ServerName:
        if name not in self.lab.servers:
            raise FaultError(f"no server {name!r}; servers: {', '.join(self.lab.servers)}")
        return ServerName(name)

    # -- processes ------------------------------------------------------------------------

    def sentinel_pid(self, name: str) -> int:
        server = self.lab.servers[self._server(name)]
        if server.pid is None or not server.running:
            raise FaultError(f"the sentinel of {name} is not running")
        return server.pid

    def kill_sentinel(self, name: str) -> None:
        """SIGKILL the sentinel alone: its lease guard then kills its programs."""
        self.lab.kill_sentinel(self._server(name))
        self._dead_sentinels.add(name)
        self._note(f"kill_sentinel {name}")

    def pause_sentinel(self, name: str) -> None:
        pid = self.sentinel_pid(name)
        os.kill(pid, signal.SIGSTOP)
        self._paused[pid] = f"sentinel of {name}"
        self._note(f"pause_sentinel {name}")

    def kill_program(self, name: str, tag: str, sig: int = signal.SIGKILL) -> None:
        pid = live_copies(self.lab, tag).get(name)
        if pid is None:
            raise FaultError(f"no live copy of {tag} on {name}")
        os.kill(pid, sig)
        if sig == signal.SIGSTOP:
            self._paused[pid] = f"{tag} on {name}"
        self._note(f"{'pause' if sig == signal.SIGSTOP else 'kill'}_program {name} {tag}")

    def pause_program(self, name: str, tag: str) -> None:
        self.kill_program(name, tag, signal.SIGSTOP)

    def kill_provider(self, name: str) -> None:
        self.lab.directory.providers[self.lab.servers[self._server(name)].index].kill()
        self._dead_providers.add(name)
        self._note(f"kill_provider {name}")

    def pause_provider(self, name: str) -> None:
        provider = self.lab.directory.providers[self.lab.servers[self._server(name)].index]
        if provider.pid is None or not provider.running:
            raise FaultError(f"the provider of {name} is not running")
        provider.pause()
        self._paused[provider.pid] = f"provider of {name}"
        self._note(f"pause_provider {name}")

    def resume(self) -> None:
        """SIGCONT everything paused."""
        for pid, what in sorted(self._paused.items()):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                continue
            self._note(f"resume {what}")
        for p in self.lab.directory.providers:
            p.paused = False
        self._paused.clear()

    def server_down(self, name: str) -> None:
        """Everything in the server's namespace SIGKILLed at once, its links down."""
        self.lab.kill_server(self._server(name))
        self._down_servers.add(name)
        self._disk_cut.pop(name, None)
        self._note(f"server_down {name}")

    def server_up(self, name: str, *, sentinel: bool = True) -> None:
        """Bring a downed server back: links, provider and (unless ``sentinel`` is False)
        its sentinel."""
        server = self.lab.servers[self._server(name)]
        self.net.link_up(name)
        provider = self.lab.directory.providers[server.index]
        if not provider.running:
            provider.start()
        if sentinel:
            self.lab.start_sentinel(server.name)
            self._down_servers.discard(name)
        else:
            self._down_servers.discard(name)
            self._dead_sentinels.add(name)
        self._note(f"server_up {name}" + ("" if sentinel else " (provider only)"))

    # -- network ----------------------------------------------------------------------------

    def link_down(self, name: str, nets: Iterable[str] = NETS) -> None:
        nets = tuple(nets)
        self.net.link_down(self._server(name), nets)
        self._note(f"link_down {name} {','.join(nets)}")

    def partition(self, groups: Sequence[Collection[str]], nets: Iterable[str] = NETS) -> None:
        nets = tuple(nets)
        self.net.partition(groups, nets)
        self._note(
            "partition " + " | ".join(",".join(sorted(g)) for g in groups) + f" on {','.join(nets)}"
        )

    def one_way(
        self, senders: Collection[str], receivers: Collection[str], nets: Iterable[str] = NETS
    ) -> None:
        nets = tuple(nets)
        self.net.one_way(senders, receivers, nets)
        self._note(
            f"one_way from {','.join(sorted(senders))} to {','.join(sorted(receivers))}"
            f" on {','.join(nets)}"
        )

    def loss(self, name: str, fraction: float, nets: Iterable[str] = ("lan",)) -> None:
        nets = tuple(nets)
        self.net.loss(self._server(name), fraction, nets)
        self._note(f"loss {name} {fraction:.2f} on {','.join(nets)}")

    def delay(
        self, name: str, seconds: float, jitter: float = 0.0, nets: Iterable[str] = ("lan",)
    ) -> None:
        nets = tuple(nets)
        self.net.delay(self._server(name), seconds, jitter, nets)
        self._note(f"delay {name} {seconds:.2f}s+{jitter:.2f}s on {','.join(nets)}")

    def isolate(self, name: str) -> None:
        """Cut server ``name`` off on every channel: both its links onto bridges of its own
        (the others and the root namespace stay together, so the lab's witness, on the
        root namespace's dir address, is out of its reach too) and its disk-pulse path cut.
        Its own provider and processes keep running: a server whose network and storage
        paths all failed at once. ``heal`` undoes it."""
        self._server(name)
        others = [s for s in self.lab.servers if s != name]
        if not others:
            raise FaultError(f"isolating {name} needs another server to cut it off from")
        self.net.partition([others, [name]], NETS)
        witness = self.lab.witness.address if self.lab.witness is not None else None
        self._note(
            f"isolate {name}: partition {','.join(sorted(others))} | {name} on "
            f"{','.join(NETS)}" + (f"; witness {witness} unreachable" if witness else "")
        )
        try:
            self.disk_cut(name)
        except FaultError as e:
            raise FaultError(f"isolate {name}: partitioned, but its disk path stays: {e}") from e

    # -- disk ---------------------------------------------------------------------------------

    def _chattr(self, flag: str, path: Path | None = None) -> None:
        tool = shutil.which("chattr")
        if tool is None:
            raise FaultError("chattr not found (e2fsprogs); the disk faults need it")
        path = path or self.lab.disk_path
        done = subprocess.run([tool, flag, str(path)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise FaultError(
                f"chattr {flag} {path}: {done.stderr.strip()} (the disk faults "
                "need a filesystem that enforces the immutable flag, e.g. ext4)"
            )

    def disk_unwritable(self) -> None:
        """Every server's writes to the disk-pulse file fail from now on (the shared
        storage is lost for all)."""
        self._chattr("+i")
        self._disk_immutable = True
        self._note("disk_unwritable")

    def disk_cut(self, name: str) -> None:
        """Server ``name`` loses the disk-pulse file (cannot open, write or read it); the
        others keep it."""
        pid = self.sentinel_pid(name)
        path = self.lab.disk_path
        stand_in = self._stand_in(name)
        if stand_in.exists():  # left immutable by a cut whose server went down meanwhile
            self._chattr("-i", stand_in)
        stand_in.write_bytes(b"")
        # Immutable before it is bound: between the bind and the read-only remount below
        # the sentinel could otherwise open the stand-in for writing, keep it open, and
        # make the umount of the heal fail ("target is busy").
        self._chattr("+i", stand_in)
        mount = ["nsenter", "-t", str(pid), "-m", "--", "mount"]
        _run([*mount, "--bind", str(stand_in), str(path)])
        _run([*mount, "-o", "remount,bind,ro", str(path)])
        self._disk_cut[name] = pid
        if not self._disk_immutable:
            self._reopen_disk(name)
        self._note(f"disk_cut {name}")

    def _reopen_disk(self, name: str) -> None:
        """Make every sentinel's disk channel fail once, so it reopens the path."""
        log = self.lab.servers[self._server(name)].log_path
        blip = max(DISK_BLIP, DISK_BLIP_INTERVALS * (self.lab.channel_interval("disk") or 0.0))
        for _ in range(DISK_REOPEN_TRIES):
            mark = log.stat().st_size
            self._chattr("+i")
            try:
                time.sleep(blip)
            finally:
                self._chattr("-i")
            if b"channel_degraded channel=disk" in log.read_bytes()[mark:]:
                return
        raise FaultError(f"the sentinel of {name} kept its disk-pulse file open")

    def _disk_restore(self) -> None:
        if self._disk_immutable:
            self._chattr("-i")
            self._disk_immutable = False
            self._note("disk_writable")
        for name, pid in sorted(self._disk_cut.items()):
            if alive(pid):
                _run(["nsenter", "-t", str(pid), "-m", "--", "umount", str(self.lab.disk_path)])
            self._chattr("-i", self._stand_in(name))
            self._note(f"disk_restored {name}")
        self._disk_cut.clear()

    def _stand_in(self, name: str) -> Path:
        return self.lab.servers[self._server(name)].dir / DISK_STAND_IN

    # -- clock ---------------------------------------------------------------------------------

    def clock_step(self, name: str, seconds: float) -> None:
        """Step the server's wall clock by ``seconds`` (from the real clock, not cumulative)."""
        path = self.lab.servers[self._server(name)].dir / OFFSET_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{seconds}\n")
        tmp.replace(path)
        if seconds:
            self._clock.add(name)
        else:
            self._clock.discard(name)
        self._note(f"clock_step {name} {seconds:+g}s")

    # -- undo everything ------------------------------------------------------------------------

    def release(self) -> None:
        """Undo only what would outlive the lab: the disk file's immutable flag and the
        bind mounts (a lab being stopped needs nothing else undone)."""
        self._disk_restore()

    def heal(self) -> None:
        """Undo every fault: network whole, disk back, clocks right, paused processes
        continued, dead providers, sentinels and servers started again."""
        self.net.heal()
        self._disk_restore()
        for name in sorted(self._clock):
            self.clock_step(name, 0.0)
        self.resume()
        for name in sorted(self._down_servers):
            self.lab.restart_server(ServerName(name))
            self._dead_sentinels.discard(name)
            self._dead_providers.discard(name)
            self._note(f"server_up {name}")
        self._down_servers.clear()
        for name in sorted(self._dead_providers):
            provider = self.lab.directory.providers[self.lab.servers[ServerName(name)].index]
            if not provider.running:
                provider.start()
            self._note(f"provider_up {name}")
        self._dead_providers.clear()
        for name in sorted(self._dead_sentinels):
            if not self.lab.servers[ServerName(name)].running:
                self.lab.start_sentinel(ServerName(name))
            self._note(f"sentinel_up {name}")
        self._dead_sentinels.clear()
        self._note("healed")

    def restart_sentinels(self, timeout: float = 20.0) -> None:
        """SIGKILL every sentinel (its programs die by their lease) and start it again;
        wait until each has read the directory."""
        marks = {}
        for name, server in self.lab.servers.items():
            self.lab.kill_sentinel(name)
            marks[name] = server.log_path.stat().st_size if server.log_path.exists() else 0
            self.lab.start_sentinel(name)
        for name, mark in marks.items():
            wait_log(self.lab, name, "event=directory_ready", timeout, after=mark)
        self._note("restart_sentinels")

    def settle(self, timeout: float = 20.0) -> None:
        """After ``heal``: wait until every agreement replicates and the providers agree."""
        deadline = time.monotonic() + timeout
        self.lab.directory.wait_replicating(max(deadline - time.monotonic(), 1.0))
        self.lab.directory.wait_converged(max(deadline - time.monotonic(), 1.0))


def _run(args: Sequence[str]) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise FaultError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")


def wait_log(lab: LabCluster, name: str, text: str, timeout: float, after: int = 0) -> None:
    """Wait for ``text`` in the sentinel log of ``name`` past byte offset ``after``."""
    log = lab.servers[ServerName(name)].log_path
    wait_until(
        lambda: text.encode() in log.read_bytes()[after:],
        timeout=timeout,
        interval=0.05,
        what=f"{text!r} in the log of {name}",
    )


def log_marks(lab: LabCluster) -> dict[str, int]:
    """Where every sentinel's log ends now: what ``log_lines_since`` reads from."""
    return {
        name: s.log_path.stat().st_size if s.log_path.exists() else 0
        for name, s in lab.servers.items()
    }


def log_lines_since(lab: LabCluster, marks: dict[str, int]) -> list[tuple[str, bytes]]:
    """(server, line) for every line each sentinel logged since ``marks``."""
    out: list[tuple[str, bytes]] = []
    for name, server in lab.servers.items():
        try:
            with open(server.log_path, "rb") as f:
                f.seek(marks.get(name, 0))
                text = f.read()
        except OSError:
            continue
        out += [(name, line) for line in text.splitlines()]
    return out


def hold(cond: Callable[[], bool], seconds: float, what: str) -> None:
    """Assert that ``cond`` stays true for ``seconds`` (checked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert cond(), f"{what} stopped holding"
        time.sleep(0.05)

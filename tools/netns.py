"""Servers as network namespaces, two bridges between them, and faults on the links.

Each server of a ``NetLab`` is a network namespace ``ndc<run>-<server>`` with loopback up
and two veth links, each to its own bridge in the root namespace:

- ``lan0`` on the lan bridge (198.18.<2k>.<i+1>/24): the heartbeat ring (claim 11);
- ``dir0`` on the dir bridge (198.18.<2k+1>.<i+1>/24): directory replication and
  directory reads and writes.

``k`` is chosen per run among the /24 pairs of 198.18.0.0/15 (RFC 2544 benchmarking
space) that no root-namespace interface uses, so runs side by side do not clash. A
namespace has no default route: it reaches the two connected subnets and nothing else.
The root namespace holds ``.254`` on both bridges, so the test process reaches every
provider, and a witness listening there is reachable exactly while a server's dir link is.

Faults, all of them undone by ``heal()`` (the kernel of this machine has no ``sch_netem``
and no tc drop action, docs/platform.md fact 18, so everything is built from what it has):

- link down/up: the root-side end of the veth goes down, so the namespace keeps its
  address and its own services (a server whose cable was pulled still reaches itself);
- partition into groups, both ways: the ports of every group but the first move to a
  bridge of their own (``ip link set PORT master BRIDGE``);
- one way: a classic-BPF tc filter in direct-action mode on the receivers' ingress drops
  IPv4 packets from the senders' addresses (returns TC_ACT_SHOT); ARP still flows, so the
  other direction keeps working;
- random loss: the same kind of filter on both ends of a link, drawing from the kernel's
  per-packet random number (``SKF_AD_RANDOM``);
- delay and jitter, which have no kernel mechanism here (no netem): the link's root-side
  end leaves the bridge and a userspace relay (``Relay``, a thread of this process) carries
  every frame between it and a new veth port on the bridge, each after the delay. Meant
  for the lan link (heartbeats: small UDP datagrams and ARP).

``NetLab`` is a context manager and registers ``teardown`` with atexit; its lan bridge
carries the creating process's pid in its alias, which is how ``cleanup_stale`` tells
leftovers of a dead run from a live run's interfaces.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import heapq
import ipaddress
import itertools
import json
import os
import random
import secrets
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ndsclust.lab.provider import LabError

NETS = ("lan", "dir")
PREFIX = "ndc"
SPACE = ipaddress.IPv4Network("198.18.0.0/15")
KILL_WAIT = 5.0
ROOT_HOST = 254
ALIAS_TAG = "ndsclust-netns"
# Held while a run makes its first devices and while leftovers are looked for.
LOCK_FILE = "/run/ndsclust-netns.lock"
MAX_SERVERS = 9  # one digit per port name keeps it within IFNAMSIZ
IP = "ip"
TC = "tc"
# tc filter priorities: one-way drops before random loss; both end in TC_ACT_UNSPEC when
# they let a packet pass, so the next filter still sees it.
PREF_ONE_WAY = 10
PREF_LOSS = 20

# Classic BPF opcodes (linux/filter.h) and tc verdicts (linux/pkt_cls.h).
BPF_LDH_ABS = 0x28
BPF_LDW_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_RET_K = 0x06
SKF_AD_RANDOM = 0xFFFFF000 + 56
TC_ACT_SHOT = 2
TC_ACT_UNSPEC = 0xFFFFFFFF
ETH_P_IP = 0x0800
OFF_ETHERTYPE = 12  # the mac header is pushed back before a tc classifier runs
OFF_IP_SRC = 14 + 12


ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
FRAME_MAX = 65535
RELAY_TICK = 0.005
IPPROTO_UDP = 17


class NetError(LabError):
    """A namespace, link or filter could not be built, changed or removed."""


@dataclass(frozen=True, slots=True)
class Port:
    """One veth link of a server: ``inner`` in its namespace, ``outer`` on a bridge."""

    server: str
    net: str
    inner: str
    outer: str
    address: str


def run(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise NetError(
            f"{' '.join(args)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
        )
    return done


def _json(args: Sequence[str]) -> list[dict[str, object]]:
    out = run(args).stdout.strip()
    return list(json.loads(out)) if out else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- classic BPF, enough for the filters above ---------------------------------------------

Insn = tuple[int, int, int, int]


def bytecode(program: Sequence[Insn]) -> str:
    """tc's ``bytecode`` argument: ``N,code jt jf k,...``."""
    return ",".join([str(len(program)), *(f"{c} {t} {f} {k}" for c, t, f, k in program)])


def drop_from(sources: Sequence[str]) -> list[Insn]:
    """Drop IPv4 packets whose source is one of ``sources``; pass everything else."""
    addrs = [int(ipaddress.IPv4Address(a)) for a in sources]
    n = len(addrs)
    # 0: ldh ethertype; 1: not IPv4 -> pass; 2: ld src; 3..3+n-1: match -> drop;
    # 3+n: pass; 4+n: drop.
    prog: list[Insn] = [
        (BPF_LDH_ABS, 0, 0, OFF_ETHERTYPE),
        (BPF_JEQ_K, 0, n + 1, ETH_P_IP),
        (BPF_LDW_ABS, 0, 0, OFF_IP_SRC),
    ]
    for i, a in enumerate(addrs):
        prog.append((BPF_JEQ_K, n - i, 0, a))
    prog += [(BPF_RET_K, 0, 0, TC_ACT_UNSPEC), (BPF_RET_K, 0, 0, TC_ACT_SHOT)]
    return prog


def drop_random(fraction: float) -> list[Insn]:
    """Drop each IPv4 packet with probability ``fraction``; pass everything else."""
    if not 0.0 < fraction <= 1.0:
        raise NetError(f"loss {fraction!r} must be a fraction above 0 and at most 1")
    threshold = min(int(fraction * 2**32), 2**32 - 1)
    # 0: ldh ethertype; 1: not IPv4 -> pass; 2: ld random; 3: >= threshold -> pass;
    # 4: drop; 5: pass. A fraction of 1 drops every IPv4 packet but one in 2**32.
    return [
        (BPF_LDH_ABS, 0, 0, OFF_ETHERTYPE),
        (BPF_JEQ_K, 0, 3, ETH_P_IP),
        (BPF_LDW_ABS, 0, 0, SKF_AD_RANDOM),
        (BPF_JGE_K, 1, 0, threshold),
        (BPF_RET_K, 0, 0, TC_ACT_SHOT),
        (BPF_RET_K, 0, 0, TC_ACT_UNSPEC),
    ]


class Relay:
    """Carries Ethernet frames both ways between two interfaces of the root namespace, each
    frame held for ``delay`` plus a uniform draw from ``[0, jitter)`` seconds
    (docs/platform.md fact 18: the kernel has no netem). Frames are reordered when the
    jitter exceeds their spacing, as on a real path. UDP over IPv4 leaves with a zero
    checksum ("none", RFC 768): a veth hands frames over with the checksum still to be
    filled in, and a frame re-sent from a packet socket would otherwise fail verification."""

    def __init__(self, a: str, b: str, delay: float, jitter: float = 0.0) -> None:
        if delay < 0 or jitter < 0:
            raise NetError(f"delay {delay} and jitter {jitter} must not be negative")
        self.delay = delay
        self.jitter = jitter
        self._rng = random.Random()
        self._socks: dict[str, socket.socket] = {}
        for dev in (a, b):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind((dev, 0))
            sock.setblocking(False)
            self._socks[dev] = sock
        self._other = {a: self._socks[b], b: self._socks[a]}
        self._queue: list[tuple[float, int, socket.socket, bytes]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"relay-{a}-{b}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for dev, sock in self._socks.items():
            sel.register(sock, selectors.EVENT_READ, dev)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                while self._queue and self._queue[0][0] <= now:
                    _, _, out, frame = heapq.heappop(self._queue)
                    try:
                        out.send(frame)
                    except OSError:
                        continue  # the interface went down: the frame is lost, as on a wire
                wait = RELAY_TICK if not self._queue else max(0.0, self._queue[0][0] - now)
                for key, _ in sel.select(min(wait, RELAY_TICK)):
                    self._receive(str(key.data))
        finally:
            sel.close()
            for sock in self._socks.values():
                sock.close()

    def _receive(self, dev: str) -> None:
        sock = self._socks[dev]
        while True:
            try:
                frame, addr = sock.recvfrom(FRAME_MAX)
            except (BlockingIOError, OSError):
                return
            if addr[2] == PACKET_OUTGOING:
                continue  # our own sends, seen again on the way out
            at = time.monotonic() + self.delay + self._rng.uniform(0.0, self.jitter)
            heapq.heappush(
                self._queue, (at, next(self._seq), self._other[dev], _udp_checksum_none(frame))
            )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _udp_checksum_none(frame: bytes) -> bytes:
    """The frame with its UDP checksum zeroed when it is UDP over IPv4 (see ``Relay``)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != IPPROTO_UDP:
        return frame
    ihl = (frame[14] & 0x0F) * 4
    at = 14 + ihl + 6
    if len(frame) < at + 2:
        return frame
    return frame[:at] + struct.pack("!H", 0) + frame[at + 2 :]


def _used_subnets() -> set[ipaddress.IPv4Network]:
    """The /24s of 198.18.0.0/15 that some root-namespace address falls in."""
    used: set[ipaddress.IPv4Network] = set()
    for link in _json([IP, "-j", "-4", "addr", "show"]):
        infos = link.get("addr_info")
        for a in infos if isinstance(infos, list) else []:
            if isinstance(a, dict) and a.get("family") == "inet":
                net = ipaddress.IPv4Network(f"{a['local']}/24", strict=False)
                if net.subnet_of(SPACE):
                    used.add(net)
    return used


class NetLab:
    """``names`` as network namespaces on two bridges; see the module docstring."""

    def __init__(self, names: Sequence[str], *, run_id: str | None = None) -> None:
        if not 1 <= len(names) <= MAX_SERVERS:
            raise NetError(f"a namespace lab has 1 to {MAX_SERVERS} servers, not {len(names)}")
        if len(set(names)) != len(names):
            raise NetError(f"server names must differ: {list(names)}")
        self.names = tuple(names)
        self.run_id = run_id or secrets.token_hex(3)
        if len(self.run_id) != 6:
            raise NetError(f"run id {self.run_id!r} must be 6 characters")
        self.prefix = f"{PREFIX}{self.run_id}"
        self._subnets = self._choose_subnets()
        self._groups: list[frozenset[str]] = []
        self._qdiscs: set[tuple[str | None, str]] = set()  # (namespace or None, device)
        self._filters: set[tuple[str | None, str, int]] = set()
        self._down: set[tuple[str, str]] = set()
        self._relays: dict[tuple[str, str], Relay] = {}
        self._started = False
        self._torn_down = False

    # -- names and addresses ----------------------------------------------------------------

    def namespace(self, name: str) -> str:
        self._index(name)
        return f"{self.prefix}-{name}"

    def bridge(self, net: str, group: int = 0) -> str:
        if net not in NETS:
            raise NetError(f"network {net!r}: choose one of {', '.join(NETS)}")
        return f"{self.prefix}{net[0].upper()}{group if group else ''}"

    def port(self, name: str, net: str) -> Port:
        i = self._index(name)
        if net not in NETS:
            raise NetError(f"network {net!r}: choose one of {', '.join(NETS)}")
        return Port(
            server=name,
            net=net,
            inner=f"{net}0",
            outer=f"{self.prefix}{net[0]}{i}",
            address=str(self.subnet(net)[i + 1]),
        )

    def subnet(self, net: str) -> ipaddress.IPv4Network:
        """The /24 of ``net``, chosen when the lab was made (among those no interface of
        the root namespace uses then)."""
        try:
            return self._subnets[net]
        except KeyError:
            raise NetError(f"network {net!r}: choose one of {', '.join(NETS)}") from None

    def address(self, name: str, net: str) -> str:
        """The server's address on ``net`` (lan: heartbeats; dir: its provider)."""
        return self.port(name, net).address

    def root_address(self, net: str) -> str:
        """The root namespace's address on ``net``: how the test process reaches servers."""
        return str(self.subnet(net)[ROOT_HOST])

    def exec_prefix(self, name: str) -> tuple[str, ...]:
        """Prefix a command with this to run it inside the server's namespace."""
        return (IP, "netns", "exec", self.namespace(name))

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise NetError(
                f"no server {name!r} in this lab; servers: {', '.join(self.names)}"
            ) from None

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def start(self) -> None:
        """Create the bridges, namespaces and links; on failure remove what was made."""
        if self._started:
            raise NetError("this namespace lab was already started; make a new one")
        self._started = True
        atexit.register(self.teardown)
        try:
            # Until the lan bridge carries its owner, another process's cleanup_stale would
            # take this run for a leftover and remove it: make and mark it under the lock.
            with _netns_lock():
                for net in NETS:
                    self._add_bridge(self.bridge(net))
                    run(
                        [IP, "addr", "add", f"{self.root_address(net)}/24", "dev", self.bridge(net)]
                    )
                    if net == "lan":
                        run(
                            [
                                IP,
                                "link",
                                "set",
                                "dev",
                                self.bridge("lan"),
                                "alias",
                                f"{ALIAS_TAG} owner={os.getpid()}",
                            ]
                        )
            for name in self.names:
                ns = self.namespace(name)
                run([IP, "netns", "add", ns])
                run([IP, "-n", ns, "link", "set", "lo", "up"])
                for net in NETS:
                    p = self.port(name, net)
                    run(
                        [
                            IP,
                            "link",
                            "add",
                            p.outer,
                            "type",
                            "veth",
                            "peer",
                            "name",
                            p.inner,
                            "netns",
                            ns,
                        ]
                    )
                    run([IP, "-n", ns, "addr", "add", f"{p.address}/24", "dev", p.inner])
                    run([IP, "-n", ns, "link", "set", p.inner, "up"])
                    run([IP, "link", "set", p.outer, "master", self.bridge(net), "up"])
            self._groups = [frozenset(self.names)]
        except BaseException:
            self.teardown()
            raise

    @staticmethod
    def _choose_subnets() -> dict[str, ipaddress.IPv4Network]:
        used = _used_subnets()
        pairs = list(SPACE.subnets(new_prefix=24))
        free = [
            k
            for k in range(len(pairs) // 2)
            if pairs[2 * k] not in used and pairs[2 * k + 1] not in used
        ]
        if not free:
            raise NetError(f"every /24 pair of {SPACE} is in use on this machine")
        k = secrets.choice(free)
        return {"lan": pairs[2 * k], "dir": pairs[2 * k + 1]}

    def _add_bridge(self, br: str) -> None:
        # No STP and no forwarding delay: a port moved between bridges forwards at once.
        run(
            [
                IP,
                "link",
                "add",
                br,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ]
        )
        run([IP, "link", "set", br, "up"])

    def teardown(self) -> None:
        """Remove every namespace, veth and bridge of this lab, killing what still runs in
        the namespaces (idempotent; also run at exit)."""
        if self._torn_down or not self._started:
            return
        self._torn_down = True
        atexit.unregister(self.teardown)
        for relay in self._relays.values():
            relay.stop()
        self._relays.clear()
        problems = _remove_run(self.prefix, [self.namespace(n) for n in self.names])
        if problems:
            raise NetError("teardown left things behind: " + "; ".join(problems))

    # -- faults ------------------------------------------------------------------------------

    def link_down(self, name: str, nets: Iterable[str] = NETS) -> None:
        """Pull the server's cable on ``nets``: the root-side end of each link goes down."""
        for net in nets:
            run([IP, "link", "set", self.port(name, net).outer, "down"])
            self._down.add((name, net))

    def link_up(self, name: str, nets: Iterable[str] = NETS) -> None:
        for net in nets:
            run([IP, "link", "set", self.port(name, net).outer, "up"])
            self._down.discard((name, net))

    def links_down(self) -> frozenset[tuple[str, str]]:
        return frozenset(self._down)

    def partition(self, groups: Sequence[Collection[str]], nets: Iterable[str] = NETS) -> None:
        """Cut the servers into ``groups`` both ways on ``nets``: the first group stays on
        the main bridges (with the root namespace), each other group gets bridges of its
        own. Servers named in no group stay with the first."""
        named = [s for g in groups for s in g]
        for s in named:
            self._index(s)
        if len(set(named)) != len(named):
            raise NetError(f"a server is in two groups: {[sorted(g) for g in groups]}")
        nets = tuple(nets)
        self._move_all_home(nets)
        rest = frozenset(self.names) - frozenset(named)
        final = (
            [frozenset(groups[0]) | rest, *(frozenset(g) for g in groups[1:])] if groups else [rest]
        )
        for gi, group in enumerate(final[1:], start=1):
            for net in nets:
                br = self.bridge(net, gi)
                if not _exists(br):
                    self._add_bridge(br)
                for s in sorted(group):
                    run([IP, "link", "set", self._bridge_port(s, net), "master", br])
        self._groups = final

    def groups(self) -> list[frozenset[str]]:
        return list(self._groups)

    def one_way(
        self, senders: Collection[str], receivers: Collection[str], nets: Iterable[str] = NETS
    ) -> None:
        """Packets from ``senders`` to ``receivers`` are dropped on ``nets``; the other
        direction still flows (a one-way partition)."""
        sources = [self.address(s, net) for s in senders for net in NETS]
        if not sources:
            return
        for r in receivers:
            if r in senders:
                raise NetError(f"{r} is both a sender and a receiver")
            ns = self.namespace(r)
            for net in nets:
                self._filter(ns, self.port(r, net).inner, PREF_ONE_WAY, drop_from(sources))

    def loss(self, name: str, fraction: float, nets: Iterable[str] = ("lan",)) -> None:
        """Drop ``fraction`` of the IPv4 packets in each direction of the server's links."""
        prog = drop_random(fraction)
        for net in nets:
            p = self.port(name, net)
            self._filter(self.namespace(name), p.inner, PREF_LOSS, prog)
            self._filter(None, p.outer, PREF_LOSS, prog)

    def delay(
        self, name: str, seconds: float, jitter: float = 0.0, nets: Iterable[str] = ("lan",)
    ) -> None:
        """Hold every frame to and from the server on ``nets`` for ``seconds`` (+ up to
        ``jitter``) through a ``Relay``; ``heal()`` puts the link back on the bridge."""
        for net in nets:
            key = (name, net)
            if key in self._relays:
                self._relays[key].delay, self._relays[key].jitter = seconds, jitter
                continue
            p = self.port(name, net)
            near, far = self._relay_ends(name, net)
            bridge = self._master(p.outer)
            run([IP, "link", "add", near, "type", "veth", "peer", "name", far])
            run([IP, "link", "set", near, "up"])
            run([IP, "link", "set", far, "master", bridge, "up"])
            run([IP, "link", "set", p.outer, "nomaster"])
            self._relays[key] = Relay(p.outer, near, seconds, jitter)

    def _relay_ends(self, name: str, net: str) -> tuple[str, str]:
        i = self._index(name)
        return f"{self.prefix}{net[0]}{i}r", f"{self.prefix}{net[0]}{i}R"

    def _bridge_port(self, name: str, net: str) -> str:
        """The device that is the server's port on a bridge: its link's root-side end, or
        the relay's port while its frames are delayed."""
        return (
            self._relay_ends(name, net)[1]
            if (name, net) in self._relays
            else self.port(name, net).outer
        )

    def _master(self, dev: str) -> str:
        for link in _json([IP, "-j", "link", "show", "dev", dev]):
            master = link.get("master")
            if isinstance(master, str):
                return master
        raise NetError(f"{dev} is on no bridge")

    def _undelay(self) -> None:
        for (name, net), relay in sorted(self._relays.items()):
            relay.stop()
            run([IP, "link", "del", self._relay_ends(name, net)[0]], check=False)
            run([IP, "link", "set", self.port(name, net).outer, "master", self.bridge(net)])
        self._relays.clear()

    def _filter(self, ns: str | None, dev: str, pref: int, prog: Sequence[Insn]) -> None:
        tc = [TC, "-n", ns] if ns else [TC]
        if (ns, dev) not in self._qdiscs:
            run([*tc, "qdisc", "add", "dev", dev, "ingress"])
            self._qdiscs.add((ns, dev))
        if (ns, dev, pref) in self._filters:
            run([*tc, "filter", "del", "dev", dev, "ingress", "pref", str(pref)])
        run(
            [
                *tc,
                "filter",
                "add",
                "dev",
                dev,
                "ingress",
                "pref",
                str(pref),
                "bpf",
                "da",
                "bytecode",
                bytecode(prog),
            ]
        )
        self._filters.add((ns, dev, pref))

    def clear_filters(self) -> None:
        """Remove every one-way and loss filter."""
        for ns, dev in sorted(self._qdiscs, key=lambda x: (x[0] or "", x[1])):
            tc = [TC, "-n", ns] if ns else [TC]
            run([*tc, "qdisc", "del", "dev", dev, "ingress"], check=False)
        self._qdiscs.clear()
        self._filters.clear()

    def heal(self) -> None:
        """Undo every fault: one network again, every link up, no filter, no delay."""
        self.clear_filters()
        self._undelay()
        self._move_all_home(NETS)
        self._groups = [frozenset(self.names)]
        for name, net in sorted(self._down):
            run([IP, "link", "set", self.port(name, net).outer, "up"])
        self._down.clear()

    def _move_all_home(self, nets: Sequence[str]) -> None:
        for net in nets:
            for name in self.names:
                run([IP, "link", "set", self._bridge_port(name, net), "master", self.bridge(net)])
        for link in _json([IP, "-j", "link", "show", "type", "bridge"]):
            br = str(link.get("ifname", ""))
            if (
                br.startswith(self.prefix)
                and br not in (self.bridge(n) for n in NETS)
                and br[len(self.prefix)].lower() in (n[0] for n in nets)
            ):
                run([IP, "link", "del", br])


def _exists(dev: str) -> bool:
    return run([IP, "link", "show", "dev", dev], check=False).returncode == 0


def _kill_inside(ns: str) -> None:
    """SIGKILL what still runs in a namespace of ours, by pid, and wait for it to go."""
    done = run([IP, "netns", "pids", ns], check=False)
    pids = [int(p) for p in done.stdout.split() if p.isdigit()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + KILL_WAIT
    for pid in pids:
        while _alive(pid) and not _zombie(pid) and time.monotonic() < deadline:
            time.sleep(0.01)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _remove_run(prefix: str, namespaces: Iterable[str]) -> list[str]:
    """Remove one run's namespaces, veths and bridges; what could not be removed."""
    problems: list[str] = []
    for ns in namespaces:
        if run([IP, "netns", "pids", ns], check=False).returncode != 0:
            continue
        _kill_inside(ns)
        done = run([IP, "netns", "del", ns], check=False)
        if done.returncode != 0:
            problems.append(f"netns {ns}: {done.stderr.strip()}")
    for link in _json([IP, "-j", "link", "show"]):
        dev = str(link.get("ifname", ""))
        if dev.startswith(prefix):
            done = run([IP, "link", "del", dev], check=False)
            if done.returncode != 0 and _exists(dev):
                problems.append(f"link {dev}: {done.stderr.strip()}")
    return problems


@contextlib.contextmanager
def _netns_lock() -> Iterator[None]:
    """One process at a time makes a run's first devices or looks for leftovers."""
    with open(LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove the namespaces, veths and bridges left by runs whose creating process is gone
    (names starting with ``prefix``); returns the run prefixes removed. A run whose
    creator still lives is left alone, whoever it is."""
    with _netns_lock():
        return _cleanup_stale(prefix)


def _cleanup_stale(prefix: str) -> list[str]:
    runs: dict[str, list[str]] = {}
    for item in _json([IP, "-j", "netns", "list"]):
        ns = str(item.get("name", ""))
        if ns.startswith(prefix) and ns.startswith(PREFIX) and "-" in ns:
            runs.setdefault(ns.split("-", 1)[0], []).append(ns)
    owners: dict[str, int | None] = {}
    for link in _json([IP, "-j", "link", "show"]):
        dev = str(link.get("ifname", ""))
        if not (dev.startswith(prefix) and dev.startswith(PREFIX)):
            continue
        run_prefix = dev[: len(PREFIX) + 6]
        runs.setdefault(run_prefix, [])
        alias = str(link.get("ifalias", ""))
        if alias.startswith(ALIAS_TAG):
            pid = alias.rsplit("owner=", 1)[-1]
            owners[run_prefix] = int(pid) if pid.isdigit() else None
    removed = []
    for run_prefix, namespaces in sorted(runs.items()):
        owner = owners.get(run_prefix)
        if owner is not None and _alive(owner):
            continue
        problems = _remove_run(run_prefix, namespaces)
        if problems:
            raise NetError(
                f"could not remove the leftovers of {run_prefix}: " + "; ".join(problems)
            )
        removed.append(run_prefix)
    return removed

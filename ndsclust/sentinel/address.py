"""Service addresses (``ndsclustServiceAddress``): held by the program that serves them.

An application with service addresses runs under this module's *holder*, started by the
lease guard in place of the program (``LocalPrograms.start``):

    python -m ndsclust.sentinel.address --tag TAG --address 198.18.5.10/24 [--user U] -- ARGV

The holder adds every address (IPv6 without duplicate address detection, so it answers at
once), announces it (gratuitous ARP with ``arping -U`` for IPv4, an unsolicited neighbour
advertisement with the override flag for IPv6), then runs ARGV as its child, dropping to
``--user`` when given, and announces again every ``ANNOUNCE_EVERY`` seconds while it runs:
after a partition heals or a double claim resolves, neighbours that learnt another
server's hardware address are corrected within that time. When the child ends (an unload
sends SIGTERM to the whole group, holder and program), the holder removes the addresses
and exits with the child's status: the address is there before the program starts and
gone once it has stopped.

The lease. The holder is a program of the guard like any other, so it dies with the
program: the guard SIGKILLs the group when the lease lapses (a frozen sentinel) or the
sentinel's socket closes (a killed one), and the kernel when the guard dies. A SIGKILLed
process cannot clean up, so before it starts the child the holder forks a *warden* in a
session of its own (out of the group the guard kills) that holds a pipe from the holder;
the holder's death, however it comes, closes the pipe and the warden removes the addresses
at once and exits. The warden also holds a per-address lock (in ``LOCK_DIR``, named with the
network namespace) until it is done, and a new holder takes that lock before it adds the
address, so a quick restart never has its fresh address removed by the last copy's warden.

``local_resources()`` is what a server offers for eligibility (``model.address_needs``):
``net:<network>`` for every network an interface of it is on, ``iface:<name>`` for each
interface.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import pwd
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ndsclust.model import App, parse_service_address
from ndsclust.sentinel.logline import log_event

ANNOUNCE_EVERY = 2.0  # seconds between announcements while the address is held
LOCK_DIR = Path("/run/ndsclust-addresses")
LOCK_WAIT = 10.0  # seconds a holder waits for the last copy's warden
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CACHE_FOR = 3.0  # seconds local_resources() keeps its answer
PR_SET_PDEATHSIG = 1

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class AddressError(Exception):
    pass


def tool(name: str) -> str:
    found = shutil.which(name, path=PATH)
    if found is None:
        raise AddressError(f"{name} is not installed (looked in {PATH})")
    return found


def interfaces() -> list[dict[str, object]]:
    """``ip -json addr show``: every interface with its addresses."""
    out = subprocess.run(
        [tool("ip"), "-json", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    data = json.loads(out or "[]")
    return data if isinstance(data, list) else []


def _addresses(iface: dict[str, object]) -> list[Address]:
    out: list[Address] = []
    for a in iface.get("addr_info") or []:  # type: ignore[attr-defined]
        with contextlib.suppress(KeyError, ValueError, TypeError):
            out.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))
    return out


def resources_of(ifaces: Sequence[dict[str, object]]) -> frozenset[str]:
    out: set[str] = set()
    for iface in ifaces:
        out.add(f"iface:{iface.get('ifname')}")
        for addr in _addresses(iface):
            if not addr.ip.is_loopback and not addr.ip.is_link_local:
                out.add(f"net:{addr.network.with_prefixlen}")
    return frozenset(out)


_cache: tuple[float, frozenset[str]] = (-1e18, frozenset())


def local_resources(now: float | None = None) -> frozenset[str]:
    """What this server offers service addresses (cached for ``CACHE_FOR`` seconds); empty
    when ``ip`` cannot be asked."""
    global _cache
    t = time.monotonic() if now is None else now
    if t - _cache[0] < CACHE_FOR:
        return _cache[1]
    try:
        found = resources_of(interfaces())
    except (AddressError, OSError, subprocess.CalledProcessError, ValueError):
        found = frozenset()
    _cache = (t, found)
    return found


def device_for(value: str, ifaces: Sequence[dict[str, object]]) -> tuple[Address, str]:
    """The address and the interface it goes on: the one named, else the one on its network."""
    addr, named = parse_service_address(value)
    names = [str(i.get("ifname")) for i in ifaces]
    if named is not None:
        if named not in names:
            raise AddressError(f"{value}: this server has no interface {named}")
        return addr, named
    for iface in ifaces:
        for own in _addresses(iface):
            if own.ip != addr.ip and addr.ip in own.network and own.network == addr.network:
                return addr, str(iface.get("ifname"))
    raise AddressError(f"{value}: no interface of this server is on {addr.network}")


@dataclass(frozen=True, slots=True)
class Held:
    addr: Address
    dev: str

    def __str__(self) -> str:
        return f"{self.addr.with_prefixlen}@{self.dev}"


def add(h: Held) -> None:
    extra = ["nodad"] if h.addr.version == 6 else []
    r = subprocess.run(
        [tool("ip"), "addr", "add", h.addr.with_prefixlen, "dev", h.dev, *extra],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0 and "File exists" not in r.stderr:
        raise AddressError(f"ip addr add {h}: {r.stderr.strip()}")


def remove(h: Held) -> None:
    subprocess.run(
        [tool("ip"), "addr", "del", h.addr.with_prefixlen, "dev", h.dev],
        capture_output=True,
        check=False,
    )


def neighbour_advertisement(target: ipaddress.IPv6Address, mac: bytes) -> bytes:
    """An unsolicited ICMPv6 neighbour advertisement (RFC 4861 section 4.4) with the
    override flag and the target link-layer address option; the kernel fills the checksum."""
    flags = 0x20000000  # Override: replace what neighbours have cached
    return struct.pack("!BBHI", 136, 0, 0, flags) + target.packed + struct.pack("!BB", 2, 1) + mac


def announce(h: Held) -> subprocess.Popen[bytes] | None:
    """Tell the neighbours this server answers for the address now (never raises). For
    IPv4 the ``arping`` started is returned: it sends at once and then waits a second for
    replies that never come, so the caller reaps it later rather than waiting."""
    try:
        if h.addr.version == 4:
            ip = str(h.addr.ip)
            return subprocess.Popen(
                [tool("arping"), "-q", "-U", "-c", "1", "-I", h.dev, "-s", ip, ip],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        mac_text = Path(f"/sys/class/net/{h.dev}/address").read_text().strip()
        mac = bytes.fromhex(mac_text.replace(":", ""))
        index = socket.if_nametoindex(h.dev)
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            s.bind((str(h.addr.ip), 0, 0, index))
            s.sendto(neighbour_advertisement(h.addr.ip, mac), ("ff02::1", 0, 0, index))
    except (AddressError, OSError, ValueError, subprocess.SubprocessError) as e:
        log_event(logging.WARNING, "address_announce_failed", address=str(h), error=str(e))
    return None


def _lock(h: Held) -> int:
    """Take the address's lock (waiting for the last copy's warden); returns its fd."""
    LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    netns = os.stat("/proc/self/ns/net").st_ino
    name = f"{netns}-{h.addr.ip}".replace(":", "_")
    fd = os.open(LOCK_DIR / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise AddressError(
                    f"{h}: the last copy still holds it after {LOCK_WAIT:g}s"
                ) from None
            time.sleep(0.01)


def _warden(held: Sequence[Held], read_end: int, locks: Sequence[int]) -> None:
    """Fork the warden: in its own session it waits for the holder's pipe to close, removes
    the addresses and exits; the locks are released when it does."""
    if os.fork() != 0:
        return
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)  # the grandchild is re-parented: nobody waits for it
        keep = {read_end, *locks}
        for fd in range(3, 256):
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the pipe ends it
        while True:
            ready, _, _ = select.select([read_end], [], [])
            if ready and not os.read(read_end, 64):
                break
        for h in held:
            remove(h)
    finally:
        os._exit(0)


def _drop_to(user: str | None) -> dict[str, object]:
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def hold(tag: str, values: Sequence[str], user: str | None, argv: Sequence[str]) -> int:
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)  # an unload may come before the program runs
    ifaces = interfaces()
    held = [Held(*device_for(v, ifaces)) for v in values]
    locks = [_lock(h) for h in held]
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    _warden(held, read_end, locks)
    os.close(read_end)
    os.wait()  # the warden's first fork, which exits at once
    announcers: list[subprocess.Popen[bytes]] = []

    def announce_all() -> None:
        announcers[:] = [p for p in announcers if p.poll() is None]
        announcers.extend(p for h in held if (p := announce(h)) is not None)

    code = 0
    try:
        for h in held:
            add(h)
            log_event(logging.INFO, "address_added", tag=tag, address=str(h))
        announce_all()
        if not stop:
            code = _run(argv, user, announce_all, lambda: stop)
    finally:
        for h in held:
            remove(h)
            log_event(logging.INFO, "address_removed", tag=tag, address=str(h))
        os.close(write_end)  # the warden finds nothing left to do and ends
        for p in announcers:
            p.kill()
            p.wait()
    return code


def _run(
    argv: Sequence[str],
    user: str | None,
    announce_all: Callable[[], None],
    stop: Callable[[], bool],
) -> int:
    """Run the program until it ends, announcing every ``ANNOUNCE_EVERY`` seconds."""
    child = subprocess.Popen(list(argv), preexec_fn=_die_with_parent, **_drop_to(user))  # type: ignore[call-overload]
    next_announce = time.monotonic() + ANNOUNCE_EVERY
    while True:
        try:
            code = int(child.wait(timeout=max(0.0, next_announce - time.monotonic())))
            return code if code >= 0 else 128 - code
        except subprocess.TimeoutExpired:
            if not stop():
                announce_all()
            next_announce = time.monotonic() + ANNOUNCE_EVERY


def main(args: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ndsclust.sentinel.address", description=__doc__)
    p.add_argument("--tag", required=True)
    p.add_argument("--address", action="append", default=[])
    p.add_argument("--user")
    p.add_argument("--exec-only", action="store_true", help="drop to --user and run ARGV")
    p.add_argument("argv", nargs="+")
    a = p.parse_args(args)
    if a.exec_only:
        creds = _drop_to(a.user)
        if creds:
            os.setgroups([])
            os.setgid(int(creds["group"]))  # type: ignore[call-overload]
            os.setuid(int(creds["user"]))  # type: ignore[call-overload]
        os.execv(a.argv[0], a.argv)
    if not a.address:
        p.error("--address is required (or --exec-only)")
    try:
        return hold(a.tag, a.address, a.user, a.argv)
    except AddressError as e:
        log_event(logging.ERROR, "address_failed", tag=a.tag, error=str(e))
        return 70


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    sys.exit(main())


def _as_user(argv: Sequence[str], user: str | int | None) -> tuple[str, ...]:
    if user is None:
        return tuple(argv)
    me = [sys.executable, "-m", "ndsclust.sentinel.address", "--tag", "-", "--user"]
    return (*me, str(user), "--exec-only", "--", *argv)


def wrap(
    tag: str,
    addresses: Sequence[str],
    argv: Sequence[str],
    unload: Sequence[str] | None,
    user: str | int | None,
) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """The command and unload command the guard runs for a program with service addresses:
    the holder (as the sentinel's user, to add addresses) around the program (as ``user``)."""
    holder = [sys.executable, "-m", "ndsclust.sentinel.address", "--tag", tag]
    for a in addresses:
        holder += ["--address", a]
    if user is not None:
        holder += ["--user", str(user)]
    return (*holder, "--", *argv), (_as_user(unload, user) if unload else None)


def health(argv: Sequence[str], user: str | int | None) -> tuple[str, ...]:
    """A health command of a program with service addresses, run as the program's user."""
    return _as_user(argv, user)


def offered(apps: Iterable[App]) -> frozenset[str]:
    """``local_resources()`` when an application has service addresses, else nothing (no
    ``ip`` call for clusters that use none)."""
    return local_resources() if any(a.addresses for a in apps) else frozenset()

"""Service addresses (``ndsclustServiceAddress``), the sentinel's side.

A program with service addresses is started by the lease guard through the holder
(``ndsclust/sentinel/address_holder.py``): it adds the addresses, leaves a warden behind
and execs the program, so the address is there before the program starts and the program
keeps its pid, process group and lease. The warden announces the addresses (gratuitous
ARP, unsolicited neighbour advertisement) once the program runs and every two seconds
after, and removes them the moment the program ends, however it ends; a frozen, fenced or
killed sentinel therefore loses the address with its program. ``wrap`` builds the holder's
command line, resolving each address to its interface here (the one named after ``@``, else
the one on the address's network), so a server that lacks one refuses to start it.
``released`` removes the addresses of a program whose end the sentinel collects, before the
decision core sees it stopped, so no host swap follows while the address is still here.

``local_resources`` is what this server offers for eligibility (``model.address_needs``):
``net:<network>`` for every network an interface of it is on, ``iface:<name>`` for each
interface with an address, and ``addr:<ip>`` for every address held: a member of a stack
starts only once the addresses of what it requires are up (``stacks``). It reads the
kernel's address table over netlink (no process started), at most every ``CACHE_FOR``
seconds.

``networks`` is what peers need to judge this server: its ``net:`` and ``iface:`` values
without the service addresses it holds, which the pulse writer (``pulse.py``) publishes on
this server's pulse entry (``ndsclustNetwork``) whenever they change.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ndsclust.errors import SupervisorError
from ndsclust.model import App, parse_service_address
from ndsclust.sentinel import address_holder

HOLDER = Path(__file__).with_name("address_holder.py")
CACHE_FOR = 0.1  # seconds local_resources() keeps its answer
Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2


def own_addresses() -> list[tuple[str, Address]]:
    """Every address of this server's interfaces: (interface name, address/prefix)."""
    out: list[tuple[str, Address]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.settimeout(2.0)
        s.send(
            struct.pack("=LHHLL", 24, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
            + struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0)
        )
        names: dict[int, str] = {}
        while True:
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=LH", data, off)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR or length < 16:
                    raise OSError("netlink refused the address dump")
                if kind == RTM_NEWADDR:
                    found = _parse_addr(data[off + 16 : off + length], names)
                    if found is not None:
                        out.append(found)
                off += (length + 3) & ~3


def _parse_addr(msg: bytes, names: dict[int, str]) -> tuple[str, Address] | None:
    family, prefix, _, _, index = struct.unpack_from("=BBBBI", msg)
    attrs: dict[int, bytes] = {}
    off = 8
    while off + 4 <= len(msg):
        alen, atype = struct.unpack_from("=HH", msg, off)
        if alen < 4:
            break
        attrs[atype] = msg[off + 4 : off + alen]
        off += (alen + 3) & ~3
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if index not in names:
        try:
            names[index] = socket.if_indextoname(index)
        except OSError:
            return None
    return names[index], ipaddress.ip_interface((ipaddress.ip_address(raw), prefix))


def resources_of(addresses: Iterable[tuple[str, Address]]) -> frozenset[str]:
    out: set[str] = set()
    for name, addr in addresses:
        out.add(f"iface:{name}")
        if not addr.ip.is_loopback and not addr.ip.is_link_local:
            out.add(f"net:{addr.network.with_prefixlen}")
            out.add(f"addr:{addr.ip}")
    return frozenset(out)


_cache: tuple[float, frozenset[str]] = (-1e18, frozenset())


def local_resources(now: float | None = None) -> frozenset[str]:
    """What this server offers service addresses (cached for ``CACHE_FOR`` seconds); empty
    when the kernel cannot be asked."""
    global _cache
    t = time.monotonic() if now is None else now
    if t - _cache[0] < CACHE_FOR:
        return _cache[1]
    try:
        found = resources_of(own_addresses())
    except (OSError, ValueError, struct.error):
        found = frozenset()
    _cache = (t, found)
    return found


def networks() -> frozenset[str] | None:
    """The ``net:`` and ``iface:`` values this server offers any service address, without
    the addresses held for its programs (they leave with the program); None when the kernel
    cannot be asked. Safe to call from the pulse thread."""
    try:
        own = own_addresses()
    except (OSError, ValueError, struct.error):
        return None
    held = {parse_service_address(v)[0].ip for vals in list(_wrapped.values()) for v in vals}
    found = resources_of((name, a) for name, a in own if a.ip not in held)
    return frozenset(r for r in found if r.startswith(("net:", "iface:")))


def offered(apps: Iterable[App]) -> frozenset[str]:
    """``local_resources()`` when an application has service addresses, else nothing."""
    return local_resources() if any(a.addresses for a in apps) else frozenset()


def device_for(value: str, addresses: Sequence[tuple[str, Address]]) -> str:
    """``ip/prefix@interface`` for the holder: the interface named, else the one on the
    address's network."""
    addr, named = parse_service_address(value)
    if named is not None:
        if (
            named not in {name for name, _ in addresses}
            and not Path(f"/sys/class/net/{named}").exists()
        ):
            raise SupervisorError(f"service address {value}: this server has no interface {named}")
        return f"{addr.with_prefixlen}@{named}"
    for name, own in addresses:
        if own.ip != addr.ip and own.network == addr.network:
            return f"{addr.with_prefixlen}@{name}"
    raise SupervisorError(
        f"service address {value}: no interface of this server is on {addr.network}"
    )


def _as_user(argv: Sequence[str], user: str | int | None) -> tuple[str, ...]:
    if user is None:
        return tuple(argv)
    return (sys.executable, "-S", str(HOLDER), "--user", str(user), "--exec-only", "--", *argv)


# The service addresses of the programs this sentinel started through the holder, by tag.
_wrapped: dict[str, tuple[str, ...]] = {}


def wrap(
    tag: str,
    addresses: Sequence[str],
    argv: Sequence[str],
    unload: Sequence[str] | None,
    user: str | int | None,
) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """The command and unload command the guard runs for a program with service addresses:
    the holder (as the sentinel's user, to add addresses), which becomes the program (as
    ``user``); unload commands run as ``user`` too."""
    try:
        own = own_addresses()
    except (OSError, ValueError, struct.error) as e:
        raise SupervisorError(f"{tag}: cannot read this server's addresses: {e}") from None
    held = [device_for(a, own) for a in addresses]
    _wrapped[tag] = tuple(addresses)
    holder = [sys.executable, "-S", str(HOLDER), "--tag", tag]
    for h in held:
        holder += ["--held", h]
    if user is not None:
        holder += ["--user", str(user)]
    return (*holder, "--", *argv), (_as_user(unload, user) if unload else None)


def health(argv: Sequence[str], user: str | int | None) -> tuple[str, ...]:
    """A health command of a program with service addresses, run as the program's user."""
    return _as_user(argv, user)


def released(tag: str) -> None:
    """The program of ``tag`` has ended: remove its addresses here and now (the warden
    does too; whichever comes second finds nothing to remove)."""
    values = _wrapped.pop(tag, ())
    if not values:
        return
    with contextlib.suppress(OSError, ValueError, struct.error):
        own = own_addresses()
        for value in values:
            addr, _ = parse_service_address(value)
            for name, held in own:
                if held.ip == addr.ip:
                    address_holder.remove(address_holder.Held(f"{held.with_prefixlen}@{name}"))

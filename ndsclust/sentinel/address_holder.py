#!/usr/bin/env python3
"""The service address holder: adds addresses, leaves a warden behind, becomes the program.

Started by the lease guard in place of a program with ``ndsclustServiceAddress``
(``ndsclust/sentinel/address.py`` builds the command line; the addresses arrive resolved
to their interface):

    python -S address_holder.py --tag TAG --held 198.18.5.10/24@lan0 [--user U] -- ARGV
    python -S address_holder.py --user U --exec-only -- ARGV   (unload and health commands)

Standard library only, run without the site module, so it costs a failover as little start
time as the program itself. It takes the address's lock (``LOCK_DIR``; the last copy's
warden holds it until it has removed the address), forks the warden, adds every address over
netlink (IPv6 without duplicate address detection, so it answers at once), drops to ``--user``
and execs ARGV: the program is the process the guard started, with its pid, its process
group and its lease.

The warden lives in a session of its own, out of the group the guard kills. Once the
program runs (the holder's close-on-exec pipe closes) it announces the addresses
(gratuitous ARP with ``arping -U`` for IPv4, an unsolicited neighbour advertisement with
the override flag for IPv6) and again every ``ANNOUNCE_EVERY`` seconds while the program
lives, watching it through a pidfd; the moment it ends, however it ends (unload, crash,
the guard's SIGKILL when the lease lapses or the sentinel dies, the kernel's when the guard
dies), the warden removes the addresses and exits, releasing the locks.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the holder is on a failover's critical path
    import subprocess

ANNOUNCE_EVERY = 2.0  # seconds between announcements while the address is held
LOCK_DIR = "/run/ndsclust-addresses"
LOCK_WAIT = 10.0  # seconds a holder waits for the last copy's warden
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_ADDRESS = 70  # the holder could not add an address: the program did not start


class Held:
    """One address and the interface it goes on."""

    def __init__(self, value: str) -> None:
        # Checked and made canonical by the sentinel (model.check_service_address); parsed
        # here without the ipaddress module, which costs a failover a visible start time.
        text, _, self.dev = value.partition("@")
        self.ip, _, prefix = text.partition("/")
        self.family = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        self.packed = socket.inet_pton(self.family, self.ip)
        self.prefix = int(prefix)
        if not self.dev or not 0 <= self.prefix <= 8 * len(self.packed):
            raise ValueError(f"{value!r}: write ip/prefix@interface")

    def __str__(self) -> str:
        return f"{self.ip}/{self.prefix}@{self.dev}"


def log(event: str, **fields: str) -> None:
    # The guard passes this line on as the program's output (event=output ... line=...).
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"event={event} {text}", file=sys.stderr, flush=True)


def tool(name: str) -> str:
    for d in PATH.split(":"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    raise OSError(f"{name} is not installed (looked in {PATH})")


# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
RTM_NEWADDR, RTM_DELADDR = 20, 21
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD = 0x02
EEXIST, EADDRNOTAVAIL = 17, 99


def _netlink(kind: int, flags: int, h: Held) -> int:
    """One address request to the kernel; returns its errno (0: done)."""
    family = h.family
    raw = h.packed
    attrs = b"".join(struct.pack("=HH", 4 + len(raw), t) + raw for t in (IFA_LOCAL, IFA_ADDRESS))
    if family == socket.AF_INET6:
        attrs += struct.pack("=HHI", 8, IFA_FLAGS, IFA_F_NODAD)  # answer at once
    body = struct.pack("=BBBBI", family, h.prefix, 0, 0, socket.if_nametoindex(h.dev))
    body += attrs
    msg = struct.pack("=LHHLL", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.settimeout(2.0)
        s.send(msg + body)
        reply = s.recv(4096)
    _, rtype = struct.unpack_from("=LH", reply)
    if rtype != NLMSG_ERROR:
        return 0
    (code,) = struct.unpack_from("=i", reply, 16)
    return -int(code)


def add(h: Held) -> None:
    code = _netlink(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, h)
    if code not in (0, EEXIST):
        raise OSError(code, f"adding {h}: {os.strerror(code)}")


def remove(h: Held) -> None:
    try:
        _netlink(RTM_DELADDR, 0, h)
    except OSError:
        pass


def neighbour_advertisement(target: bytes, mac: bytes) -> bytes:
    """An unsolicited ICMPv6 neighbour advertisement (RFC 4861 section 4.4) with the
    override flag and the target link-layer address option; the kernel fills the checksum."""
    flags = 0x20000000  # Override: replace what neighbours have cached
    return struct.pack("!BBHI", 136, 0, 0, flags) + target + struct.pack("!BB", 2, 1) + mac


def announce(h: Held) -> subprocess.Popen[bytes] | None:
    """Tell the neighbours this server answers for the address now (never raises). For
    IPv4 the ``arping`` started is returned: it sends at once, then waits a second for
    replies that never come, so the caller reaps it later rather than waiting."""
    import subprocess

    try:
        if h.family == socket.AF_INET:
            ip = h.ip
            return subprocess.Popen(
                [tool("arping"), "-q", "-U", "-c", "1", "-I", h.dev, "-s", ip, ip],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        with open(f"/sys/class/net/{h.dev}/address") as f:
            mac = bytes.fromhex(f.read().strip().replace(":", ""))
        index = socket.if_nametoindex(h.dev)
        target = h.ip
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            s.bind((str(target), 0, 0, index))
            s.sendto(neighbour_advertisement(h.packed, mac), ("ff02::1", 0, 0, index))
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        log("address_announce_failed", address=str(h), error=repr(str(e)))
    return None


def lock(h: Held) -> int:
    """Take the address's lock (waiting for the last copy's warden); returns its fd."""
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    netns = os.stat("/proc/self/ns/net").st_ino
    name = f"{netns}-{h.ip}".replace(":", "_")
    fd = os.open(f"{LOCK_DIR}/{name}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise OSError(f"{h}: the last copy still holds it after {LOCK_WAIT:g}s") from None
            time.sleep(0.005)


def warden(held: list[Held], locks: list[int]) -> int:
    """Fork the warden; returns the write end of its start pipe (close-on-exec)."""
    me = os.pidfd_open(os.getpid())
    read_end, write_end = os.pipe()
    if os.fork() != 0:
        os.close(read_end)
        os.close(me)
        os.wait()  # the first fork exits at once
        return write_end
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)  # the grandchild is re-parented: nobody waits for it
        keep = {read_end, me, *locks}
        for fd in range(3, 1024):
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the program's end ends it
        while os.read(read_end, 64):
            pass
        announcers: list[subprocess.Popen[bytes]] = []
        while not select.select([me], [], [], 0)[0]:
            announcers = [p for p in announcers if p.poll() is None]
            announcers += [p for h in held if (p := announce(h)) is not None]
            select.select([me], [], [], ANNOUNCE_EVERY)
        for h in held:
            remove(h)
        for p in announcers:
            try:
                p.kill()
            except OSError:
                pass
    finally:
        os._exit(0)


def drop_to(user: str | None) -> None:
    if user is None:
        return
    import pwd

    entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def main(argv: list[str]) -> int:
    if "--" not in argv:
        sys.exit(__doc__)
    split = argv.index("--")
    opts, program = argv[:split], argv[split + 1 :]
    tag, user, values, exec_only = "-", None, [], False
    it = iter(opts)
    for opt in it:
        if opt == "--exec-only":
            exec_only = True
        elif opt in ("--tag", "--held", "--user"):
            value = next(it, "")
            if opt == "--tag":
                tag = value
            elif opt == "--user":
                user = value
            else:
                values.append(value)
        else:
            sys.exit(f"unknown option {opt!r}\n{__doc__}")
    if not program:
        sys.exit(__doc__)
    try:
        if not exec_only:
            held = [Held(v) for v in values]
            locks = [lock(h) for h in held]
            warden(held, locks)
            for h in held:
                add(h)
                log("address_added", tag=tag, address=str(h))
        drop_to(user)
        os.execv(program[0], program)  # closes the start pipe: the warden announces
    except (OSError, ValueError, KeyError) as e:
        log("address_failed", tag=tag, error=repr(str(e)))
        return EXIT_ADDRESS  # the warden removes what was added


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

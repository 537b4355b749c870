"""The ``disk`` channel: the drive pulse on shared storage (FIG. 7A, processes 800 and 804;
claims 13 and 44).

The patent's primary asserts a pulse on a shared SCSI device and the backup watches the
device's status change; a constant status means the primary failed. Here the device is a
file or block device every server can reach, divided into one fixed-size slot per server
(slot index = position of the server's name in the configured, ordered server list, the
same list on every server). Every ``interval`` a sentinel writes its own slot with a new
counter, then reads every slot: a peer is heard when its counter changed since the last
read. A slot first seen is only a baseline, so a slot left behind by a server that died
long ago is not mistaken for a live one.

Slot layout (``SLOT_SIZE`` bytes, everything after the checksum zero)::

    0    4   magic b"NDSK"
    4    1   version (1)
    5    3   zero
    8    8   counter, unsigned
    16   64  server name, UTF-8, NUL-padded
    80   64  cluster name, UTF-8, NUL-padded
    144  4   CRC-32 of bytes 0-143

The 148 meaningful bytes sit within one 512-byte sector, which devices write atomically;
the checksum catches anything else (a torn or foreign write).

``direct`` (O_DIRECT) reads and writes the storage itself, past this host's page cache.
A block device shared between hosts needs it: read through the page cache, each host
would keep serving the peers' old slots from its own memory and never hear them. The
default (``direct=None``) decides at every open: on for a block device, off for a file;
files on a shared or cluster filesystem (NFS, GFS2, OCFS2) should set it where the
filesystem supports O_DIRECT. O_DIRECT wants buffers, offsets and lengths aligned to the
device's logical block size (BLKSSZGET; 4096 assumed for files): the buffers are anonymous
mmaps (page-aligned), slots are 4096 bytes, and the whole slot area is read at once from
offset 0. A device whose block size does not divide 4096, or a filesystem that refuses
O_DIRECT (EINVAL), leaves the channel degraded with a reason naming the way out; it never
falls back to cached reads by itself. ``sync`` adds O_DSYNC so a write is on the device
before the next one.

Trouble with the file (cannot open, write or read) never stops the sentinel: the channel
reports itself ``degraded`` in its stats, logs the change once, and tries again every
interval, so storage that comes back is used again.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from ndsclust.errors import ConfigError
from ndsclust.logfmt import line as logline
from ndsclust.model import ServerName
from ndsclust.sentinel.channels import ChannelThread, HeardChannel, check_timing, log, os_error_name

SLOT_SIZE = 4096
MAGIC = b"NDSK"
VERSION = 1
_NAME_BYTES = 64
_BODY = struct.Struct(f"!4sB3xQ{_NAME_BYTES}s{_NAME_BYTES}s")
_CRC = struct.Struct("!I")
# <linux/fs.h> BLKSSZGET: a block device's logical block size, an int.
BLKSSZGET = 0x1268
FILE_BLOCK_SIZE = 4096

_COUNTERS = (
    "writes",
    "reads",
    "open_errors",
    "write_errors",
    "read_errors",
    "bad_magic",
    "bad_version",
    "bad_checksum",
    "wrong_owner",
    "wrong_cluster",
)


def encode_slot(server: str, cluster: str, counter: int) -> bytes:
    """One slot's bytes, padded to ``SLOT_SIZE``."""
    body = _BODY.pack(MAGIC, VERSION, counter, server.encode("utf-8"), cluster.encode("utf-8"))
    return (body + _CRC.pack(zlib.crc32(body))).ljust(SLOT_SIZE, b"\0")


def wants_direct(direct: bool | None, mode: int) -> bool:
    """Whether to open with O_DIRECT: as configured, else for a block device only
    (``mode``: ``st_mode`` of the path, 0 when it does not exist yet)."""
    return stat.S_ISBLK(mode) if direct is None else direct


def block_size(fd: int, mode: int) -> int:
    """The logical block size O_DIRECT I/O on ``fd`` must be aligned to."""
    if not stat.S_ISBLK(mode):
        return FILE_BLOCK_SIZE
    raw = fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4)
    return int(struct.unpack("i", raw)[0])


class DiskChannel(HeardChannel):
    name = "disk"

    def __init__(
        self,
        *,
        me: ServerName,
        cluster: str,
        path: str,
        servers: Sequence[ServerName],
        interval: float = 0.5,
        timeout: float = 3.0,
        sync: bool = False,
        direct: bool | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        problems: list[str] = []
        if me not in servers:
            problems.append(f"servers: this server {me!r} has no slot; add it to the list")
        if len(set(servers)) != len(servers):
            problems.append("servers: a server is listed twice; each needs exactly one slot")
        for what, value in (("cluster", cluster), *(("servers", s) for s in servers)):
            if len(value.encode("utf-8")) >= _NAME_BYTES:
                problems.append(f"{what}: {value!r} is longer than {_NAME_BYTES - 1} bytes")
        if not path:
            problems.append("path: name the shared file or block device")
        check_timing(problems, interval, timeout)
        if problems:
            raise ConfigError("channels.disk", problems)
        self.timeout = timeout
        self._me = me
        self._cluster = cluster
        self._path = path
        self._servers = tuple(servers)
        self._slot = self._servers.index(me)
        self._interval = interval
        self._flags = os.O_RDWR | os.O_CREAT | (os.O_DSYNC if sync else 0)
        self._direct = direct
        self._opened: tuple[bool, int] | None = None  # (direct, block size) of the last open
        self._monotonic = monotonic

        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter({c: 0 for c in _COUNTERS})
        self._heard: dict[ServerName, float] = {}
        self._degraded = False

        # Owned by the thread once started. Anonymous mmaps are page-aligned, as O_DIRECT needs.
        self._fd: int | None = None
        self._counter = time.time_ns()
        self._seen: dict[ServerName, int] = {}
        self._owner_problem: dict[int, str] = {}
        self._write_buf = mmap.mmap(-1, SLOT_SIZE)
        self._read_buf = mmap.mmap(-1, SLOT_SIZE * len(self._servers))
        self._runner = ChannelThread("disk", self._run)

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        if not self._runner.stop(path=self._path):
            return  # stopped already, or stuck in I/O on hung storage: the fd is its own
        self._close()
        self._write_buf.close()
        self._read_buf.close()

    def stats(self) -> Mapping[str, int]:
        with self._lock:
            out = dict(self._stats)
            out["degraded"] = int(self._degraded)
        return out

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._round()
                if self._runner.stopping.wait(self._interval):
                    return
        except Exception:
            log.exception(logline("channel_crashed", channel="disk", path=self._path))
            with self._lock:
                self._degraded = True

    def _round(self) -> None:
        trouble = self._pulse()
        with self._lock:
            was = self._degraded
            self._degraded = trouble is not None
        if trouble is not None and not was:
            log.warning(logline("channel_degraded", channel="disk", path=self._path, **trouble))
        elif trouble is None and was:
            log.info(logline("channel_recovered", channel="disk", path=self._path))

    def _pulse(self) -> dict[str, str] | None:
        """Write our slot, read everyone's; what went wrong, or None."""
        if self._fd is None:
            trouble = self._open()
            if trouble is not None:
                return trouble
        fd = self._fd
        assert fd is not None
        self._counter += 1
        self._write_buf[:] = encode_slot(self._me, self._cluster, self._counter)
        try:
            written = os.pwritev(fd, [self._write_buf], self._slot * SLOT_SIZE)
        except OSError as exc:
            return self._failed("write", os_error_name(exc))
        if written != SLOT_SIZE:
            return self._failed("write", f"short_write_{written}")
        try:
            length = os.preadv(fd, [self._read_buf], 0)
        except OSError as exc:
            return self._failed("read", os_error_name(exc))
        now = self._monotonic()
        with self._lock:
            self._stats["writes"] += 1
            self._stats["reads"] += 1
        # Slots past the end of a short file were never written: nothing to hear there.
        for index in range(min(length // SLOT_SIZE, len(self._servers))):
            if index != self._slot:
                offset = index * SLOT_SIZE
                self._look(index, self._read_buf[offset : offset + _BODY.size + _CRC.size], now)
        return None

    def _open(self) -> dict[str, str] | None:
        """Open the path, with O_DIRECT if wanted; what went wrong, or None."""
        try:
            mode = os.stat(self._path).st_mode
        except FileNotFoundError:
            mode = 0  # a file, created by the open below
        except OSError as exc:
            return self._failed("open", os_error_name(exc))
        direct = wants_direct(self._direct, mode)
        try:
            fd = os.open(self._path, self._flags | (os.O_DIRECT if direct else 0), 0o600)
        except OSError as exc:
            if direct and exc.errno == errno.EINVAL:
                return self._failed(
                    "open",
                    "EINVAL",
                    "the filesystem refuses O_DIRECT; set channels.disk.direct: false",
                )
            return self._failed("open", os_error_name(exc))
        self._fd = fd
        try:
            size = block_size(fd, mode)
        except OSError as exc:
            return self._failed("open", os_error_name(exc), "cannot read the logical block size")
        if direct and (size <= 0 or SLOT_SIZE % size):
            return self._failed(
                "open",
                f"block_size_{size}",
                f"O_DIRECT needs {SLOT_SIZE}-byte "
                "slots aligned to the block size; set channels.disk.direct: false",
            )
        if self._opened != (direct, size):
            log.info(
                logline(
                    "disk_opened",
                    channel="disk",
                    path=self._path,
                    direct=int(direct),
                    sync=int(bool(self._flags & os.O_DSYNC)),
                    block_size=size,
                )
            )
            self._opened = (direct, size)
        return None

    def _failed(self, op: str, error: str, detail: str = "") -> dict[str, str]:
        with self._lock:
            self._stats[f"{op}_errors"] += 1
        # Reopen next round: the storage may have been remounted or reconnected.
        self._close()
        return {"op": op, "error": error, **({"detail": detail} if detail else {})}

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _look(self, index: int, raw: bytes, now: float) -> None:
        server = self._servers[index]
        if not any(raw):
            return  # never written: the server has not run with this file yet
        magic, version, counter, name, cluster = _BODY.unpack_from(raw)
        problem = None
        if magic != MAGIC:
            problem = "bad_magic"
        elif version != VERSION:
            problem = "bad_version"
        elif _CRC.unpack_from(raw, _BODY.size)[0] != zlib.crc32(raw[: _BODY.size]):
            problem = "bad_checksum"
        elif cluster.rstrip(b"\0") != self._cluster.encode("utf-8"):
            problem = "wrong_cluster"
        elif name.rstrip(b"\0") != server.encode("utf-8"):
            problem = "wrong_owner"
        if problem is not None:
            with self._lock:
                self._stats[problem] += 1
            if self._owner_problem.get(index) != problem:
                # Logged once per change: the servers' lists disagree, or another cluster
                # or program writes this file.
                log.warning(
                    logline(
                        "disk_slot_invalid",
                        channel="disk",
                        path=self._path,
                        slot=index,
                        expected=server,
                        problem=problem,
                    )
                )
            self._owner_problem[index] = problem
            return
        self._owner_problem.pop(index, None)
        previous = self._seen.get(server)
        self._seen[server] = counter
        # Claim 13: a change of the device's status means the peer is operational.
        if previous is not None and previous != counter:
            with self._lock:
                self._heard[server] = now

"""The disk channel with O_DIRECT, on a real filesystem and on a real (loop) block device.

A loop device stands in for storage shared between hosts: the channel on ``/dev/loopN``
goes through the block device's page cache, a "peer" writing the backing file does not,
as another host's writes to a shared array would not. Each loop device is detached in a
``finally``, whatever the test did.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_channels import running  # the channels module beside this one: one thread check

from ndsclust.lab.directory import wait_until
from ndsclust.model import ServerName
from ndsclust.sentinel.channels import disk as disk_module
from ndsclust.sentinel.channels.disk import SLOT_SIZE, DiskChannel, block_size

A, B = ServerName("alpha"), ServerName("beta")
# Not /tmp: it may be tmpfs, which refuses O_DIRECT on older kernels.
DIRECT_BASE = "/var/tmp"


def channel(me: ServerName, path: str | Path, **kw: Any) -> DiskChannel:
    return DiskChannel(
        me=me, cluster="test", path=str(path), servers=(A, B), interval=0.05, timeout=0.5, **kw
    )


def open_flags(path: str | Path) -> list[int]:
    """The file status flags (``/proc/self/fdinfo``) of every descriptor of this process
    open on ``path``."""
    target = os.path.realpath(path)
    flags = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != target:
                continue
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue  # closed meanwhile
        flags.extend(
            int(line.split()[1], 8) for line in info.splitlines() if line.startswith("flags:")
        )
    return flags


def opened(path: str | Path, count: int) -> list[int]:
    """The flags of ``count`` descriptors on ``path``, once the channels have opened it."""

    def check() -> list[int] | None:
        flags = open_flags(path)
        return flags if len(flags) == count else None

    return wait_until(check, timeout=2.0, what=f"{count} descriptors open on {path}")


def heard_twice(ch: DiskChannel, peer: ServerName) -> bool:
    """The peer's counter advanced at least twice: heard, then heard again later."""
    first = wait_until(lambda: ch.observe(0).get(peer), timeout=2.0, what=f"{peer} heard")
    return bool(
        wait_until(
            lambda: ch.observe(0).get(peer, first) > first, timeout=2.0, what=f"{peer} heard again"
        )
    )


@pytest.fixture
def direct_dir() -> Iterator[Path]:
    """A directory on a filesystem that accepts O_DIRECT (ext4 and the like)."""
    where = Path(tempfile.mkdtemp(prefix="ndsclust-direct-", dir=DIRECT_BASE))
    try:
        try:
            os.close(os.open(where / "probe", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600))
        except OSError as e:
            pytest.fail(
                f"{DIRECT_BASE} refuses O_DIRECT ({e.strerror}): the suite needs a "
                "filesystem that accepts it there (ext4, xfs)"
            )
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@contextmanager
def loop_device(backing: Path, sector_size: int = 512) -> Iterator[str]:
    """``/dev/loopN`` over ``backing`` (buffered, so the backing file's own page cache is
    the one the device reads through), detached on the way out."""
    assert os.geteuid() == 0 and shutil.which("losetup"), (
        "loop devices need root and losetup (util-linux): run the suite as root, as make test does"
    )
    with open(backing, "wb") as f:
        f.truncate(1 << 20)
    done = subprocess.run(
        [
            "losetup",
            "--show",
            "--find",
            "--direct-io=off",
            f"--sector-size={sector_size}",
            str(backing),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, f"losetup cannot attach a loop device: {done.stderr.strip()}"
    device = done.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=True, timeout=30)


# -- a file on a filesystem with O_DIRECT ---------------------------------------------------


def test_direct_file_is_really_opened_with_o_direct(direct_dir: Path) -> None:
    path = direct_dir / "pulse"
    a, b = channel(A, path, direct=True), channel(B, path, direct=True, sync=True)
    with running(a, b):
        flags = opened(path, 2)
        assert all(f & os.O_DIRECT for f in flags), [oct(f) for f in flags]
        assert sum(bool(f & os.O_DSYNC) for f in flags) == 1
        assert heard_twice(a, B) and heard_twice(b, A)
        assert a.stats()["degraded"] == b.stats()["degraded"] == 0
    assert path.stat().st_size == 2 * SLOT_SIZE


def test_a_file_is_buffered_unless_direct_is_set(direct_dir: Path) -> None:
    path = direct_dir / "pulse"
    with running(channel(A, path)):
        assert not any(f & os.O_DIRECT for f in opened(path, 1))


def test_refused_o_direct_degrades_naming_the_path(
    direct_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A filesystem without O_DIRECT answers EINVAL: the channel says so and what to set,
    and does not quietly go on through the page cache."""
    path = direct_dir / "pulse"
    real_open = os.open

    def refusing(file: Any, flags: int, *args: Any, **kw: Any) -> int:
        if flags & os.O_DIRECT and str(file) == str(path):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(file))
        return real_open(file, flags, *args, **kw)

    monkeypatch.setattr(disk_module.os, "open", refusing)
    a = channel(A, path, direct=True)
    with caplog.at_level(logging.INFO, logger="ndsclust.sentinel.channels"), running(a):
        wait_until(lambda: a.stats()["open_errors"] >= 3, timeout=2.0, what="open retried")
        assert a.stats()["degraded"] == 1 and a.stats()["writes"] == 0
    assert not path.exists()  # nothing was written without O_DIRECT
    lines = [r.getMessage() for r in caplog.records if "channel_degraded" in r.getMessage()]
    assert len(lines) == 1  # once, not every interval
    assert lines[0].startswith(
        f"event=channel_degraded channel=disk path={path} op=open error=EINVAL "
    )
    assert "set channels.disk.direct: false" in lines[0]


# -- a block device -----------------------------------------------------------------------


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_two_servers_on_one_block_device_hear_each_other(
    direct_dir: Path, sector_size: int
) -> None:
    """Unset, ``direct`` is on for a block device; the I/O is aligned for 512- and
    4096-byte logical blocks alike."""
    with loop_device(direct_dir / "shared.img", sector_size) as device:
        fd = os.open(device, os.O_RDONLY)
        try:
            assert block_size(fd, os.fstat(fd).st_mode) == sector_size
        finally:
            os.close(fd)
        a, b = channel(A, device), channel(B, device)
        with running(a, b):
            flags = opened(device, 2)
            assert all(f & os.O_DIRECT for f in flags), [oct(f) for f in flags]
            assert heard_twice(a, B) and heard_twice(b, A)
            assert a.stats()["degraded"] == b.stats()["degraded"] == 0


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "cached"])
def test_a_peer_writing_the_storage_itself_is_heard_only_with_direct(
    direct_dir: Path, direct: bool
) -> None:
    """The point of O_DIRECT. beta writes the storage behind the device (the backing
    file), as another host writes a shared array: alpha, on the device, hears beta only
    when it reads past its page cache. Cached, alpha keeps reading the copy it read first,
    which is why a block device defaults to direct."""
    backing = direct_dir / "shared.img"
    with loop_device(backing) as device:
        b = channel(B, backing, direct=True)
        with running(b):
            wait_until(lambda: b.stats()["writes"] >= 2, timeout=2.0, what="beta writing")
            a = channel(A, device, direct=direct)
            with running(a):
                if direct:
                    assert heard_twice(a, B)
                    assert heard_twice(b, A)
                else:
                    wait_until(
                        lambda: a.stats()["reads"] >= 10 and b.stats()["writes"] >= 12,
                        timeout=3.0,
                        what="rounds on both sides",
                    )
                    assert B not in a.observe(0)
                assert a.stats()["degraded"] == 0

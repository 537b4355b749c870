"""The ``channels`` section of the sentinel configuration: the liveness channels
(docs/design.md section 4, "Channels") and what each is configured with.

::

    channels:
      lan: {addresses: [ip:port, ...], key_file: FILE, old_key_file: FILE, interval: 0.1}
      directory: {interval: 0.1}
      disk: {path: FILE, servers: [name, ...], interval: 0.1, direct: null, sync: false}
      witness: {address: ip:port, interval: 0.1, timeout: 0.35}

Read by ``ndsclust.config.parse`` with the same ``Reader``, so its problems are reported
with every other one (docs/style.md section 6). A channel's timeout is
``timeouts.failover``; the heartbeat intervals it returns feed the fencing inequality
(``ndsclust.config.check_timing``). Keys are read from their files here, each at least 16
bytes, and named in packets by ``key_id``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ndsclust.confread import Reader
from ndsclust.model import ServerName, check_server_name

CHANNEL_KEYS = {"lan", "directory", "disk", "witness"}


@dataclass(frozen=True, slots=True)
class LanSettings:
    addresses: tuple[str, ...]  # "ip:port" this server binds and peers send to
    interval: float
    timeout: float
    keys: Mapping[str, bytes]  # key id -> cluster key; two during a rotation
    send_key: str


@dataclass(frozen=True, slots=True)
class DiskSettings:
    path: str
    servers: tuple[ServerName, ...]  # slot order, the same list on every server
    interval: float
    timeout: float
    direct: bool | None = None  # O_DIRECT; None: decided at open, on for a block device
    sync: bool = False  # O_DSYNC


@dataclass(frozen=True, slots=True)
class WitnessSettings:
    address: str
    interval: float
    timeout: float


@dataclass(frozen=True, slots=True)
class DirectoryChannelSettings:
    interval: float
    timeout: float


@dataclass(frozen=True, slots=True)
class Channels:
    """The channels configured (None: not configured) and their heartbeat intervals."""

    lan: LanSettings | None
    directory: DirectoryChannelSettings | None
    disk: DiskSettings | None
    witness: WitnessSettings | None
    intervals: tuple[float, ...]  # of lan, directory and disk, those configured


def parse_channels(
    r: Reader, ch: Mapping[str, Any], server: ServerName, failover: float
) -> Channels:
    """The ``channels`` section ``ch`` of the configuration of ``server``, every problem
    recorded in ``r``; each channel times out after ``failover`` seconds."""
    lan = disk = witness = None
    directory_channel = None
    intervals: list[float] = []
    if (
        c := r.section(
            ch, "lan", "channels.", known={"addresses", "interval", "key_file", "old_key_file"}
        )
    ) is not None:
        addrs = [
            a
            for i, a in enumerate(r.string_list(c, "addresses", "channels.lan."))
            if r.address(a, f"channels.lan.addresses[{i}]")
        ]
        if not addrs:
            r.bad("channels.lan.addresses", "is missing; list this server's heartbeat ip:port")
        keys: dict[str, bytes] = {}
        send_key = ""
        key_file = r.string(c, "key_file", "channels.lan.", required=True)
        if key_file and (k := _secret_file(r, key_file, "channels.lan.key_file")):
            send_key = key_id(k)
            keys[send_key] = k
        old = r.string(c, "old_key_file", "channels.lan.")
        if old and (k := _secret_file(r, old, "channels.lan.old_key_file")):
            keys[key_id(k)] = k
        interval = r.number(c, "interval", "channels.lan.", 0.1, low=0.005, high=60)
        intervals.append(interval)
        lan = LanSettings(tuple(addrs), interval, failover, keys, send_key)
    if (c := r.section(ch, "directory", "channels.", known={"interval"})) is not None:
        interval = r.number(c, "interval", "channels.directory.", 0.1, low=0.01, high=60)
        intervals.append(interval)
        directory_channel = DirectoryChannelSettings(interval, failover)
    if (
        c := r.section(
            ch, "disk", "channels.", known={"path", "servers", "interval", "direct", "sync"}
        )
    ) is not None:
        servers = r.checked_list(c, "servers", "channels.disk.", check_server_name)
        if server and servers and server not in servers:
            r.bad(
                "channels.disk.servers",
                f"does not list this server {server!r}; every server "
                "needs a slot, in the same order everywhere",
            )
        interval = r.number(c, "interval", "channels.disk.", 0.1, low=0.005, high=60)
        intervals.append(interval)
        disk = DiskSettings(
            r.string(c, "path", "channels.disk.", required=True) or "",
            tuple(servers),
            interval,
            failover,
            direct=r.flag(c, "direct", "channels.disk.", None),
            sync=bool(r.flag(c, "sync", "channels.disk.", False)),
        )
    if (
        c := r.section(ch, "witness", "channels.", known={"address", "interval", "timeout"})
    ) is not None:
        addr = r.string(c, "address", "channels.witness.", required=True) or ""
        if addr:
            r.address(addr, "channels.witness.address")
        witness = WitnessSettings(
            addr,
            r.number(c, "interval", "channels.witness.", 0.1, low=0.01, high=60),
            r.number(c, "timeout", "channels.witness.", 0.35, low=0.01, high=60),
        )
        if witness.timeout <= witness.interval:
            r.bad(
                "channels.witness.timeout",
                f"{witness.timeout}s must exceed the interval ({witness.interval}s)",
            )
    if ch and not (lan or directory_channel or disk):
        r.bad("channels", "configure at least one of lan, directory, disk")
    return Channels(lan, directory_channel, disk, witness, tuple(intervals))


def key_id(key: bytes) -> str:
    """A key's id in heartbeat packets: derived from the key itself, so every server names a
    key the same way during a rotation whichever file holds it (old_key_file or key_file)."""
    return hashlib.sha256(b"ndsclust-heartbeat-key-id\0" + key).hexdigest()[:12]


def _secret_file(r: Reader, path_value: str, path: str) -> bytes | None:
    """The key in the file ``path_value`` (``path``: its YAML path), or None with the
    problem recorded."""
    try:
        data = Path(path_value).read_bytes().strip()
    except OSError as e:
        r.bad(path, f"{path_value}: {e.strerror}")
        return None
    except ValueError as e:  # a NUL in the path
        r.bad(path, f"{path_value!r}: {e}")
        return None
    if len(data) < 16:
        r.bad(
            path,
            f"{path_value}: key is {len(data)} bytes; at least 16 are needed "
            "(generate one with: head -c 32 /dev/urandom | base64 > FILE)",
        )
        return None
    return data

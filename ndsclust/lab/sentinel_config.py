"""What a lab sentinel runs with: its configuration, as ``ndsclust.lab.cluster`` writes it
to the server's ``sentinel.yaml``, and the lab's timings that go into it.

The configuration is a pure function of the server and the lab's settings: every server's
channels (lan with the shared key, directory, the shared disk-pulse file, the witness), its
provider and identity (directory.bind_dn and password_file, verifying the providers against
the lab CA), its timeouts over the lab's own (``LAB_TIMEOUTS``) and its HTTP face.

The lab's timings: ``timeouts`` (the sentinel's ``timeouts`` section, over the lab's own
start-up and stop grace), ``intervals`` (one number for every heartbeat channel, or a
mapping channel -> seconds for ``lan``, ``directory`` and ``disk``; a channel left out
keeps the sentinel's default) and the witness's interval and timeout
(``ndsclust.lab.witness``). ``tools.timings`` builds all of them from a sentinel
configuration file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ndsclust.lab.directory import DirectoryCluster
from ndsclust.lab.provider import LabError

if TYPE_CHECKING:
    from ndsclust.lab.cluster import LabServer

# Heartbeat channels whose interval ``intervals`` may set.
INTERVAL_CHANNELS = ("lan", "directory", "disk")
# The lab's own timeouts, which those given override: a lab sentinel starts and unloads
# quickly.
LAB_TIMEOUTS: Mapping[str, float] = {"stop_grace": 2.0, "startup_grace": 2.0}


def channel_intervals(intervals: float | Mapping[str, float] | None) -> dict[str, float]:
    """The interval of each heartbeat channel the lab sets: one number for every channel
    of ``INTERVAL_CHANNELS``, or a mapping channel -> seconds (a channel left out keeps the
    sentinel's default). An unknown channel raises ``LabError``."""
    if isinstance(intervals, Mapping):
        unknown = sorted(set(intervals) - set(INTERVAL_CHANNELS))
        if unknown:
            raise LabError(
                f"intervals for unknown channel(s) {', '.join(unknown)}; "
                f"channels: {', '.join(INTERVAL_CHANNELS)}"
            )
        return {k: float(v) for k, v in intervals.items()}
    if intervals is not None:
        return {ch: float(intervals) for ch in INTERVAL_CHANNELS}
    return {}


def sentinel_config(
    server: LabServer,
    directory: DirectoryCluster,
    *,
    names: Sequence[str],
    key_file: Path,
    password_file: Path,
    disk_path: Path | None,
    intervals: Mapping[str, float],
    witness: Mapping[str, Any] | None,
    timeouts: Mapping[str, Any],
    log_level: str,
    plain_http: bool,
) -> dict[str, Any]:
    """The sentinel configuration of ``server``: ``names`` are the lab's servers in order
    (provider ``i`` is server ``i``'s), ``disk_path`` the shared disk-pulse file (None: no
    disk channel), ``witness`` the witness channel's section (None: no witness),
    ``plain_http`` serves the HTTP face without TLS."""
    d = directory
    channels: dict[str, Any] = {
        "lan": {"addresses": [server.address], "key_file": str(key_file)},
        "directory": {},
    }
    if disk_path is not None:
        channels["disk"] = {"path": str(disk_path), "servers": list(names)}
    for name, ch in channels.items():
        if name in intervals:
            ch["interval"] = intervals[name]
    if witness is not None:
        # Where the witness decides (two servers), fencing waits for it to be
        # unreachable: its timeout + 0.1 s counts as a fence time, which the default
        # failover timeout covers (config.fence_bound).
        channels["witness"] = dict(witness)
    cfg: dict[str, Any] = {
        "server": server.name,
        "cluster": "lab",
        "directory": {
            "uris": d.uris,
            "local_uri": d.providers[server.index].url,
            "provider_servers": {p.url: names[i] for i, p in enumerate(d.providers)},
            "suffix": d.suffix,
            "pulse_suffix": d.pulse_suffix,
            "bind_dn": server.bind_dn,
            "password_file": str(password_file),
            "ca_file": d.ca_file,
        },
        "resources": list(server.resources),
        "channels": channels,
        "timeouts": {**LAB_TIMEOUTS, **timeouts},
        "programs": {"cwd": str(server.dir)},
        "control_socket": str(server.dir / "control.sock"),
        "log": {"level": log_level},
    }
    if server.http:
        cfg["http"] = {"listen": server.http, "plain": plain_http}
    return cfg

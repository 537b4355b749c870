"""Lab timings taken from a sentinel configuration file.

``read_timings(path)`` reads a sentinel YAML (``deploy/sentinel.example.yaml``, or a
server's ``/etc/ndsclust/sentinel.yaml``) for its timing keys only: ``channels.lan``,
``channels.directory`` and ``channels.disk`` ``interval``, ``channels.witness`` ``interval``
and ``timeout``, and every key of ``timeouts``. The values go through the sentinel's own
loader (``ndsclust.config.parse``, on a skeleton configuration holding them and nothing of
the file's addresses, paths or keys), so ``'500ms'`` is read as the sentinel reads it and
a file whose timings break the fencing inequality is refused here, before a lab starts.

``Timings.lab_options()`` turns them into ``LabCluster`` options: per-channel
``intervals``, the ``timeouts`` the file sets (keys it leaves out keep the lab's own
values), and, when the file configures a witness, the lab's witness with the file's
interval and timeout. ``lab_defaults()`` describes a lab given none of these options.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ndsclust import config
from ndsclust.errors import ConfigError
from ndsclust.lab.provider import LabError
from ndsclust.lab.sentinel_config import LAB_TIMEOUTS

CHANNELS = ("lan", "directory", "disk")
TIMEOUT_KEYS = config.TIMEOUT_KEYS
LAB_SOURCE = "lab-defaults"
# The skeleton's stand-ins for what the loader wants besides timings; never used to connect.
_SKELETON_URI = "ldapi://%2Frun%2Fndsclust-timings"
_SKELETON_ADDRESS = "127.0.0.1:9"


@dataclass(frozen=True, slots=True)
class Timings:
    source: str  # the file read, or LAB_SOURCE
    intervals: Mapping[str, float]  # channel -> heartbeat interval, as the file sets
    timeouts: Mapping[str, float]  # timeouts.* the file sets
    witness: tuple[float, float] | None  # (interval, timeout) when the file has one
    effective: config.Timeouts = field(compare=False)  # with the loader's defaults filled in
    effective_intervals: Mapping[str, float] = field(default_factory=dict, compare=False)

    @property
    def failover(self) -> float:
        return self.effective.failover

    def lab_options(self) -> dict[str, Any]:
        """Keyword arguments for ``LabCluster`` (empty for ``lab_defaults()``)."""
        opts: dict[str, Any] = {}
        if self.intervals:
            opts["intervals"] = dict(self.intervals)
        if self.timeouts:
            opts["timeouts"] = dict(self.timeouts)
        if self.witness is not None:
            opts.update(
                witness=True, witness_interval=self.witness[0], witness_timeout=self.witness[1]
            )
        return opts

    def line(self) -> str:
        """The timings on one line: ``timings: file=... failover=8 ... witness=0.5/2``."""
        t = self.effective
        parts = [
            f"timings: file={self.source}",
            f"failover={t.failover:g}",
            f"fence={t.fence:g}",
            f"lease={t.lease:g}",
            f"loop_interval={t.loop_interval:g}",
        ]
        parts += [
            f"{ch}={self.effective_intervals[ch]:g}"
            for ch in CHANNELS
            if ch in self.effective_intervals
        ]
        parts.append(
            "witness=" + (f"{self.witness[0]:g}/{self.witness[1]:g}" if self.witness else "none")
        )
        return " ".join(parts)


def _mapping(data: Any, where: str, source: str) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise LabError(f"{source}: {where} must be a mapping, not {type(data).__name__}")
    return data


def _parse(
    channels: Mapping[str, Mapping[str, Any]], timeouts: Mapping[str, Any], source: str
) -> config.Config:
    """Run the timing values through the sentinel's loader on a skeleton configuration."""
    with tempfile.TemporaryDirectory(prefix="ndsclust-timings-") as tmp:
        key = Path(tmp) / "cluster.key"
        key.write_text("0" * 32)
        ch: dict[str, Any] = {
            "lan": {
                "addresses": [_SKELETON_ADDRESS],
                "key_file": str(key),
                **channels.get("lan", {}),
            },
            "directory": dict(channels.get("directory", {})),
            "disk": {
                "path": str(Path(tmp) / "disk"),
                "servers": ["lab"],
                **channels.get("disk", {}),
            },
        }
        if "witness" in channels:
            ch["witness"] = {"address": _SKELETON_ADDRESS, **channels["witness"]}
        doc = {
            "server": "lab",
            "directory": {"uris": [_SKELETON_URI], "suffix": "dc=lab"},
            "channels": ch,
            "timeouts": dict(timeouts),
        }
        try:
            return config.parse(doc, source)
        except ConfigError as e:
            raise LabError(
                f"the timings of {source} are refused by the sentinel's loader: {e}"
            ) from None


# The checkout these tools run from: a relative path such as deploy/sentinel.example.yaml
# is found there too when the tools run from another directory.
CHECKOUT = Path(__file__).resolve().parents[1]


def read_timings(path: str | Path) -> Timings:
    """The timings of the sentinel configuration at ``path`` (see the module docstring); a
    relative path missing here is looked for in the checkout."""
    source = str(path)
    file = Path(path)
    if not file.is_absolute() and not file.exists() and (CHECKOUT / file).exists():
        file = CHECKOUT / file
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise LabError(f"{source}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise LabError(f"{source}: not valid YAML: {e}") from None
    data = _mapping(data, "the file", source)
    channels_in = _mapping(data.get("channels"), "channels", source)
    channels: dict[str, dict[str, Any]] = {}
    for ch in CHANNELS:
        section = _mapping(channels_in.get(ch), f"channels.{ch}", source)
        if "interval" in section:
            channels[ch] = {"interval": section["interval"]}
    witness_in = channels_in.get("witness")
    if witness_in is not None:
        section = _mapping(witness_in, "channels.witness", source)
        channels["witness"] = {k: section[k] for k in ("interval", "timeout") if k in section}
    timeouts_in = _mapping(data.get("timeouts"), "timeouts", source)
    timeouts = {k: timeouts_in[k] for k in TIMEOUT_KEYS if k in timeouts_in}
    cfg = _parse(channels, timeouts, source)
    assert cfg.lan is not None and cfg.directory_channel is not None and cfg.disk is not None
    effective = {
        "lan": cfg.lan.interval,
        "directory": cfg.directory_channel.interval,
        "disk": cfg.disk.interval,
    }
    return Timings(
        source=source,
        intervals={ch: effective[ch] for ch in CHANNELS if ch in channels},
        timeouts={k: float(getattr(cfg.timeouts, k)) for k in timeouts},
        witness=(cfg.witness.interval, cfg.witness.timeout) if cfg.witness else None,
        effective=cfg.timeouts,
        effective_intervals=effective,
    )


def lab_defaults() -> Timings:
    """What a LabCluster given no timing options runs with: the loader's defaults, except
    the lab's own start-up and stop grace (``LabCluster.sentinel_config``)."""
    cfg = _parse({}, LAB_TIMEOUTS, LAB_SOURCE)
    assert cfg.lan is not None and cfg.directory_channel is not None and cfg.disk is not None
    return Timings(
        source=LAB_SOURCE,
        intervals={},
        timeouts={},
        witness=None,
        effective=cfg.timeouts,
        effective_intervals={
            "lan": cfg.lan.interval,
            "directory": cfg.directory_channel.interval,
            "disk": cfg.disk.interval,
        },
    )

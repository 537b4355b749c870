"""``ndsclust report [--since DURATION] --out FILE.tar.gz``: one archive for a diagnosis.

What goes in (README, "Diagnostics bundle"), with every secret removed:

    directory.json     the cluster subtree and pulses (``ndsclust simulate --from`` reads it)
    events.json        the audit trail since --since
    doctor.json        ``ndsclust doctor --json``
    replication.json   every provider's contextCSNs (main and pulse databases) and, per
                       provider, the serverIDs where it is behind another
    sentinel.yaml      the local sentinel configuration (when one is found), secrets removed
    sentinel.log       the end of the local sentinel's log, when readable (--log)
    MANIFEST.txt       what was collected and what could not be, and why

Secrets are passwords, keys and password hashes: attributes whose name says so, values
that look like ``{SCHEME}hash`` or a PEM block, configuration keys naming a password, key,
secret or token (a ``*_file`` path stays: the file itself is never read).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ndsclust import config as config_mod
from ndsclust.cli import common, doctor_cmd
from ndsclust.cli.pause_cmd import duration
from ndsclust.errors import ConfigError, NdsclustError
from ndsclust.ldapstore import replication
from ndsclust.simulate import snapshot

DEFAULT_SINCE = 24 * 3600.0
LOG_TAIL = 4 * 1024 * 1024  # bytes of the end of the sentinel log
DEFAULT_LOGS = ("/var/log/ndsclust/sentinel.log",)
_SECRET_KEY = re.compile(r"password|passwd|secret|key|token|credential", re.IGNORECASE)
_SECRET_TEXT = [
    re.compile(r"\{[A-Z][A-Z0-9.-]+\}\S+"),  # {ARGON2}..., {SSHA}... (not {0}beta)
    re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.DOTALL),
    re.compile(r"(?i)(password|passwd|secret|token)([=:]\s*)\S+"),
]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write one archive to hand to whoever diagnoses an incident",
        description="Collect the audit trail, a directory snapshot, doctor's findings, "
        "every provider's contextCSNs and replication state, the local sentinel's "
        "configuration and recent log into one .tar.gz, with passwords, keys and "
        "hashes removed. 'ndsclust simulate --from FILE' replays the snapshot.",
    )
    p.add_argument("--out", required=True, metavar="FILE.tar.gz", help="archive to write")
    p.add_argument(
        "--since",
        type=duration,
        default=DEFAULT_SINCE,
        metavar="DURATION",
        help="events and log this far back (90s, 15m, 2h, 1d; default 1d)",
    )
    p.add_argument(
        "--log",
        action="append",
        metavar="FILE",
        help=f"sentinel log to include (repeatable; default {', '.join(DEFAULT_LOGS)})",
    )
    p.set_defaults(handler=cmd_report)


def scrub_text(text: str) -> str:
    """Free text (a log, a doctor message) with anything that looks like a secret removed."""
    text = _SECRET_TEXT[0].sub(snapshot.REDACTED, text)
    text = _SECRET_TEXT[1].sub(snapshot.REDACTED, text)
    return _SECRET_TEXT[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{snapshot.REDACTED}", text)


def scrub_config(data: Any) -> Any:
    """A parsed YAML configuration with the values of secret keys removed."""
    if isinstance(data, dict):
        return {
            k: (
                snapshot.REDACTED
                if _SECRET_KEY.search(str(k))
                and not str(k).endswith("_file")
                and not isinstance(v, (dict, list))
                else scrub_config(v)
            )
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [scrub_config(v) for v in data]
    if isinstance(data, str):
        return scrub_text(data)
    return data


class _Bundle:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.manifest: list[str] = []

    def add(self, name: str, what: str, make: Callable[[], str | bytes | None]) -> None:
        """Collect one member; a failure is written to the manifest, not raised."""
        try:
            data = make()
        except (NdsclustError, OSError, ValueError, yaml.YAMLError) as e:
            self.manifest.append(f"{name}: not collected: {str(e).replace(chr(10), '; ')}")
            return
        if data is None:
            self.manifest.append(f"{name}: not collected: {what}")
            return
        self.files[name] = data.encode() if isinstance(data, str) else data
        self.manifest.append(f"{name}: {what}")


def _json(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"


def _doctor(args: argparse.Namespace) -> str:
    parser = argparse.ArgumentParser()
    doctor_cmd.register(parser.add_subparsers())
    ns = parser.parse_args(["doctor", "--json"])
    merged = argparse.Namespace(**{**vars(args), **vars(ns), "json": True, "repair": False})
    for key in ("config", "uri", "suffix", "base", "pulse_suffix", "connect_timeout"):
        setattr(merged, key, getattr(args, key, None))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        doctor_cmd.cmd_doctor(merged)
    return scrub_text(out.getvalue())


def _replication(args: argparse.Namespace, suffixes: list[str]) -> str:
    creds = common.credentials(args)
    readings: dict[str, dict[str, Any]] = {}
    for uri in common.uris(args):
        per: dict[str, Any] = {}
        for suffix in suffixes:
            try:
                per[suffix] = replication.context_csns(uri, creds, suffix)
            except NdsclustError as e:
                per[suffix] = {"error": str(e)}
        readings[uri] = per
    behind: dict[str, dict[str, Any]] = {}
    for uri, per in readings.items():
        for suffix, csns in per.items():
            if "error" in csns:
                continue
            for peer, peer_per in readings.items():
                other = peer_per.get(suffix, {})
                if peer != uri and "error" not in other:
                    lag = replication.behind(csns, other)
                    if lag:
                        behind.setdefault(uri, {}).setdefault(suffix, {})[peer] = lag
    return _json({"context_csns": readings, "behind": behind})


def _config_text(args: argparse.Namespace) -> str | None:
    path = getattr(args, "config", None) or os.environ.get("NDSCLUST_CONFIG")
    if path is None and Path(config_mod.DEFAULT_PATH).exists():
        path = config_mod.DEFAULT_PATH
    if path is None:
        return None
    data = yaml.safe_load(Path(path).read_text())
    return f"# {path}, secrets removed\n" + yaml.safe_dump(scrub_config(data), sort_keys=False)


def _log_tail(paths: list[str]) -> str | None:
    parts = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            continue
        with path.open("rb") as f:
            size = path.stat().st_size
            f.seek(max(0, size - LOG_TAIL))
            text = f.read().decode("utf-8", "replace")
        parts.append(f"==> {p} <==\n{scrub_text(text)}")
    return "\n".join(parts) if parts else None


def _events_since(st: Any, since: float) -> str:
    horizon = time.time() - since
    out = []
    for e in st.events():
        t = common.parse_time(e.time)
        if t is None or t >= horizon:
            out.append(common.event_json(e))
    for e in out:
        e["text"] = scrub_text(str(e["text"] or ""))
    return _json(out)


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise ConfigError("report", [f"--out {out}: the archive is a .tar.gz"])
    b = _Bundle()
    st = common.store(args)
    try:
        b.add(
            "directory.json",
            "the cluster subtree and pulses, secrets removed",
            lambda: _json(snapshot.read(st)),
        )
        b.add(
            "events.json",
            f"the audit trail of the last {args.since:g}s",
            lambda: _events_since(st, args.since),
        )
        suffixes = [st.suffix]
        if st.pulse_base:
            suffixes.append(st.pulse_base)
        b.add(
            "replication.json",
            "contextCSNs per provider and database",
            lambda: _replication(args, suffixes),
        )
    finally:
        st.close()
    b.add("doctor.json", "ndsclust doctor --json", lambda: _doctor(args))
    b.add(
        "sentinel.yaml",
        "no sentinel configuration found (--config)",
        lambda: _config_text(args),
    )
    logs = list(args.log or DEFAULT_LOGS)
    b.add("sentinel.log", f"no readable log among {', '.join(logs)}", lambda: _log_tail(logs))
    b.files["MANIFEST.txt"] = (
        f"ndsclust report, {common.iso_time(time.time())}\n" + "\n".join(b.manifest) + "\n"
    ).encode()
    stamp = time.time()
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in b.files.items():
            info = tarfile.TarInfo(f"ndsclust-report/{name}")
            info.size, info.mtime, info.mode = len(data), int(stamp), 0o600
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    print(f"{out}: " + ", ".join(sorted(b.files)))
    return 0

"""Security checks (README "Security model"): plain LDAP on the wire, TLS that does not
verify the providers, a LAN channel without its heartbeat key, programs running as root or
outside an allow-list, and secret files that other users can read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ndsclust.config import Config
from ndsclust.doctor.findings import (
    Finding,
    Level,
    SecretFile,
    Transport,
)


def check_transport(transports: Sequence[Transport]) -> list[Finding]:
    """Every provider URI is reached over TLS that verifies the provider (or over ldapi://,
    which never leaves the machine). Plain ldap:// carries bind passwords and the commands
    of every application in clear, and lets anyone on the path change them."""
    out = []
    for t in transports:
        for uri in t.uris:
            scheme = urlsplit(uri).scheme.lower()
            where = f"({t.source})"
            if scheme == "ldapi":
                out.append(Finding("tls", Level.OK, uri, f"local socket, no network {where}"))
            elif scheme == "ldap" and not t.start_tls:
                if t.allow_plain:
                    out.append(
                        Finding(
                            "tls",
                            Level.WARNING,
                            uri,
                            f"plain LDAP in use {where}: passwords and commands cross the "
                            "network in clear and can be changed on the way",
                            "use ldaps:// URIs or start_tls: true with ca_file (ndsclust pki "
                            "init/issue makes the certificates), then allow_plain_ldap: false",
                        )
                    )
                else:
                    out.append(
                        Finding(
                            "tls",
                            Level.PROBLEM,
                            uri,
                            f"plain ldap:// while allow_plain_ldap is false {where}: every "
                            "connection to it is refused",
                            "use ldaps:// or set start_tls: true",
                        )
                    )
            elif t.ca_file is None:
                out.append(
                    Finding(
                        "tls",
                        Level.PROBLEM,
                        uri,
                        f"TLS without a CA file {where}: the provider's certificate is not "
                        "checked against the cluster CA, so anyone on the path can pose as it",
                        "set directory.ca_file (or --ca-file) to the cluster CA, ca.crt of "
                        "ndsclust pki init",
                    )
                )
            else:
                how = "StartTLS" if scheme == "ldap" else "ldaps"
                out.append(
                    Finding(
                        "tls",
                        Level.OK,
                        uri,
                        f"{how}, certificate verified against {t.ca_file} {where}",
                    )
                )
    if not out:
        out.append(
            Finding("tls", Level.INFO, "providers", "no provider URI: transport not checked")
        )
    return out


def check_heartbeat_key(cfg: Config | None) -> list[Finding]:
    """The LAN channel signs every heartbeat with the cluster key (claim 11 packets,
    HMAC-SHA256): without it anyone on the LAN could keep a dead server looking alive."""
    if cfg is None:
        return [
            Finding(
                "heartbeat",
                Level.INFO,
                "config",
                "no sentinel configuration given: heartbeat key not checked",
                "run doctor with --config FILE on a server",
            )
        ]
    if cfg.lan is None:
        return [Finding("heartbeat", Level.OK, cfg.path, "no lan channel: no heartbeat key needed")]
    if not cfg.lan.keys or cfg.lan.send_key not in cfg.lan.keys:
        return [
            Finding(
                "heartbeat",
                Level.PROBLEM,
                cfg.path,
                "the lan channel has no heartbeat key: heartbeats cannot be signed nor checked",
                "ndsclust pki heartbeat-key --out /etc/ndsclust/cluster.key, copy it "
                "to every server, set channels.lan.key_file",
            )
        ]
    if len(cfg.lan.keys) > 1:
        return [
            Finding(
                "heartbeat",
                Level.WARNING,
                cfg.path,
                f"key rotation in progress: {len(cfg.lan.keys)} keys accepted, "
                f"sending with key id {cfg.lan.send_key}",
                "once every server sends with the new key_file, remove "
                "channels.lan.old_key_file everywhere and restart the sentinels",
            )
        ]
    return [
        Finding(
            "heartbeat",
            Level.OK,
            cfg.path,
            f"heartbeats signed with HMAC-SHA256, key id {cfg.lan.send_key}",
        )
    ]


def check_programs(cfg: Config | None, uid: int | None) -> list[Finding]:
    """Programs run as ``programs.user`` (``uid`` as looked up on this server) and only
    from ``programs.allowed_commands``: whoever can write an application's command must
    not get root on every server with it."""
    if cfg is None:
        return [
            Finding(
                "programs",
                Level.INFO,
                "config",
                "no sentinel configuration given: program user not checked",
                "run doctor with --config FILE on a server",
            )
        ]
    p = cfg.programs
    out = []
    if p.user is not None and uid is None:
        out.append(
            Finding(
                "programs",
                Level.PROBLEM,
                "programs.user",
                f"user {p.user!r} does not exist on this server: no program can start",
                f"create the account (useradd --system {p.user}) or fix programs.user",
            )
        )
    elif p.user is None or uid == 0:
        who = "unset" if p.user is None else f"{p.user!r} (uid 0)"
        out.append(
            Finding(
                "programs",
                Level.WARNING,
                "programs.user",
                f"commands run as root (programs.user is {who}): an application "
                "entry's command is root on every server that loads it",
                "set programs.user to an unprivileged account, e.g. ndsclust-app",
            )
        )
    else:
        out.append(
            Finding("programs", Level.OK, "programs.user", f"commands run as {p.user} (uid {uid})")
        )
    if p.allowed_commands:
        out.append(
            Finding(
                "programs",
                Level.OK,
                "programs.allowed_commands",
                f"{len(p.allowed_commands)} programs allowed; any other is refused",
            )
        )
    else:
        out.append(
            Finding(
                "programs",
                Level.INFO,
                "programs.allowed_commands",
                "no allow-list: any absolute path an operator writes runs",
                "list the programs of this server's applications in programs.allowed_commands",
            )
        )
    return out


def check_secret_files(files: Sequence[SecretFile]) -> list[Finding]:
    """Files holding keys and passwords are readable by their owner only (mode 0600)."""
    out = []
    for f in files:
        fix = f"chmod 0600 {f.path}"
        if f.mode is None:
            out.append(
                Finding(
                    "secrets",
                    Level.PROBLEM,
                    f.setting,
                    f"{f.path}: {f.error or 'cannot be read'}",
                    "create the file or correct the setting",
                )
            )
        elif f.mode & 0o007:
            out.append(
                Finding(
                    "secrets",
                    Level.PROBLEM,
                    f.setting,
                    f"{f.path} is readable by every user (mode {f.mode:04o})",
                    fix,
                )
            )
        elif f.mode & 0o070:
            out.append(
                Finding(
                    "secrets",
                    Level.WARNING,
                    f.setting,
                    f"{f.path} is open to its group (mode {f.mode:04o})",
                    fix,
                )
            )
        else:
            out.append(
                Finding(
                    "secrets",
                    Level.OK,
                    f.setting,
                    f"{f.path} is readable by its owner only (mode {f.mode:04o})",
                )
            )
    return out


# The settings of a sentinel configuration that name files holding secrets.
SECRET_SETTINGS = (
    ("directory", "password_file"),
    ("directory", "key_file"),
    ("channels.lan", "key_file"),
    ("channels.lan", "old_key_file"),
)


def secret_paths(raw: Any) -> list[tuple[str, str]]:
    """(YAML path, file) of every secret file a loaded sentinel configuration names."""
    out = []
    for section, key in SECRET_SETTINGS:
        node = raw
        for part in section.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        value = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(value, str) and value:
            out.append((f"{section}.{key}", value))
    return out

"""``ndsclust doctor``: check a deployment and print each finding with its fix.

This module only reads: provider by provider (schema, contextCSN) and through the store
(entries, pulses). The judgement is ``ndsclust.doctor``, pure and unit-tested.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import stat
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from ndsclust import doctor
from ndsclust.cli import common, fence_cmd, repair_cmd
from ndsclust.config import Config
from ndsclust.errors import ProviderUnreachable, StoreError
from ndsclust.ldapstore import reads, replication, schema_admin
from ndsclust.ldapstore.connection import Credentials
from ndsclust.ldapstore.store import Store, generalized_time
from ndsclust.model import ServerName
from ndsclust.sentinel import address, address_holder

COLUMNS = ("level", "check", "subject", "message", "fix")
# Replication takes milliseconds: a provider still behind after this long is stuck.
SECOND_LOOK_AFTER = 1.0
DEFAULT_OVERWRITES_HOURS = 24.0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the deployment; each finding comes with a fix",
        description="Check the schema on every provider, replication convergence "
        "(contextCSN), every sentinel's directory pulse, clock skew between "
        "servers, that every provider holds the same cluster entries (by value), "
        "values lost to conflicting writes (the providers' accesslogs), "
        "the sentinel timeouts and channels (with --config), invalid "
        "entries, application references and resources, and security: plain LDAP "
        "or unverified TLS, and with --config the heartbeat key, the programs' "
        "user and allow-list, and the modes of key and password files. Exit 0 "
        "when nothing is "
        "a problem, 1 otherwise. Every provider is checked: as root on a server, "
        "'ndsclust doctor' binds as the server (sentinel.yaml); as root on a provider, "
        "'ndsclust --uri ldapi:/// -Y doctor' also reads that provider's cn=config and "
        "accesslog and checks the other providers with the sentinel configuration's "
        "identity.",
    )
    p.add_argument("--json", action="store_true", help="print JSON (stable keys)")
    p.add_argument(
        "--pulse-max-age",
        type=common.positive_float,
        default=doctor.DEFAULT_PULSE_MAX_AGE,
        metavar="SECONDS",
        help="a pulse older than this is a silent sentinel (default %(default)g)",
    )
    p.add_argument(
        "--max-skew",
        type=common.positive_float,
        default=doctor.DEFAULT_MAX_SKEW,
        metavar="SECONDS",
        help="largest clock difference between servers tolerated (default %(default)g)",
    )
    p.add_argument(
        "--overwrites-since",
        type=common.positive_float,
        default=DEFAULT_OVERWRITES_HOURS,
        metavar="HOURS",
        help="look this far back in the accesslogs for values lost to conflicting "
        "writes (default %(default)g)",
    )
    repair_cmd.add_arguments(p)
    p.set_defaults(handler=cmd_doctor)


def schema_reading(uri: str, creds: Credentials) -> doctor.SchemaReading:
    try:
        status: schema_admin.SchemaStatus | None
        try:
            status = schema_admin.status(uri, creds)
        except ProviderUnreachable:
            raise
        except StoreError:
            status = None  # cn=config refused outright
        # slapd answers "no such object" where a bind may not look: an empty answer means
        # "not loaded" only if this bind can see cn=schema,cn=config at all.
        if status is not None and (
            status.dn is not None or schema_admin.config_readable(uri, creds)
        ):
            return doctor.SchemaReading(uri, status.version)
        return doctor.SchemaReading(
            uri,
            schema_admin.subschema_version(uri, creds),
            source="subschema",
            config_readable=False,
        )
    except ProviderUnreachable as e:
        return doctor.SchemaReading(uri, error=str(e))


R = TypeVar("R")


# Each provider doctor reads, with the credentials it reads it with.
Targets = list[tuple[str, Credentials]]


def targets(uris: list[str], creds: Credentials, cfg: Config | None) -> Targets:
    """The providers to check. Given only ldapi:// (root on a provider: this provider's
    cn=config and accesslog), the cluster's other providers come from the sentinel
    configuration, read with its identity: doctor always checks every provider."""
    out = [(u, creds) for u in uris]
    if cfg is None or not all(u.lower().startswith("ldapi:") for u in uris):
        return out
    d = cfg.directory
    # The ldapi socket is this server's provider: directory.local_uri names it too.
    return out + [(u, d.credentials) for u in d.uris if u != d.local_uri]


def per_provider(provs: Targets, read: Callable[[str, Credentials], R]) -> dict[str, R | str]:
    """``read(uri, creds)`` for every provider, or the reason it could not be read."""
    out: dict[str, R | str] = {}
    for uri, creds in provs:
        try:
            out[uri] = read(uri, creds)
        except StoreError as e:
            out[uri] = str(e)
    return out


def csn_readings(provs: Targets, suffix: str) -> dict[str, doctor.CsnReading]:
    return per_provider(provs, lambda uri, c: replication.context_csns(uri, c, suffix))


def tree_readings(provs: Targets, base: str) -> dict[str, doctor.TreeReading]:
    return per_provider(provs, lambda uri, c: replication.read_tree(uri, c, base))


def log_readings(provs: Targets, base: str, since: str) -> dict[str, doctor.LogReading]:
    return per_provider(provs, lambda uri, c: replication.access_log(uri, c, base, since=since))


def pulse_readings(st: Store) -> dict[ServerName, doctor.PulseReading]:
    return {
        p.server: doctor.PulseReading(
            p.server, p.counter, common.parse_time(p.stamp), common.parse_time(csn), p.report
        )
        for p, csn in reads.pulses_written(st)
    }


def transports(cfg: Config | None, uris: list[str], creds: Credentials) -> list[doctor.Transport]:
    """The sentinel's way to the providers (with a configuration) and this command's, when
    it differs."""
    out = []
    if cfg is not None:
        c = cfg.directory.credentials
        out.append(
            doctor.Transport(
                "sentinel configuration", cfg.directory.uris, c.start_tls, c.ca_file, c.allow_plain
            )
        )
    mine = doctor.Transport(
        "this command", tuple(uris), creds.start_tls, creds.ca_file, creds.allow_plain
    )
    if not out or (out[0].uris, out[0].start_tls, out[0].ca_file) != (
        mine.uris,
        mine.start_tls,
        mine.ca_file,
    ):
        out.append(mine)
    return out


def secret_files(cfg: Config | None) -> list[doctor.SecretFile]:
    """The mode of every secret file the sentinel configuration names. The loaded Config
    keeps the secrets, not where they came from: the paths are read from the YAML again."""
    if cfg is None:
        return []
    try:
        with open(cfg.path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return []  # it loaded a moment ago; a file replaced since is the next run's
    out = []
    for setting, path in doctor.secret_paths(raw):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError as e:
            out.append(doctor.SecretFile(setting, path, error=e.strerror))
            continue
        out.append(doctor.SecretFile(setting, path, mode))
    return out


def programs_uid(cfg: Config | None) -> int | None:
    if cfg is None or cfg.programs.user is None:
        return None
    try:
        return pwd.getpwnam(cfg.programs.user).pw_uid
    except KeyError:
        return None


def gather(args: argparse.Namespace) -> doctor.Facts:
    cfg = common.load_config(args)
    st = common.store(args)
    creds = common.credentials(args)
    uris = common.uris(args)
    provs = targets(uris, creds, cfg)
    try:
        servers, bad_servers = st.servers()
        apps, bad_apps = st.apps()
        pulses = pulse_readings(st)
        now = time.time()
        readings = [schema_reading(u, c) for u, c in provs]
        csns = csn_readings(provs, st.suffix)
        later = None
        if doctor.needs_second_look(csns):
            time.sleep(SECOND_LOOK_AFTER)
            later = csn_readings(provs, st.suffix)
        # Entries are compared as one identity sees them: root over ldapi reads password
        # hashes that a server's bind does not, which is no disagreement between providers.
        alike = [(u, provs[-1][1]) for u, _ in provs]
        trees = tree_readings(alike, st.base)
        trees_later = None
        if replication.tree_differences({u: t for u, t in trees.items() if not isinstance(t, str)}):
            time.sleep(SECOND_LOOK_AFTER)
            trees_later = tree_readings(alike, st.base)
        since = generalized_time(now - args.overwrites_since * 3600)
        logs = log_readings(provs, st.base, since)
    finally:
        st.close()
    return doctor.Facts(
        now=now,
        schema=readings,
        csns=csns,
        csns_later=later,
        servers=servers,
        apps=list(apps.values()),
        invalid=[*bad_servers, *bad_apps],
        pulses=pulses,
        config=cfg,
        pulse_max_age=args.pulse_max_age,
        max_skew=args.max_skew,
        transports=transports(cfg, uris, creds),
        secret_files=secret_files(cfg),
        programs_uid=programs_uid(cfg),
        logs=logs,
        logs_since=since,
        trees=trees,
        trees_later=trees_later,
        # Stacks: this server's interfaces and announcement tool, when it is a server.
        address_resources=address.local_resources() if cfg else None,
        arping=shutil.which("arping", path=address_holder.PATH) is not None if cfg else None,
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.repair:
        return repair_cmd.run(args)
    findings = [*doctor.diagnose(gather(args)), *fence_cmd.doctor_findings(args)]
    problems = sum(f.level is doctor.Level.PROBLEM for f in findings)
    warnings = sum(f.level is doctor.Level.WARNING for f in findings)
    if args.json:
        common.print_json(
            {
                "findings": [
                    {
                        "check": f.check,
                        "level": f.level.value,
                        "subject": f.subject,
                        "message": f.message,
                        "fix": f.fix,
                    }
                    for f in findings
                ],
                "problems": problems,
                "warnings": warnings,
            }
        )
    else:
        common.print_rows(
            "ndsclust doctor",
            COLUMNS,
            [
                {
                    "level": f.level.value,
                    "check": f.check,
                    "subject": f.subject,
                    "message": f.message,
                    "fix": f.fix,
                }
                for f in findings
            ],
        )
        print(
            f"doctor: {problems} problem{'s' if problems != 1 else ''}, "
            f"{warnings} warning{'s' if warnings != 1 else ''}"
        )
    return doctor.exit_code(findings)

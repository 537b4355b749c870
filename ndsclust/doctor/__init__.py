"""``ndsclust doctor``'s checks: pure functions from what was read to findings with a fix.

The checks are in named parts: ``findings`` (what is read and found), ``providers``
(schema, replication, convergence, overwrites), ``cluster`` (pulses, clocks, timing,
channels, entries, references, resources) and ``security``; this module runs them all.

The command (``ndsclust.cli.doctor_cmd``) reads the providers, the cluster entries and the
pulses into ``Facts``; ``diagnose`` turns them into ``Finding`` s, each with what to do about
it. Nothing here reads a clock or the network: ``Facts.now`` is the wall time of the read.

Levels: ``problem`` breaks an invariant or a failover (exit 1), ``warning`` weakens the
cluster without breaking it, ``info`` says what could not be checked, ``ok`` what passed.

Security checks (README "Security model"): plain LDAP on the wire, TLS that does not verify
the providers, a LAN channel without its heartbeat key, programs running as root or outside
an allow-list, and secret files that other users can read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ndsclust.doctor.cluster import (
    check_channels,
    check_clock_skew,
    check_entries,
    check_pulses,
    check_references,
    check_resources,
    check_timing,
)
from ndsclust.doctor.findings import (
    DEFAULT_MAX_SKEW,
    DEFAULT_PULSE_MAX_AGE,
    CsnReading,
    Facts,
    Finding,
    Level,
    LogReading,
    PulseReading,
    SchemaReading,
    SecretFile,
    Transport,
    TreeReading,
)
from ndsclust.doctor.liveness import check_liveness, judge_readings
from ndsclust.doctor.providers import (
    INSTALL_FIX,
    _lags,
    check_convergence,
    check_overwrites,
    check_replication,
    check_schema,
)
from ndsclust.doctor.security import (
    SECRET_SETTINGS,
    check_heartbeat_key,
    check_programs,
    check_secret_files,
    check_transport,
    secret_paths,
)
from ndsclust.doctor.stacks import check_stacks
from ndsclust.liveness import Status
from ndsclust.model import ServerName

__all__ = [
    "DEFAULT_MAX_SKEW",
    "DEFAULT_PULSE_MAX_AGE",
    "INSTALL_FIX",
    "SECRET_SETTINGS",
    "CsnReading",
    "Facts",
    "Finding",
    "Level",
    "LogReading",
    "PulseReading",
    "SchemaReading",
    "SecretFile",
    "Transport",
    "TreeReading",
    "check_channels",
    "check_clock_skew",
    "check_convergence",
    "check_entries",
    "check_heartbeat_key",
    "check_liveness",
    "check_overwrites",
    "check_programs",
    "check_pulses",
    "check_references",
    "check_replication",
    "check_resources",
    "check_schema",
    "check_secret_files",
    "check_timing",
    "check_transport",
    "secret_paths",
]


def diagnose(f: Facts) -> list[Finding]:
    """Every check, in the order an operator reads them."""
    return [
        *check_schema(f.schema),
        *check_replication(f.csns, f.csns_later),
        *check_convergence(f.trees, f.trees_later),
        *check_overwrites(f.logs, f.logs_since),
        *check_liveness(f.servers, f.pulses, f.now, f.pulse_max_age),
        *check_pulses(f.servers, f.pulses, f.now, f.pulse_max_age, f.config, isolated(f)),
        *check_clock_skew(f.pulses, f.max_skew),
        *check_timing(f.config),
        *check_channels(f.config, f.servers, f.pulses),
        *check_entries(f.invalid),
        *check_references(f.apps, f.servers),
        *check_resources(f.apps, f.servers),
        *check_transport(f.transports),
        *check_heartbeat_key(f.config),
        *check_programs(f.config, f.programs_uid),
        *check_secret_files(f.secret_files),
        *check_stacks(f.apps, f.config.server if f.config else None, f.address_resources, f.arping),
    ]


def isolated(f: Facts) -> frozenset[ServerName]:
    """The servers the liveness reports show cut off on the lan only."""
    judged = judge_readings(f.servers, f.pulses, f.now, f.pulse_max_age)
    return frozenset(n for n, j in judged.items() if j.alive is Status.ISOLATED)


def needs_second_look(csns: Mapping[str, CsnReading]) -> bool:
    """A provider lags: look again before calling it stuck (replication takes milliseconds)."""
    return bool(_lags(csns))


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.level is Level.PROBLEM for f in findings) else 0

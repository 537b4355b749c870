"""``ndsclust doctor``'s checks: pure functions from what was read to findings with a fix.

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
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from ndsclust import schema
from ndsclust.config import SCHEDULING_SLACK, Config, fence_bound
from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.replication import ContextCSNs, LogWrite, Tree, behind, tree_differences
from ndsclust.model import App, Server, ServerName, ServerState

DEFAULT_PULSE_MAX_AGE = 5.0
DEFAULT_MAX_SKEW = 1.0


class Level(Enum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # schema, replication, pulse, clock, timing, channels, entry, ...
    level: Level
    subject: str  # provider URI, server, tag or DN the finding is about
    message: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class SchemaReading:
    """What one provider said about the ndsclust schema."""

    uri: str
    version: int | None = None  # None: not loaded (or not readable, see below)
    source: str = "cn=config"  # cn=config, or subschema when cn=config was not readable
    config_readable: bool = True
    error: str | None = None  # the provider could not be asked at all


@dataclass(frozen=True, slots=True)
class PulseReading:
    """One server's pulse entry: the writer's wall time and the provider's (entryCSN)."""

    server: ServerName
    counter: int
    stamp: float | None  # ndsclustPulseTime: the sentinel's clock when it wrote
    written: float | None  # entryCSN time: the accepting provider's clock


@dataclass(frozen=True, slots=True)
class Transport:
    """How one client reaches the providers: the sentinel (its configuration) or this
    command (its options)."""

    source: str  # "sentinel configuration" or "this command"
    uris: tuple[str, ...]
    start_tls: bool
    ca_file: str | None
    allow_plain: bool = False


@dataclass(frozen=True, slots=True)
class SecretFile:
    """A file holding a secret named by the sentinel configuration, as ``stat`` saw it."""

    setting: str  # its YAML path, e.g. channels.lan.key_file
    path: str
    mode: int | None = None  # permission bits; None when it could not be stat'ed
    error: str | None = None


# A provider's contextCSNs, or the reason it could not be read.
CsnReading = ContextCSNs | str
# A provider's accesslog (the modifies it applied, in its order), or why it was not read.
LogReading = Sequence[LogWrite] | str
# A provider's copy of the cluster subtree, or why it was not read.
TreeReading = Tree | str


@dataclass(frozen=True)
class Facts:
    now: float
    schema: Sequence[SchemaReading] = ()
    csns: Mapping[str, CsnReading] = field(default_factory=dict)
    csns_later: Mapping[str, CsnReading] | None = None  # a second look, when the first lagged
    servers: Mapping[ServerName, Server] = field(default_factory=dict)
    apps: Sequence[App] = ()
    invalid: Sequence[EntryInvalid] = ()
    pulses: Mapping[ServerName, PulseReading] = field(default_factory=dict)
    config: Config | None = None
    pulse_max_age: float = DEFAULT_PULSE_MAX_AGE
    max_skew: float = DEFAULT_MAX_SKEW
    transports: Sequence[Transport] = ()
    secret_files: Sequence[SecretFile] = ()
    programs_uid: int | None = None  # uid of programs.user; None: unset or no such user
    logs: Mapping[str, LogReading] = field(default_factory=dict)
    trees: Mapping[str, TreeReading] = field(default_factory=dict)
    trees_later: Mapping[str, TreeReading] | None = None  # a second look, when they differed
    logs_since: str = ""  # GeneralizedTime the accesslogs were read from


INSTALL_FIX = "as root on that provider's server: ndsclust --uri ldapi:/// -Y schema install"


def check_schema(readings: Sequence[SchemaReading]) -> list[Finding]:
    """Every provider holds this ndsclust's schema version: replication into a provider that
    lacks it stalls silently (docs/platform.md fact 3)."""
    out = []
    for r in readings:
        if r.error is not None:
            out.append(
                Finding(
                    "schema",
                    Level.PROBLEM,
                    r.uri,
                    f"provider unreachable: {r.error}",
                    "start slapd there, or remove the URI from the provider list",
                )
            )
            continue
        if not r.config_readable:
            out.append(
                Finding(
                    "schema",
                    Level.WARNING,
                    r.uri,
                    "this bind cannot read cn=config; the version was read from "
                    "the subschema entry instead"
                    if r.version is not None
                    else "this bind cannot read cn=config nor the subschema entry: "
                    "schema not checked",
                    "run doctor as a cn=config manager for the full check: as "
                    "root, ndsclust --uri ldapi:/// -Y doctor",
                )
            )
            if r.version is None:
                continue
        if r.version is None:
            out.append(
                Finding(
                    "schema", Level.PROBLEM, r.uri, "the ndsclust schema is not loaded", INSTALL_FIX
                )
            )
        elif r.version != schema.VERSION:
            out.append(
                Finding(
                    "schema",
                    Level.PROBLEM,
                    r.uri,
                    f"schema version {r.version} is loaded; this ndsclust needs "
                    f"version {schema.VERSION}",
                    "upgrade the schema on every provider with the release notes' steps",
                )
            )
        else:
            out.append(
                Finding(
                    "schema", Level.OK, r.uri, f"ndsclust schema version {r.version} ({r.source})"
                )
            )
    return out


def _lags(readings: Mapping[str, CsnReading]) -> dict[str, dict[str, tuple[str, str]]]:
    """uri -> {serverID: (its CSN, newest CSN anywhere)} for every provider behind another."""
    good = {u: c for u, c in readings.items() if not isinstance(c, str)}
    newest: dict[str, str] = {}
    for c in good.values():
        for sid, csn in c.items():
            newest[sid] = max(newest.get(sid, ""), csn)
    return {u: lag for u, c in good.items() if (lag := behind(c, newest))}


def check_replication(
    first: Mapping[str, CsnReading], later: Mapping[str, CsnReading] | None
) -> list[Finding]:
    """Providers converged: equal contextCSNs. A provider still behind, on the second look,
    the CSN that another held on the first look is stuck, not merely a few ms late."""
    out = []
    for uri, c in first.items():
        if isinstance(c, str):
            out.append(
                Finding(
                    "replication",
                    Level.PROBLEM,
                    uri,
                    f"provider unreachable: {c}",
                    "start slapd there; it catches up by itself within the "
                    "accesslog purge age, else re-seed it (slapcat from a healthy "
                    "provider, slapadd)",
                )
            )
    lag = _lags(first)
    if len([c for c in first.values() if not isinstance(c, str)]) < 2:
        if not out:
            out.append(
                Finding(
                    "replication",
                    Level.INFO,
                    "providers",
                    "fewer than two providers answered: nothing to compare",
                )
            )
        return out
    if not lag:
        out.append(
            Finding(
                "replication", Level.OK, "providers", "every provider holds the same contextCSN"
            )
        )
        return out
    for uri, sids in sorted(lag.items()):
        still = later.get(uri) if later is not None else None
        if isinstance(still, Mapping):
            stuck = {
                sid: (still.get(sid, ""), want)
                for sid, (_, want) in sids.items()
                if still.get(sid, "") < want
            }
        else:
            stuck = sids
        if not stuck:
            continue
        sid, (mine, want) = sorted(stuck.items())[0]
        out.append(
            Finding(
                "replication",
                Level.PROBLEM,
                uri,
                f"behind for serverID {sid}: {mine or 'nothing'} < {want}"
                + (f" (and {len(stuck) - 1} more serverIDs)" if len(stuck) > 1 else ""),
                "check its syncrepl status (slapd log, 'ldapsearch -b cn=config "
                "olcSyncrepl') and that every provider has the ndsclust schema; "
                "a provider down longer than the accesslog purge age must be "
                "re-seeded",
            )
        )
    if not [f for f in out if f.level is Level.PROBLEM]:
        out.append(
            Finding(
                "replication",
                Level.OK,
                "providers",
                "providers converged (a brief lag caught up while looking)",
            )
        )
    return out


def check_convergence(
    first: Mapping[str, TreeReading], later: Mapping[str, TreeReading] | None
) -> list[Finding]:
    """Every provider holds the same cluster entries with the same values (docs/design.md
    invariant 3). Equal contextCSNs do not prove it: after a provider was killed and caught
    up from two peers at once, OpenLDAP 2.5 can leave it without an entry the others have,
    or with one they deleted, for good (docs/platform.md fact 10). Compared by values
    (docs/platform.md fact 9); only what still differs on the second look is reported."""
    readable = {u: t for u, t in first.items() if not isinstance(t, str)}
    if len(readable) < 2:
        return []
    found = tree_differences(readable)
    if found and later is not None:
        again = {u: t for u, t in later.items() if not isinstance(t, str)}
        still = {dn for dn, _ in tree_differences(again)} if len(again) >= 2 else set()
        found = [(dn, why) for dn, why in found if dn in still]
    if not found:
        return [
            Finding(
                "convergence",
                Level.OK,
                "providers",
                f"{len(readable)} providers hold the same "
                f"{len({dn for t in readable.values() for dn in t})} cluster entries",
            )
        ]
    return [
        Finding(
            "convergence",
            Level.PROBLEM,
            dn,
            f"providers disagree: {why}",
            "copy the entry from the providers that hold what the cluster should "
            "hold (ldapsearch there, ldapmodify/ldapadd/ldapdelete on the odd one), "
            "or re-seed the odd provider: stop it, slapcat a healthy one, slapadd",
        )
        for dn, why in found
    ]


# Written by slapd with every modify: never an operator's setting.
_BOOKKEEPING = frozenset({"entrycsn", "modifiersname", "modifytimestamp"})


def check_overwrites(logs: Mapping[str, LogReading], since: str = "") -> list[Finding]:
    """Values lost to a conflicting write (docs/design.md invariant 3, docs/platform.md fact 6).

    During a partition two providers can accept writes to one attribute of one entry;
    when replication resumes, delta-syncrepl keeps the write with the newer CSN everywhere
    and drops the other. The trace is in the accesslogs: the provider where the newer
    write was made applied it first and received the older one afterwards, out of CSN
    order (and slapd logs that late write without the attributes it lost). For each such
    pair this reports the attributes both wrote, the value that was dropped and the one
    kept, named by where (serverID) and when (CSN) each was written."""
    out: list[Finding] = []
    readable = {uri: log for uri, log in logs.items() if not isinstance(log, str)}
    for uri, log in logs.items():
        if isinstance(log, str):
            out.append(
                Finding(
                    "overwrite",
                    Level.INFO,
                    uri,
                    f"accesslog not read, values lost to conflicting writes not "
                    f"checked here: {log}",
                    "run doctor with the directory administrator's or the "
                    "replication identity's bind",
                )
            )
    if not readable:
        return out
    # The same write as every provider logged it; the fullest copy is the one as made.
    made: dict[tuple[str, str], LogWrite] = {}
    for log in readable.values():
        for w in log:
            known = made.get((w.uuid, w.csn))
            if known is None or len(w.mods) > len(known.mods):
                made[(w.uuid, w.csn)] = w
    seen: set[tuple[str, str, str]] = set()
    for log in readable.values():
        applied: dict[str, list[LogWrite]] = {}
        newest: dict[str, str] = {}  # per entry, the newest CSN applied so far
        for w in sorted(log, key=lambda x: x.start):
            # In CSN order (the usual case) nothing was overwritten: no need to look back.
            late = w.csn < newest.get(w.uuid, "")
            newest[w.uuid] = max(newest.get(w.uuid, ""), w.csn)
            for newer in applied.get(w.uuid, []) if late else []:
                if newer.csn <= w.csn or newer.sid == w.sid:
                    continue
                lost, kept = made[(w.uuid, w.csn)], made[(w.uuid, newer.csn)]
                for attr in sorted(_attrs(lost) & _attrs(kept)):
                    if (w.uuid, w.csn, attr) in seen:
                        continue
                    seen.add((w.uuid, w.csn, attr))
                    out.append(
                        Finding(
                            "overwrite",
                            Level.WARNING,
                            lost.dn,
                            f"{attr}: {_values(lost, attr)} written via serverID {lost.sid} "
                            f"({lost.csn}) was overwritten by {_values(kept, attr)} written "
                            f"concurrently via serverID {kept.sid} ({kept.csn}); every provider "
                            "keeps the latter",
                            f"if {_values(lost, attr)} was the setting wanted, write it again",
                        )
                    )
            applied.setdefault(w.uuid, []).append(w)
    if not any(f.level is Level.WARNING for f in out):
        where = f" since {since}" if since else ""
        out.append(
            Finding(
                "overwrite",
                Level.OK,
                "accesslog",
                f"no value lost to a conflicting write{where} "
                f"({len(readable)} provider log(s) read)",
            )
        )
    return out


def _attrs(w: LogWrite) -> set[str]:
    return {a.lower() for a, _, _ in w.mods if a.lower() not in _BOOKKEEPING}


def _values(w: LogWrite, attr: str) -> str:
    values = [v for a, op, v in w.mods if a.lower() == attr and op in "=+" and v is not None]
    return repr(values[0]) if len(values) == 1 else (repr(values) if values else "(removed)")


def check_pulses(
    servers: Mapping[ServerName, Server],
    pulses: Mapping[ServerName, PulseReading],
    now: float,
    max_age: float,
    cfg: Config | None,
) -> list[Finding]:
    """Each sentinel's directory pulse is fresh (claim 44: a pulse that stops changing means
    the sentinel went silent)."""
    if cfg is not None and cfg.directory_channel is None:
        return [
            Finding(
                "pulse",
                Level.INFO,
                "servers",
                "the directory channel is not "
                "configured in this sentinel configuration: pulses not checked",
            )
        ]
    if servers and not pulses:
        return [
            Finding(
                "pulse",
                Level.WARNING,
                "servers",
                "no server publishes a directory "
                "pulse: no sentinel runs, or none has the directory channel",
                "start the sentinels (systemctl start ndsclust-sentinel) and "
                "configure channels.directory",
            )
        ]
    out = []
    for name in sorted(servers):
        s = servers[name]
        p = pulses.get(name)
        quiet = Level.INFO if s.state is ServerState.DOWN else Level.PROBLEM
        fix = (
            f"check the sentinel on {name}: systemctl status ndsclust-sentinel; "
            "journalctl -u ndsclust-sentinel"
        )
        if p is None:
            out.append(
                Finding("pulse", quiet, name, "no pulse entry: its sentinel never wrote one", fix)
            )
        elif p.stamp is None:
            out.append(
                Finding(
                    "pulse",
                    Level.PROBLEM,
                    name,
                    "the pulse time is unreadable",
                    "upgrade or restart its sentinel",
                )
            )
        elif now - p.stamp > max_age:
            out.append(
                Finding(
                    "pulse",
                    quiet,
                    name,
                    f"last pulse {now - p.stamp:.1f}s ago "
                    f"(limit {max_age:g}s): its sentinel is silent",
                    fix,
                )
            )
        else:
            out.append(
                Finding(
                    "pulse",
                    Level.OK,
                    name,
                    f"pulse {p.counter} written {max(now - p.stamp, 0.0):.1f}s ago",
                )
            )
    return out


def check_clock_skew(pulses: Mapping[ServerName, PulseReading], max_skew: float) -> list[Finding]:
    """Servers' wall clocks agree within ``max_skew``. Each pulse carries the writer's time
    and, in its entryCSN, the time of the provider that accepted it: their difference is
    the server's clock offset against the directory, so servers compare through it."""
    offsets = {
        n: p.stamp - p.written
        for n, p in pulses.items()
        if p.stamp is not None and p.written is not None
    }
    if not offsets:
        return [Finding("clock", Level.INFO, "servers", "no pulses: clock skew not checked")]
    hi = max(offsets, key=lambda n: offsets[n])
    lo = min(offsets, key=lambda n: offsets[n])
    spread = offsets[hi] - offsets[lo]
    text = ", ".join(f"{n} {offsets[n]:+.3f}s" for n in sorted(offsets))
    fix = "run NTP on every server (chronyc tracking / timedatectl show-timesync)"
    out = []
    if spread > max_skew:
        out.append(
            Finding(
                "clock",
                Level.PROBLEM,
                f"{hi},{lo}",
                f"clocks differ by {spread:.2f}s (limit {max_skew:g}s); offsets "
                f"against the directory: {text}",
                fix,
            )
        )
    far = [n for n in sorted(offsets) if abs(offsets[n]) > max_skew]
    if far and spread <= max_skew:
        out.append(
            Finding(
                "clock",
                Level.WARNING,
                ",".join(far),
                f"servers agree but the write provider's clock differs by more "
                f"than {max_skew:g}s: {text}",
                fix,
            )
        )
    if not out:
        out.append(
            Finding("clock", Level.OK, "servers", f"clocks agree within {spread:.3f}s ({text})")
        )
    return out


def check_timing(cfg: Config | None) -> list[Finding]:
    """failover > max(lease, fence) + margin: the configuration loader refuses anything
    else (docs/design.md section 4), so a configuration that loaded is consistent."""
    if cfg is None:
        return [
            Finding(
                "timing",
                Level.INFO,
                "config",
                "no sentinel configuration given: timeouts not checked",
                "run doctor with --config FILE on a server",
            )
        ]
    t = cfg.timeouts
    intervals = [c.interval for c in (cfg.lan, cfg.directory_channel, cfg.disk) if c]
    margin = t.margin(max([*intervals, t.loop_interval]))
    fence = fence_bound(t, cfg.witness.timeout if cfg.witness else None)
    bound = max(t.lease, fence) + margin
    return [
        Finding(
            "timing",
            Level.OK,
            cfg.path,
            f"failover {t.failover:g}s > max(lease {t.lease:g}s, fence {fence:g}s) + "
            f"margin {margin:.3f}s = {bound:.3f}s (margin includes "
            f"{SCHEDULING_SLACK:g}s scheduling slack)",
        )
    ]


def check_channels(
    cfg: Config | None,
    servers: Mapping[ServerName, Server],
    pulses: Mapping[ServerName, PulseReading],
) -> list[Finding]:
    """At least one liveness channel independent of the LAN: otherwise a LAN failure looks
    like the death of every peer (patent 806 -> 808 relies on a second path)."""
    if cfg is not None:
        independent = [n for n in cfg.channel_names() if n != "lan"]
        if independent:
            return [
                Finding(
                    "channels",
                    Level.OK,
                    cfg.path,
                    f"channels {', '.join(cfg.channel_names())}: "
                    f"{', '.join(independent)} do not depend on the LAN",
                )
            ]
        return [
            Finding(
                "channels",
                Level.WARNING,
                cfg.path,
                "only the lan channel: a LAN failure looks like every peer dying",
                "add channels.directory (a pulse through the directory) or "
                "channels.disk (shared storage) to every sentinel's configuration",
            )
        ]
    with_pulse = sorted(n for n in servers if n in pulses)
    if servers and len(with_pulse) == len(servers):
        return [
            Finding(
                "channels",
                Level.OK,
                "servers",
                "every server publishes a directory pulse: the directory channel is in use",
            )
        ]
    return [
        Finding(
            "channels",
            Level.INFO,
            "servers",
            "without --config, only the "
            "directory channel is visible"
            + (f" (pulses from {', '.join(with_pulse)})" if with_pulse else ""),
            "run doctor with --config FILE on a server to check its channels",
        )
    ]


def check_entries(invalid: Sequence[EntryInvalid]) -> list[Finding]:
    """Entries the sentinels ignore because they break the rules (invariant 4)."""
    out = []
    for e in invalid:
        out.append(
            Finding(
                "entry",
                Level.PROBLEM,
                e.dn,
                f"{e.attribute}: {e.problem}",
                f"correct it: ldapmodify with 'dn: {e.dn}', 'replace: "
                f"{e.attribute}' (or 'ndsclust app edit TAG --set ...')",
            )
        )
    if not out:
        out.append(Finding("entry", Level.OK, "entries", "every entry is valid"))
    return out


def check_references(apps: Sequence[App], servers: Mapping[ServerName, Server]) -> list[Finding]:
    """Every application's primary, backups and host name existing servers."""
    out = []
    for a in apps:
        try:
            entries.check_references(a, servers)
        except EntryInvalid as e:
            out.append(
                Finding(
                    "references",
                    Level.PROBLEM,
                    a.tag,
                    f"{e.attribute}: {e.problem}",
                    f"add the server (ndsclust servers add NAME ...) or change the "
                    f"application (ndsclust app edit {a.tag} --set ...)",
                )
            )
    if not out:
        out.append(
            Finding(
                "references",
                Level.OK,
                "applications",
                f"{len(apps)} applications name only existing servers",
            )
        )
    return out


def check_resources(apps: Sequence[App], servers: Mapping[ServerName, Server]) -> list[Finding]:
    """Some eligible server offers every resource an application needs; a server in its
    list lacking one is skipped at failover (FIG. 7A), which is worth knowing."""
    out = []
    for a in apps:
        if not a.resources:
            continue
        eligible = [servers[n] for n in a.servers() if n in servers]
        offering = [s.name for s in eligible if a.resources <= s.resources]
        need = ", ".join(sorted(a.resources))
        if not offering:
            out.append(
                Finding(
                    "resources",
                    Level.PROBLEM,
                    a.tag,
                    f"needs {need}, which no server among primary and backups "
                    f"({', '.join(a.servers())}) offers: it can run nowhere",
                    f"publish the resources on a server (ndsclustResource of its "
                    f"entry) or change the list (ndsclust app edit {a.tag} --set "
                    "resources=...)",
                )
            )
            continue
        for s in eligible:
            missing = sorted(a.resources - s.resources)
            if missing:
                out.append(
                    Finding(
                        "resources",
                        Level.WARNING,
                        a.tag,
                        f"{s.name} lacks {', '.join(missing)}: it will be skipped "
                        f"when {a.tag} fails over",
                        f"publish them on {s.name} or drop it from the backups",
                    )
                )
    if not out:
        out.append(
            Finding(
                "resources",
                Level.OK,
                "applications",
                "every application's resources are offered by its servers",
            )
        )
    return out


# -- security ----------------------------------------------------------------------------


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


def diagnose(f: Facts) -> list[Finding]:
    """Every check, in the order an operator reads them."""
    return [
        *check_schema(f.schema),
        *check_replication(f.csns, f.csns_later),
        *check_convergence(f.trees, f.trees_later),
        *check_overwrites(f.logs, f.logs_since),
        *check_pulses(f.servers, f.pulses, f.now, f.pulse_max_age, f.config),
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
    ]


def needs_second_look(csns: Mapping[str, CsnReading]) -> bool:
    """A provider lags: look again before calling it stuck (replication takes milliseconds)."""
    return bool(_lags(csns))


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.level is Level.PROBLEM for f in findings) else 0

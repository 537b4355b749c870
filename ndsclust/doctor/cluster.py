"""Checks of the cluster's servers and entries: pulses, clocks, timing, channels, invalid
entries, references and resources.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from ndsclust.config import SCHEDULING_SLACK, Config, fence_bound
from ndsclust.doctor.findings import (
    Finding,
    Level,
    PulseReading,
)
from ndsclust.doctor.liveness import network_fix
from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore import entries
from ndsclust.model import App, Server, ServerName, ServerState


def check_pulses(
    servers: Mapping[ServerName, Server],
    pulses: Mapping[ServerName, PulseReading],
    now: float,
    max_age: float,
    cfg: Config | None,
    isolated: Collection[ServerName] = (),
) -> list[Finding]:
    """Each sentinel's directory pulse is fresh (claim 44: a pulse that stops changing means
    the sentinel went silent). A server its peers still hear on another channel
    (``isolated``, doctor/liveness.py) has a silent pulse because its network is cut: the
    fix then names the network, not the sentinel."""
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
            network_fix(s)
            if name in isolated
            else f"check the sentinel on {name}: systemctl status ndsclust-sentinel; "
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

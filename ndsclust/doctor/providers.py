"""Checks of the providers: schema, replication (contextCSN), convergence by value, and
values lost to conflicting writes (the accesslogs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ndsclust import schema
from ndsclust.doctor.findings import (
    CsnReading,
    Finding,
    Level,
    LogReading,
    SchemaReading,
    TreeReading,
)
from ndsclust.ldapstore.replication import LogWrite, behind, tree_differences

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
        if not r.config_readable and r.version is None:
            out.append(
                Finding(
                    "schema",
                    Level.INFO,
                    r.uri,
                    "this bind can read neither cn=config nor the subschema entry: "
                    "schema not checked",
                    "run doctor bound as a server, operator or auditor, or as root on a "
                    "provider: ndsclust --uri ldapi:/// -Y doctor",
                )
            )
            continue
        # Without cn=config the subschema entry shows the same loaded version: a bind that
        # may not read cn=config (a server's, an operator's) still gets the full check.
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

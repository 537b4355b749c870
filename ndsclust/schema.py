"""The ndsclust LDAP schema: one source of truth, rendered to both forms.

``schema/ndsclust.schema`` (slapd.conf form) and ``schema/ndsclust.ldif`` (cn=config form)
are generated from the tables below by ``ndsclust schema show --format schema|ldif`` (see
``make schema``); a unit test fails when the files in the tree differ from this source.

OIDs live under a ``2.25.<uuid>`` arc (ITU-T X.667: no registration needed):
``ARC.1.n`` attribute types, ``ARC.2.n`` object classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ARC = "2.25.16307282375000687117923598170370128403"
VERSION = 2
SCHEMA_NAME = "ndsclust"

DIRECTORY_STRING = "1.3.6.1.4.1.1466.115.121.1.15"
BOOLEAN = "1.3.6.1.4.1.1466.115.121.1.7"
INTEGER = "1.3.6.1.4.1.1466.115.121.1.27"
GENERALIZED_TIME = "1.3.6.1.4.1.1466.115.121.1.24"


@dataclass(frozen=True)
class AttributeType:
    n: int
    name: str
    desc: str
    syntax: str
    equality: str | None
    single: bool
    substr: str | None = None
    ordering: str | None = None
    ordered_values: bool = False  # OpenLDAP X-ORDERED 'VALUES': keeps the operator's order

    def definition(self) -> str:
        parts = [f"( {ARC}.1.{self.n}", f"NAME '{self.name}'", f"DESC '{self.desc}'"]
        if self.equality:
            parts.append(f"EQUALITY {self.equality}")
        if self.ordering:
            parts.append(f"ORDERING {self.ordering}")
        if self.substr:
            parts.append(f"SUBSTR {self.substr}")
        parts.append(f"SYNTAX {self.syntax}")
        if self.single:
            parts.append("SINGLE-VALUE")
        if self.ordered_values:
            parts.append("X-ORDERED 'VALUES'")
        return " ".join(parts) + " )"


@dataclass(frozen=True)
class ObjectClass:
    n: int
    name: str
    desc: str
    kind: str
    must: tuple[str, ...]
    may: tuple[str, ...]
    sup: str = "top"

    def definition(self) -> str:
        parts = [
            f"( {ARC}.2.{self.n}",
            f"NAME '{self.name}'",
            f"DESC '{self.desc}'",
            f"SUP {self.sup}",
            self.kind,
        ]
        for word, names in (("MUST", self.must), ("MAY", self.may)):
            if len(names) == 1:
                parts.append(f"{word} {names[0]}")
            elif names:
                parts.append(f"{word} ( {' $ '.join(names)} )")
        return " ".join(parts) + " )"


def _s(
    n: int, name: str, desc: str, *, single: bool = True, exact: bool = True, ordered: bool = False
) -> AttributeType:
    """A Directory String attribute. Exact matching where a compare-and-swap must match
    only the value it expects (docs/design.md section 2, 'Exact values')."""
    if exact:
        return AttributeType(
            n,
            name,
            desc,
            DIRECTORY_STRING,
            "caseExactMatch",
            single,
            "caseExactSubstringsMatch",
            ordered_values=ordered,
        )
    return AttributeType(
        n,
        name,
        desc,
        DIRECTORY_STRING,
        "caseIgnoreMatch",
        single,
        "caseIgnoreSubstringsMatch",
        ordered_values=ordered,
    )


ATTRIBUTES: tuple[AttributeType, ...] = (
    _s(1, "ndsclustTag", "unique identifier of a clustered application (TAG)", exact=False),
    _s(2, "ndsclustType", "capable or aware", exact=False),
    _s(
        3,
        "ndsclustCommand",
        "command line that loads and runs the application, run without a shell",
    ),
    _s(
        4,
        "ndsclustUnloadCommand",
        "command line that unloads the application; default SIGTERM then SIGKILL",
    ),
    _s(
        5,
        "ndsclustHostServer",
        "server running the application now; absent: unloaded by an operator",
    ),
    _s(6, "ndsclustPrimaryServer", "server that normally runs the application"),
    _s(
        7,
        "ndsclustBackupServer",
        "backup servers in order of preference",
        single=False,
        ordered=True,
    ),
    _s(
        8,
        "ndsclustResource",
        "resource an application needs or a server offers",
        single=False,
        exact=False,
    ),
    AttributeType(
        9,
        "ndsclustAutoRecover",
        "TRUE: fail back by itself; FALSE: wait for an operator",
        BOOLEAN,
        "booleanMatch",
        True,
    ),
    _s(10, "ndsclustMarker", "resume point written by a cluster-aware application"),
    _s(
        11,
        "ndsclustState",
        "loading, running, unloading, stopped, failed(reason), awaiting-failback, "
        "replication-pending, error(reason)",
    ),
    _s(12, "ndsclustRequest", "operator request: load, unload, failback, migrate:<server>"),
    _s(13, "ndsclustHealthCommand", "command whose exit status 0 means the application is healthy"),
    _s(14, "ndsclustAddress", "heartbeat address of a server, ip:port", single=False, exact=False),
    _s(15, "ndsclustServerState", "up, down or maintenance"),
    AttributeType(
        16,
        "ndsclustPulse",
        "pulse counter advanced by the server sentinel",
        INTEGER,
        "integerMatch",
        True,
        ordering="integerOrderingMatch",
    ),
    AttributeType(
        17,
        "ndsclustPulseTime",
        "wall time of the last pulse",
        GENERALIZED_TIME,
        "generalizedTimeMatch",
        True,
        ordering="generalizedTimeOrderingMatch",
    ),
    _s(18, "ndsclustEventId", "unique identifier of an event"),
    AttributeType(
        19,
        "ndsclustEventTime",
        "when the event happened",
        GENERALIZED_TIME,
        "generalizedTimeMatch",
        True,
        ordering="generalizedTimeOrderingMatch",
    ),
    _s(
        20,
        "ndsclustEventKind",
        "what happened: failover, failback, swap_conflict, ...",
        exact=False,
    ),
    _s(21, "ndsclustEventServer", "server that recorded the event"),
    _s(22, "ndsclustEventTag", "application the event is about", exact=False),
    _s(23, "ndsclustEventText", "the event in words"),
    # Service stacks (docs/design.md section 3, "Stacks"): attributes 30-39, class 13.
    _s(
        30,
        "ndsclustRequires",
        "tag of an application this one needs on the same server, started before it",
        single=False,
        exact=False,
    ),
    _s(
        31,
        "ndsclustAvoids",
        "tag of an application this one should not share a server with",
        single=False,
        exact=False,
    ),
    _s(
        32,
        "ndsclustServiceAddress",
        "service address that moves with the application, ip/prefix[@interface]",
        single=False,
        exact=False,
    ),
    # Fencing (docs/design.md section 4, "Fencing other servers"): one entry per fenced server.
    _s(55, "ndsclustFenceState", "owed, fencing, confirmed, failed or clear, with by= and at="),
    _s(56, "ndsclustFenceText", "what the last fence attempt did: agents, exit codes, output"),
    _s(
        45,
        "ndsclustPause",
        "cluster-wide pause of automatic actions: until (or -) then the reason",
    ),
    _s(
        60,
        "ndsclustHeard",
        "peer:channels the sentinel of this server hears it on now, e.g. beta:lan,disk or beta:-",
        single=False,
    ),
    _s(61, "ndsclustChannels", "liveness channels configured on this sentinel", single=False),
    _s(62, "ndsclustSentinelState", "running, stopping or stopped: the sentinel of this server"),
    # Service stacks: what a server can hold service addresses on, published by its sentinel.
    _s(
        63,
        "ndsclustNetwork",
        "net:<network>/<prefix> or iface:<name> of an interface of this server, or - for none",
        single=False,
    ),
)

OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass(
        1,
        "ndsclustCluster",
        f"ndsclust cluster base; ndsclust schema version {VERSION}",
        "AUXILIARY",
        (),
        ("description", "ndsclustPause"),
    ),
    ObjectClass(
        2,
        "ndsclustServer",
        "a server of the cluster",
        "STRUCTURAL",
        ("cn",),
        ("ndsclustAddress", "ndsclustResource", "ndsclustServerState", "description"),
    ),
    ObjectClass(
        3,
        "ndsclustApplication",
        "a clustered application (patent FIG. 2 object)",
        "STRUCTURAL",
        ("ndsclustTag", "ndsclustType", "ndsclustCommand", "ndsclustPrimaryServer"),
        (
            "ndsclustUnloadCommand",
            "ndsclustHealthCommand",
            "ndsclustHostServer",
            "ndsclustBackupServer",
            "ndsclustResource",
            "ndsclustAutoRecover",
            "ndsclustMarker",
            "ndsclustState",
            "ndsclustRequest",
            "description",
        ),
    ),
    ObjectClass(
        4,
        "ndsclustEvent",
        "one entry of the ndsclust audit trail",
        "STRUCTURAL",
        ("ndsclustEventId", "ndsclustEventTime", "ndsclustEventKind"),
        ("ndsclustEventServer", "ndsclustEventTag", "ndsclustEventText"),
    ),
    ObjectClass(
        5,
        "ndsclustPulseEntry",
        "the directory pulse of one server",
        "STRUCTURAL",
        ("cn", "ndsclustPulse"),
        ("ndsclustPulseTime",),
    ),
    ObjectClass(
        13,
        "ndsclustStack",
        "the place of an application in a service stack: requirements, separations, addresses",
        "AUXILIARY",
        (),
        ("ndsclustRequires", "ndsclustAvoids", "ndsclustServiceAddress"),
    ),
    ObjectClass(
        20,
        "ndsclustFence",
        "whether a server must be, is being or was fenced (under ou=events)",
        "STRUCTURAL",
        ("cn", "ndsclustFenceState"),
        ("ndsclustFenceText",),
    ),
    ObjectClass(
        16,
        "ndsclustLivenessReport",
        "what the sentinel of a server hears of its peers and the networks it is on",
        "AUXILIARY",
        (),
        ("ndsclustHeard", "ndsclustChannels", "ndsclustSentinelState", "ndsclustNetwork"),
    ),
)

_HEADER = (
    "# ndsclust LDAP schema, version {v}. Generated from ndsclust/schema.py: do not edit.\n"
    "# OID arc {arc} (ITU-T X.667 UUID arc).\n"
)


def render_schema() -> str:
    """slapd.conf form: ``include /path/ndsclust.schema``."""
    out = [_HEADER.format(v=VERSION, arc=ARC)]
    for a in ATTRIBUTES:
        out.append(f"attributetype {a.definition()}\n")
    for o in OBJECT_CLASSES:
        out.append(f"objectclass {o.definition()}\n")
    return "\n".join(out)


def render_ldif() -> str:
    """cn=config form: ``ldapadd -Y EXTERNAL -H ldapi:/// -f ndsclust.ldif``."""
    lines = [
        _HEADER.format(v=VERSION, arc=ARC),
        f"dn: cn={SCHEMA_NAME},cn=schema,cn=config",
        "objectClass: olcSchemaConfig",
        f"cn: {SCHEMA_NAME}",
    ]
    lines += [f"olcAttributeTypes: {a.definition()}" for a in ATTRIBUTES]
    lines += [f"olcObjectClasses: {o.definition()}" for o in OBJECT_CLASSES]
    return "\n".join(lines) + "\n"


_VERSION_RE = re.compile(r"ndsclust schema version (\d+)")


def version_in(object_class_values: list[str]) -> int | None:
    """The schema version recorded in the olcObjectClasses values of a loaded schema."""
    for v in object_class_values:
        m = _VERSION_RE.search(v)
        if m:
            return int(m.group(1))
    return None

"""What ``doctor`` reads and what it finds: the readings, ``Facts`` and ``Finding``.

Levels: ``problem`` breaks an invariant or a failover (exit 1), ``warning`` weakens the
cluster without breaking it, ``info`` says what could not be checked, ``ok`` what passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from ndsclust.config import Config
from ndsclust.errors import EntryInvalid
from ndsclust.ldapstore.replication import ContextCSNs, LogWrite, Tree
from ndsclust.model import App, LivenessReport, Server, ServerName

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
    report: LivenessReport | None = None  # what its sentinel hears of its peers


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
    # Stacks: what this server offers service addresses (None: unknown) and whether arping
    # is installed here (None: not checked), ndsclust/doctor/stacks.py.
    address_resources: frozenset[str] | None = None
    arping: bool | None = None

"""A directory snapshot: what ``simulate`` starts from and ``report`` saves.

The snapshot is one JSON document: the entries of the cluster subtree (the cluster base,
servers, applications, events) and the pulse entries, each as ``{"dn", "attributes"}``
with every secret removed (``redact``), and the wall time it was taken. ``read`` takes one
from the directory through a store; ``sim_of`` builds the simulation the way the cluster
stands in it: a server whose pulse is fresh runs its sentinel, and the host of every
application whose state says it runs runs its program.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ndsclust.errors import ConfigError, EntryInvalid
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.reads import find
from ndsclust.ldapstore.store import Store
from ndsclust.model import App, AppType, Event, Server, ServerName, Tag
from ndsclust.pause import ATTRIBUTE as PAUSE_ATTRIBUTE
from ndsclust.pause import Pause, of_values
from ndsclust.sentinel.actions import KEPT_MOVES
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.view import Policy
from ndsclust.simulate.engine import Sim, Timing, running_state

FORMAT = "ndsclust-snapshot/1"
# A pulse written less than this before the snapshot: that server's sentinel runs.
FRESH_PULSE = 5.0
REDACTED = "<removed>"
# Attributes that hold secrets (or their hashes) whatever their value looks like.
_SECRET_ATTRS = re.compile(
    r"password|secret|key|pkcs|credential|olcrootpw|krb|ntlm|sambalm|sambant", re.IGNORECASE
)
# Values that are password hashes ({ARGON2}..., {SSHA}...) or PEM blocks, in any attribute
# (an X-ORDERED value's index, {0}beta, is not a scheme).
_SECRET_VALUE = re.compile(r"^\s*\{[A-Z][A-Z0-9.-]+\}|-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)")


def redact(attributes: Mapping[str, Sequence[Any]]) -> dict[str, list[str]]:
    """``attributes`` with secrets removed: secret attributes and hash-like values show as
    ``<removed>`` (so a reader sees that something was there), binary values as their
    length."""
    out: dict[str, list[str]] = {}
    for name, values in attributes.items():
        shown: list[str] = []
        for v in values:
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    shown.append(f"<{len(v)} bytes>")
                    continue
            text = str(v)
            secret = _SECRET_ATTRS.search(name) or _SECRET_VALUE.search(text)
            shown.append(REDACTED if secret else text)
        out[name] = shown
    return out


def _entry_json(e: Entry) -> dict[str, Any]:
    return {"dn": e.dn, "attributes": redact(e.attributes)}


def read(st: Store, wall: float | None = None) -> dict[str, Any]:
    """The snapshot of the directory ``st`` reaches (the write provider's view)."""
    taken = time.time() if wall is None else wall
    cluster = find(st, st.base, attributes=["*", "entryUUID", "entryCSN", "modifyTimestamp"])
    pulses = find(st, st.pulse_base, one_level=True) if st.pulse_base else []
    return {
        "format": FORMAT,
        "taken": taken,
        "base": st.base,
        "entries": [_entry_json(e) for e in cluster],
        "pulses": [_entry_json(e) for e in pulses],
    }


def load(path: str | Path) -> dict[str, Any]:
    """A snapshot saved by ``ndsclust report`` (``directory.json``) or ``simulate --save``."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(str(path), [f"cannot read a snapshot: {e}"]) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(str(path), [f"not a snapshot (format {FORMAT!r} expected)"])
    return doc


@dataclass(frozen=True)
class Parsed:
    """What a snapshot holds, typed; ``invalid`` lists the entries that could not be read."""

    taken: float
    servers: dict[ServerName, Server]
    apps: dict[Tag, App]
    events: list[Event]
    pulse_times: dict[ServerName, float]
    pause: Pause | None
    invalid: list[str]


def _entries(items: Iterable[Mapping[str, Any]]) -> list[Entry]:
    return [Entry(str(i["dn"]), dict(i["attributes"])) for i in items]


def parse(doc: Mapping[str, Any]) -> Parsed:
    servers: dict[ServerName, Server] = {}
    apps: dict[Tag, App] = {}
    events: list[Event] = []
    invalid: list[str] = []
    pause: Pause | None = None
    for e in _entries(doc.get("entries", [])):
        classes = e.classes
        try:
            if "ndsclustserver" in classes:
                s = entries.parse_server(e)
                servers[s.name] = s
            elif "ndsclustapplication" in classes:
                a = entries.parse_app(e)
                apps[a.tag] = a
            elif "ndsclustevent" in classes:
                events += entries.parse_event(e).each()
            elif "ndsclustcluster" in classes:
                pause = of_values(list(e.all(PAUSE_ATTRIBUTE)))
        except (EntryInvalid, ValueError) as problem:
            invalid.append(str(problem))
    for tag, a in list(apps.items()):
        try:
            entries.check_references(a, servers)
        except EntryInvalid as problem:
            invalid.append(str(problem))
            del apps[tag]
    pulse_times: dict[ServerName, float] = {}
    for e in _entries(doc.get("pulses", [])):
        try:
            p = entries.parse_pulse(e)
        except EntryInvalid:
            continue
        t = _wall(p.stamp)
        if t is not None:
            pulse_times[p.server] = t
    return Parsed(float(doc["taken"]), servers, apps, events, pulse_times, pause, invalid)


def _wall(stamp: str) -> float | None:
    from ndsclust.cli.common import parse_time  # the one reader of directory times

    return parse_time(stamp)


def sim_of(parsed: Parsed, timing: Timing, policy: Policy, *, fresh: float = FRESH_PULSE) -> Sim:
    """The simulation of the cluster as the snapshot shows it."""
    taken = parsed.taken
    up = [
        s
        for s in parsed.servers
        if (t := parsed.pulse_times.get(s)) is not None and taken - t <= fresh
    ]
    procs: dict[ServerName, list[ProcInfo]] = {s: [] for s in parsed.servers}
    for app in parsed.apps.values():
        if app.host in up and running_state(app):
            procs[app.host].append(ProcInfo(app.tag, ProcState.RUNNING, 100, 0.0))
        elif (
            app.type is AppType.AWARE
            and app.primary in up
            and app.host in up
            and app.host != app.primary
        ):
            procs[app.primary].append(ProcInfo(app.tag, ProcState.STARTING, None, 0.0, paused=True))
    moves = [
        (e.tag, e.kind, t - taken, e.server)
        for e in parsed.events
        if e.tag is not None
        and e.kind in {k.value for k in KEPT_MOVES}
        and (t := _wall(e.time)) is not None
    ]
    return Sim(
        parsed.servers.values(),
        parsed.apps.values(),
        timing=timing,
        policy=policy,
        up=up,
        procs=procs,
        history=moves,
        paused=parsed.pause is not None and parsed.pause.active(taken),
    )

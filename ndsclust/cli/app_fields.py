"""The application attributes as ``ndsclust app add`` and ``app edit`` take them.

Every value is checked with the same rules the sentinels apply (``ndsclust.model``,
``ldapstore.entries.parse_app``), from flags, from answers to prompts (patent FIG. 6 step
604: the operator is asked for every attribute) or from ``--set NAME=VALUE``. Pure: nothing
here reads or writes the directory.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ndsclust.errors import ConfigError, EntryInvalid, NoSuchEntry
from ndsclust.ldapstore import entries
from ndsclust.ldapstore.store import Store
from ndsclust.model import (
    App,
    AppState,
    AppType,
    Request,
    StateValue,
    check_resource,
    check_server_name,
    check_service_address,
    check_tag,
    parse_command,
)

Ask = Callable[[str], str]
APP_CLASSES = ["top", "ndsclustApplication", "ndsclustStack"]
STACK_ATTRS = ("ndsclustRequires", "ndsclustAvoids", "ndsclustServiceAddress")
# Attributes an operator never sets: the directory maintains them.
OPERATIONAL = {"entryuuid", "entrycsn", "modifytimestamp", "objectclass"}


# -- the attributes ------------------------------------------------------------------------


def _type(value: str) -> str:
    v = value.strip().lower()
    if v not in {t.value for t in AppType}:
        raise ValueError(
            f"{value!r} is not an application type; allowed: capable (ndsclust "
            "starts and stops it), aware (it uses the ndsclust API)"
        )
    return v


def _command(value: str) -> str:
    parse_command(value)
    return value.strip()


def boolean(value: str) -> str:
    v = value.strip().lower()
    if v in ("true", "yes", "y", "on", "1"):
        return "TRUE"
    if v in ("false", "no", "n", "off", "0"):
        return "FALSE"
    raise ValueError(f"{value!r} is not a yes/no value; allowed: true, false (or yes, no)")


def _server(value: str) -> str:
    return check_server_name(value.strip())


def _state(value: str) -> str:
    return str(StateValue.parse(value.strip()))


def _request(value: str) -> str:
    return str(Request.parse(value.strip()))


def _marker(value: str) -> str:
    return value


@dataclass(frozen=True, slots=True)
class Field:
    """One application attribute as the CLI offers it."""

    attr: str  # LDAP attribute name
    name: str  # short name for ``app edit --set NAME=VALUE``
    flag: str | None  # ``app add`` option; None: edit only
    prompt: str
    check: Callable[[str], str]  # one value -> its canonical form, or ValueError
    required: bool = False
    multi: bool = False  # several values, comma-separated on the command line
    default: str = ""

    def label(self) -> str:
        return f"{self.attr} ({self.flag})" if self.flag else f"{self.attr} ({self.name})"

    def values(self, text: str) -> list[str]:
        """The values ``text`` stands for, checked; [] removes the attribute."""
        parts = [p.strip() for p in text.split(",")] if self.multi else [text]
        parts = [p for p in parts if p.strip()]
        out = [self.check(p) for p in parts]
        if self.multi and len(set(out)) != len(out):
            raise ValueError(f"lists {text!r} with a repeat; list each value once")
        return out


FIELDS: tuple[Field, ...] = (
    Field(
        "ndsclustTag",
        "tag",
        "--tag",
        "Tag (unique name of the application)",
        check_tag,
        required=True,
    ),
    Field(
        "ndsclustType",
        "type",
        "--type",
        "Type: capable (ndsclust starts and stops it) or aware (uses the ndsclust API)",
        _type,
        required=True,
        default="capable",
    ),
    Field(
        "ndsclustCommand",
        "command",
        "--command",
        "Command line that loads and runs it (absolute path, no shell)",
        _command,
        required=True,
    ),
    Field(
        "ndsclustUnloadCommand",
        "unload-command",
        "--unload-command",
        "Command line that unloads it (empty: SIGTERM, then SIGKILL)",
        _command,
    ),
    Field(
        "ndsclustHealthCommand",
        "health-command",
        "--health-command",
        "Command line that checks its health, exit 0 = healthy (empty: none)",
        _command,
    ),
    Field(
        "ndsclustPrimaryServer",
        "primary",
        "--primary",
        "Primary server (normally runs it)",
        _server,
        required=True,
    ),
    Field(
        "ndsclustBackupServer",
        "backups",
        "--backup",
        "Backup servers in order of preference, comma-separated",
        _server,
        multi=True,
    ),
    Field(
        "ndsclustResource",
        "resources",
        "--resource",
        "Resources it needs, comma-separated (a server lacking one will not take it)",
        check_resource,
        multi=True,
    ),
    Field(
        "ndsclustAutoRecover",
        "auto-recover",
        "--auto-recover",
        "Fail back to the primary by itself when it returns? (no: wait for an operator)",
        boolean,
        default="yes",
    ),
    # Stacks (docs/design.md section 3, "Stacks"), in the auxiliary class ndsclustStack.
    Field(
        "ndsclustRequires",
        "requires",
        None,  # app edit --set requires=... (prompting for app add stays as it was)
        "Applications it needs on the same server, started first, comma-separated",
        check_tag,
        multi=True,
    ),
    Field(
        "ndsclustAvoids",
        "avoids",
        None,
        "Applications it should not share a server with, comma-separated",
        check_tag,
        multi=True,
    ),
    Field(
        "ndsclustServiceAddress",
        "addresses",
        None,
        "Service addresses that move with it, ip/prefix[@interface], comma-separated",
        check_service_address,
        multi=True,
    ),
    Field("ndsclustHostServer", "host", None, "", _server),
    Field("ndsclustState", "state", None, "", _state),
    Field("ndsclustRequest", "request", None, "", _request),
    Field("ndsclustMarker", "marker", None, "", _marker),
)
ADD_FIELDS = tuple(f for f in FIELDS if f.flag)
_ALIASES = {
    "backup": "backups",
    "resource": "resources",
    "unload": "unload-command",
    "health": "health-command",
    "autorecover": "auto-recover",
    "require": "requires",
    "avoid": "avoids",
    "address": "addresses",
    "service-address": "addresses",
}


def field_named(name: str) -> Field:
    """A field by its short name (``backups``, ``auto_recover``) or LDAP name, any case."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    for f in FIELDS:
        if key in (f.name, f.attr.lower()):
            return f
    raise ValueError(
        f"{name!r} is not an application attribute; allowed: "
        + ", ".join(f.name for f in FIELDS)
        + " (or their ndsclust* LDAP names)"
    )


def ldap_values(f: Field, values: Sequence[str]) -> list[str]:
    """Values as written: backups carry their position, ``{0}beta``, ``{1}gamma`` (the
    attribute is X-ORDERED 'VALUES', so the operator's order survives replication)."""
    if f.attr == "ndsclustBackupServer":
        return [f"{{{i}}}{v}" for i, v in enumerate(values)]
    return list(values)


def check_references(app: App, servers: Sequence[str], flags: bool) -> None:
    """NoSuchEntry naming the attribute (and flag) when ``app`` names an unknown server."""
    try:
        entries.check_references(app, servers)
    except EntryInvalid as e:
        f = field_named(e.attribute)
        known = ", ".join(sorted(servers)) or "none yet"
        raise NoSuchEntry(
            f"{f.label() if flags else f.attr}: {e.problem}; known servers: "
            f"{known} ('ndsclust servers add NAME' adds one)"
        ) from None


# -- app add -------------------------------------------------------------------------------


def given_values(args: argparse.Namespace) -> dict[str, str]:
    """The attribute values given as flags, as text (lists comma-joined)."""
    out: dict[str, str] = {}
    for f in ADD_FIELDS:
        dest = (f.flag or "").lstrip("-").replace("-", "_")
        v = getattr(args, dest, None)
        if v is None:
            continue
        if isinstance(v, bool):
            out[f.attr] = "yes" if v else "no"
        elif isinstance(v, list):
            out[f.attr] = ",".join(v)
        else:
            out[f.attr] = str(v)
    return out


def check_given(given: Mapping[str, str]) -> dict[str, list[str]]:
    """Every flag value checked; ConfigError listing all problems (missing ones included)."""
    problems: list[str] = []
    values: dict[str, list[str]] = {}
    for f in ADD_FIELDS:
        text = given.get(f.attr)
        if text is None or not text.strip():
            if f.required and not f.default:
                problems.append(f"{f.label()}: is missing; {f.prompt[0].lower()}{f.prompt[1:]}")
                continue
            text = f.default
        try:
            vals = f.values(text)
        except ValueError as e:
            problems.append(f"{f.label()}: {e}")
            continue
        if vals:
            values[f.attr] = vals
    if problems:
        raise ConfigError("app add", problems)
    return values


def prompt_values(
    given: Mapping[str, str], ask: Ask, servers: Sequence[str], say: Callable[[str], None]
) -> dict[str, list[str]]:
    """Ask for every attribute not given as a flag, again until the answer is valid."""
    values: dict[str, list[str]] = {}
    for f in ADD_FIELDS:
        text = given.get(f.attr)
        while True:
            if text is None:
                hint = f" [{f.default}]" if f.default else ""
                if f.check is _server and servers:
                    hint = f" (one of {', '.join(sorted(servers))}){hint}"
                text = ask(f"{f.prompt}{hint}: ").strip() or f.default
            try:
                if f.required and not text:
                    raise ValueError("is required")
                vals = f.values(text)
                if f.check is _server:
                    unknown = [v for v in vals if v not in servers]
                    if unknown:
                        raise ValueError(
                            f"names unknown server {unknown[0]!r}; known: "
                            f"{', '.join(sorted(servers)) or 'none yet'}"
                        )
                primary = values.get("ndsclustPrimaryServer", [""])[0]
                if f.attr == "ndsclustBackupServer" and primary in vals:
                    raise ValueError(
                        f"names the primary server {primary!r}; a backup must be another server"
                    )
            except ValueError as e:
                say(f"  {f.attr}: {e}")
                text = None
                continue
            break
        if vals:
            values[f.attr] = vals
    return values


def yes(ask: Ask, question: str, default: bool) -> bool:
    while True:
        answer = ask(f"{question} [{'Y/n' if default else 'y/N'}]: ").strip()
        if not answer:
            return default
        try:
            return boolean(answer) == "TRUE"
        except ValueError:
            continue


def build_app(st: Store, values: Mapping[str, list[str]], load: bool) -> App:
    """The application the values describe, as the sentinels would parse it; EntryInvalid
    for a rule spanning attributes. A loaded one starts on its primary (FIG. 6 step 610)."""
    attrs: dict[str, list[str]] = {"objectClass": APP_CLASSES}
    by_attr = {f.attr: f for f in FIELDS}
    for attr, vals in values.items():
        attrs[attr] = ldap_values(by_attr[attr], vals)
    if load:
        attrs["ndsclustHostServer"] = list(values["ndsclustPrimaryServer"])
        attrs["ndsclustState"] = [AppState.LOADING.value]
    else:
        attrs["ndsclustState"] = [AppState.STOPPED.value]
    tag = values["ndsclustTag"][0]
    return entries.parse_app(st.app_dn(tag), attrs)


# -- app edit ------------------------------------------------------------------------------


def parse_sets(items: Sequence[str]) -> dict[Field, list[str]]:
    """``--set NAME=VALUE`` items checked; ConfigError listing every problem."""
    problems: list[str] = []
    out: dict[Field, list[str]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            problems.append(f"--set {item!r}: write NAME=VALUE, e.g. --set backups=beta,gamma")
            continue
        try:
            f = field_named(name)
        except ValueError as e:
            problems.append(f"--set {item!r}: {e}")
            continue
        if f.attr == "ndsclustTag":
            problems.append(
                "ndsclustTag (tag): the tag names the entry and cannot change; add "
                "the application under the new tag and remove the old one"
            )
            continue
        try:
            vals = f.values(text)
        except ValueError as e:
            problems.append(f"{f.attr} ({f.name}): {e}")
            continue
        if not vals and f.required:
            problems.append(f"{f.attr} ({f.name}): is required and cannot be removed")
            continue
        out[f] = vals
    if problems:
        raise ConfigError("app edit", problems)
    return out


def edited(raw: Mapping[str, list[str]], sets: Mapping[Field, list[str]]) -> dict[str, list[str]]:
    """The entry's attributes after the edit (removed attributes left out)."""
    out = {k: list(v) for k, v in raw.items()}
    for f, vals in sets.items():
        for k in [k for k in out if k.lower() == f.attr.lower()]:
            del out[k]
        if vals:
            out[f.attr] = ldap_values(f, vals)
    return out


# -- stacks --------------------------------------------------------------------------------


def stack_class(
    raw: Mapping[str, list[str]], sets: Mapping[Field, list[str]]
) -> dict[str, list[str] | None]:
    """The objectClass change an edit of a stack attribute needs (ndsclustStack)."""
    if not any(f.attr in STACK_ATTRS and v for f, v in sets.items()):
        return {}
    classes = next((v for k, v in raw.items() if k.lower() == "objectclass"), [])
    if any(c.lower() == "ndsclustStack".lower() for c in classes):
        return {}
    return {"objectClass": [*classes, "ndsclustStack"]}


def stack_text(a: Mapping[str, Any]) -> str:
    """The stack column of ``status``: requirements, separations and service addresses."""
    parts = []
    if a.get("requires"):
        parts.append("needs " + ",".join(a["requires"]))
    if a.get("avoids"):
        parts.append("avoids " + ",".join(a["avoids"]))
    parts += list(a.get("service_addresses") or [])
    return " ".join(parts) or "-"

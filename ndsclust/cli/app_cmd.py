"""``ndsclust app add|show|edit|remove``: register and change clustered applications.

``app add`` is the operator's side of registration (patent FIG. 6 step 604: the object of a
cluster-capable program is created by prompting a system operator for its attribute
values): on a terminal it asks for every attribute, otherwise it takes flags. Every value
is checked with the same rules the sentinels apply (``ndsclust.model``,
``ldapstore.entries.parse_app``) and every server named is looked up in ou=servers before
anything is written: bad input writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ldap3

from ndsclust.cli import common
from ndsclust.errors import ConfigError, EntryExists, EntryInvalid, NoSuchEntry
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
    check_tag,
    parse_command,
)

Ask = Callable[[str], str]
APP_CLASSES = ["top", "ndsclustApplication"]
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


def _boolean(value: str) -> str:
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
        _boolean,
        default="yes",
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
            return _boolean(answer) == "TRUE"
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


def cmd_add(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        return _add(args, st)
    except EOFError:
        print("\nndsclust: app add: input ended; nothing written", file=sys.stderr)
        return 1
    finally:
        st.close()


def _add(args: argparse.Namespace, st: Store) -> int:
    given = given_values(args)
    interactive = sys.stdin.isatty() and not args.no_input
    if interactive:
        servers, _ = st.servers()
        values = prompt_values(given, input, list(servers), print)
        load = (
            args.load
            if args.load is not None
            else yes(input, f"Start it on {values['ndsclustPrimaryServer'][0]} now?", True)
        )
    else:
        values = check_given(given)
        load = args.load if args.load is not None else True
    try:
        app = build_app(st, values, load)
    except EntryInvalid as e:
        raise ConfigError("app add", [f"{field_named(e.attribute).label()}: {e.problem}"]) from None
    servers, _ = st.servers()
    check_references(app, list(servers), flags=not interactive)
    if st.search(st.app_dn(app.tag), "(objectClass=*)", scope=ldap3.BASE, attributes=["1.1"]):
        raise EntryExists(
            f"application {app.tag!r} already exists; change it with "
            f"'ndsclust app edit {app.tag} --set NAME=VALUE'"
        )
    if interactive:
        _print_app(app)
        if not yes(input, f"Add {app.tag}?", True):
            print("nothing written")
            return 1
    st.add_app(app)
    common.audit(
        st,
        "app_add",
        tag=app.tag,
        text=f"primary={app.primary} backups={','.join(app.backups) or '-'} "
        f"load={'yes' if load else 'no'}",
    )
    where = (
        f"loading on {app.primary}"
        if load
        else f"not loaded; start it with 'ndsclust load {app.tag}'"
    )
    print(f"{app.tag}: added, {where}")
    return 0


# -- app show ------------------------------------------------------------------------------


def _decoded(raw: Mapping[str, Sequence[Any]]) -> dict[str, list[str]]:
    return {
        k: [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in vs]
        for k, vs in raw.items()
    }


def read_raw(st: Store, tag: str) -> tuple[str, dict[str, list[str]]]:
    found = st.search(st.app_dn(tag), "(objectClass=ndsclustApplication)", scope=ldap3.BASE)
    if not found:
        raise NoSuchEntry(
            f"no application with tag {tag!r} under {st.apps_dn}; 'ndsclust status' lists them"
        )
    return found[0][0], _decoded(found[0][1])


SHOW_ORDER = (
    "tag",
    "type",
    "state",
    "host",
    "primary",
    "backups",
    "resources",
    "auto_recover",
    "request",
    "command",
    "unload_command",
    "health_command",
    "marker",
    "dn",
)


def _print_app(app: App) -> None:
    data = common.app_json(app)
    width = max(len(k) for k in SHOW_ORDER)
    for k in SHOW_ORDER:
        print(f"{k:<{width}}  {common.cell(data[k])}")


def cmd_show(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        dn, raw = read_raw(st, args.tag)
        try:
            app = entries.parse_app(dn, raw)
        except EntryInvalid as e:
            # The entry is there but the sentinels ignore it: show what it holds and why.
            if args.json:
                common.print_json({"dn": dn, "attributes": raw, "invalid": common.invalid_json(e)})
            else:
                for k in sorted(raw):
                    for v in raw[k]:
                        print(f"{k}: {v}")
            print(f"ndsclust: {e}", file=sys.stderr)
            return 1
        events = st.events(tag=app.tag, limit=1)
    finally:
        st.close()
    if args.json:
        common.print_json(
            {
                **common.app_json(app),
                "last_event": common.event_json(events[-1]) if events else None,
            }
        )
        return 0
    _print_app(app)
    if events:
        last = events[-1]
        print(
            f"{'last_event':<{max(len(k) for k in SHOW_ORDER)}}  {common.event_time(last)} "
            f"{last.kind} {last.server or ''} {last.text}".rstrip()
        )
    return 0


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


def cmd_edit(args: argparse.Namespace) -> int:
    sets = parse_sets(args.set)
    st = common.store(args)
    try:
        dn, raw = read_raw(st, args.tag)
        before: App | None
        try:
            before = entries.parse_app(dn, raw)
        except EntryInvalid:
            before = None  # an edit may be what makes it valid again
        try:
            app = entries.parse_app(dn, edited(raw, sets))
        except EntryInvalid as e:
            raise ConfigError("app edit", [f"{e.attribute}: {e.problem}"]) from None
        servers, _ = st.servers()
        check_references(app, list(servers), flags=False)
        changes: dict[str, list[str] | None] = {
            f.attr: ldap_values(f, v) or None
            for f, v in sets.items()
            if f.attr != "ndsclustHostServer"
        }
        host_field = field_named("host")
        old_host = _first(raw, "ndsclustHostServer")
        new_host = sets[host_field][0] if sets.get(host_field) else None
        if host_field in sets and new_host != old_host:
            # Host moves are compare-and-swaps, as the sentinels' own: if a sentinel moved
            # it since we read it, this edit fails instead of undoing the move.
            st.swap(dn, "ndsclustHostServer", old_host, new_host, also=changes)
        elif changes:
            st.replace_app_attrs(args.tag, changes)
        common.audit(
            st,
            "app_edit",
            tag=app.tag,
            text=" ".join(f"{f.name}={','.join(v) or '(removed)'}" for f, v in sets.items()),
        )
    finally:
        st.close()
    for f in sets:
        old_text = _field_text(before, f) if before else "(invalid entry)"
        print(f"{app.tag}: {f.name}: {old_text} -> {_field_text(app, f)}")
    return 0


def _first(raw: Mapping[str, list[str]], attr: str) -> str | None:
    return next((v[0] for k, v in raw.items() if k.lower() == attr.lower() and v), None)


def _field_text(app: App, f: Field) -> str:
    value = common.app_json(app).get(f.name.replace("-", "_"))
    return common.cell(value) if value not in (None, [], "") else "(none)"


# -- app remove ----------------------------------------------------------------------------


def cmd_remove(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        _, raw = read_raw(st, args.tag)
        host = _first(raw, "ndsclustHostServer")
        if host and not args.force:
            print(
                f"ndsclust: {args.tag} is hosted on {host}: unload it first "
                f"('ndsclust unload {args.tag} --wait'), then remove it; --force removes "
                "the entry while it is hosted",
                file=sys.stderr,
            )
            return 1
        st.delete_app(args.tag)
        common.audit(st, "app_remove", tag=args.tag, text=f"host={host} force=yes" if host else "")
    finally:
        st.close()
    print(f"{args.tag}: removed")
    return 0


# -- parsers -------------------------------------------------------------------------------


def register(sub: Any) -> None:
    p = sub.add_parser(
        "app",
        help="add, show, edit or remove a clustered application",
        description="Manage the application entries under ou=applications.",
    )
    s = p.add_subparsers(dest="app_command", metavar="ACTION")
    s.required = True

    add = s.add_parser(
        "add",
        help="register an application (asks for every attribute on a terminal)",
        description="Register a clustered application. On a terminal every attribute not "
        "given as a flag is asked for; otherwise --tag, --command and --primary "
        "are required. By default the application starts on its primary at "
        "once (--no-load: registered, not running). Nothing is written when a "
        "value is invalid or a server named is unknown.",
        epilog="example: ndsclust app add --tag web --command '/usr/sbin/nginx -g \"daemon off;\"' "
        "--primary alpha --backup beta --backup gamma --resource vip-10.0.0.5",
    )
    add.add_argument("--tag", help="unique name of the application (also its RDN)")
    add.add_argument(
        "--type",
        choices=[t.value for t in AppType],
        help="capable: ndsclust starts and stops it (default); aware: it uses the ndsclust API",
    )
    add.add_argument(
        "--command",
        help="command line that loads and runs it (run without a "
        "shell; the program as an absolute path)",
    )
    add.add_argument(
        "--unload-command",
        help="command line that unloads it (default: SIGTERM, then SIGKILL after a grace period)",
    )
    add.add_argument("--health-command", help="command line that exits 0 while it is healthy")
    add.add_argument("--primary", help="server that normally runs it")
    add.add_argument(
        "--backup",
        action="append",
        metavar="SERVER",
        help="backup server; repeat in order of preference (or comma-separate)",
    )
    add.add_argument(
        "--resource",
        action="append",
        metavar="NAME",
        help="resource it needs; repeat for several. A server lacking one will not take it",
    )
    add.add_argument(
        "--auto-recover",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fail back to the primary by itself when it returns (default); "
        "--no-auto-recover: wait in awaiting-failback for 'ndsclust failback'",
    )
    add.add_argument(
        "--load",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start it on its primary now (default); --no-load: register only",
    )
    add.add_argument(
        "--no-input",
        action="store_true",
        help="never ask, even on a terminal: take the flags as they are",
    )
    add.set_defaults(handler=cmd_add)

    show = s.add_parser(
        "show",
        help="every attribute of one application",
        description="Print every attribute of the application and its last "
        "event. An entry the sentinels ignore because it is "
        "invalid is shown raw, with the problem (exit 1).",
    )
    show.add_argument("tag")
    show.add_argument("--json", action="store_true", help="print JSON (stable keys)")
    show.set_defaults(handler=cmd_show)

    edit = s.add_parser(
        "edit",
        help="change attributes: --set NAME=VALUE",
        description="Change attributes of an application. NAME is a short name or the LDAP "
        "name: "
        + ", ".join(f"{f.name} ({f.attr})" for f in FIELDS if f.name != "tag")
        + ". backups and resources take comma-separated lists (backups in order "
        "of preference); an empty VALUE removes an optional attribute. Only the "
        "attributes named are written, and only when the result is valid.",
        epilog="example: ndsclust app edit web --set backups=gamma,beta --set auto-recover=no",
    )
    edit.add_argument("tag")
    edit.add_argument(
        "--set",
        action="append",
        required=True,
        metavar="NAME=VALUE",
        help="attribute to change; repeat for several",
    )
    edit.set_defaults(handler=cmd_edit)

    rm = s.add_parser(
        "remove",
        help="delete an application's entry",
        description="Delete the application's entry. Refused while a server "
        "hosts it: unload it first ('ndsclust unload TAG --wait').",
    )
    rm.add_argument("tag")
    rm.add_argument("--force", action="store_true", help="delete the entry even while it is hosted")
    rm.set_defaults(handler=cmd_remove)

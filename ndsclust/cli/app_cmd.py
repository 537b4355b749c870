"""``ndsclust app add|show|edit|remove``: register and change clustered applications.

``app add`` is the operator's side of registration (patent FIG. 6 step 604: the object of a
cluster-capable program is created by prompting a system operator for its attribute
values): on a terminal it asks for every attribute, otherwise it takes flags. Every value
is checked with the same rules the sentinels apply (``ndsclust.model``,
``ldapstore.entries.parse_app``, through ``app_fields.py``) and every server named is looked
up in ou=servers before anything is written: bad input writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from ndsclust.cli import common
from ndsclust.cli.app_fields import (
    FIELDS,
    Field,
    build_app,
    check_given,
    check_references,
    edited,
    field_named,
    given_values,
    ldap_values,
    parse_sets,
    prompt_values,
    stack_class,
    yes,
)
from ndsclust.errors import ConfigError, EntryExists, EntryInvalid
from ndsclust.ldapstore import entries, reads, replication
from ndsclust.ldapstore.store import Store
from ndsclust.model import App, AppType

# -- app add -------------------------------------------------------------------------------


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
    if reads.exists(st, st.app_dn(app.tag)):
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


def read_raw(st: Store, tag: str) -> tuple[str, dict[str, list[str]]]:
    """An application's DN and attributes as they are, valid or not."""
    e = reads.application(st, tag)
    return e.dn, {k: list(v) for k, v in e.attributes.items()}


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
    "requires",
    "avoids",
    "service_addresses",
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
        changes.update(stack_class(raw, sets))  # stacks: ndsclustStack when needed
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
        dn, raw = read_raw(st, args.tag)
        host = _first(raw, "ndsclustHostServer")
        if host and not args.force:
            print(
                f"ndsclust: {args.tag} is hosted on {host}: unload it first "
                f"('ndsclust unload {args.tag} --wait'), then remove it; --force removes "
                "the entry while it is hosted",
                file=sys.stderr,
            )
            return 1
        lag = None if args.force else _until_replicated(args, dn)
        if lag:
            print(
                f"ndsclust: {args.tag}: the providers do not hold the same copy of it yet "
                f"({lag}); a delete now can be undone by replication (docs/platform.md "
                "fact 35): try again once they agree, or --force",
                file=sys.stderr,
            )
            return 1
        st.delete_app(args.tag)
        common.audit(st, "app_remove", tag=args.tag, text=f"host={host} force=yes" if host else "")
    finally:
        st.close()
    print(f"{args.tag}: removed")
    return 0


REMOVE_SETTLE = 10.0  # seconds app remove waits for every provider to hold the last write


def _until_replicated(args: argparse.Namespace, dn: str) -> str | None:
    """Wait up to REMOVE_SETTLE seconds until every provider that answers holds the same
    copy of ``dn`` (one entryCSN); None then, else which providers differ. A delete made
    while the last modify is still on its way elsewhere can bring the entry back."""
    deadline = time.monotonic() + REMOVE_SETTLE
    while True:
        csns = replication.entry_csns(common.uris(args), common.credentials(args), dn)
        if len(set(csns.values())) <= 1:
            return None
        if time.monotonic() >= deadline:
            return ", ".join(f"{uri}: {csn or 'absent'}" for uri, csn in sorted(csns.items()))
        time.sleep(0.2)


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
        "hosts it: unload it first ('ndsclust unload TAG --wait'). Waits up to "
        f"{REMOVE_SETTLE:.0f} s for every provider to hold the same copy first.",
    )
    rm.add_argument("tag")
    rm.add_argument(
        "--force",
        action="store_true",
        help="delete the entry even while it is hosted or the providers differ",
    )
    rm.set_defaults(handler=cmd_remove)

"""``ndsclust servers [list|add|remove]``: the server entries under ou=servers.

Applications name servers by their ``cn`` (docs/design.md section 2), so a server is added
before any application names it and removed only after none does.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ndsclust.cli import common, liveness_view
from ndsclust.cli.status_cmd import DEFAULT_STALE, add_stale_option
from ndsclust.errors import ConfigError, EntryExists, EntryInvalid, NoSuchEntry, StoreError
from ndsclust.ldapstore import entries, reads
from ndsclust.ldapstore.entries import Entry
from ndsclust.ldapstore.store import Snapshot, Store
from ndsclust.liveness import pulse_alive
from ndsclust.model import Pulse, Server, ServerName, ServerState, check_server_name

COLUMNS = ("server", "state", "seen", "addresses", "resources", "hosting", "primary_for", "reason")
# Attributes of an application entry that name servers; backups carry "{n}" order prefixes.
NAMING = ("ndsclustPrimaryServer", "ndsclustBackupServer", "ndsclustHostServer", "ndsclustRequest")
_ORDER_PREFIX = re.compile(r"^\{\d+\}")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "servers",
        help="list, add or remove servers",
        description="Without an action: list the servers (as 'servers list').",
    )
    _list_options(p)
    p.set_defaults(handler=cmd_list)
    s = p.add_subparsers(dest="servers_command", metavar="ACTION")
    s.required = False

    ls = s.add_parser("list", help="every server with its state, addresses and resources")
    _list_options(ls)
    ls.set_defaults(handler=cmd_list)

    add = s.add_parser(
        "add",
        help="add a server",
        description="Add a server entry (and the cluster base, when this is the first). NAME "
        "is what applications and sentinel configurations call it: lower-case "
        "letters, digits and '-'.",
        epilog="example: ndsclust servers add alpha --address 198.18.0.1:7946 --resource vip1",
    )
    add.add_argument("name")
    add.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="IP:PORT",
        help="heartbeat address of its sentinel; repeat for redundant rings",
    )
    add.add_argument(
        "--resource",
        action="append",
        default=[],
        metavar="NAME",
        help="resource it offers (an application needing it may run there); repeat",
    )
    add.add_argument(
        "--state",
        choices=[s.value for s in ServerState],
        default="up",
        help="initial state (default %(default)s)",
    )
    add.set_defaults(handler=cmd_add)

    rm = s.add_parser(
        "remove",
        help="remove a server no application names",
        description="Delete the server's entry and its pulse. Refused while an "
        "application names it as primary, backup, host or migrate "
        "target: edit or remove those first.",
    )
    rm.add_argument("name")
    rm.set_defaults(handler=cmd_remove)


def _list_options(p: Any) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (stable keys)")
    p.add_argument(
        "--channels",
        action="store_true",
        help="which channels each sentinel hears each peer on (like corosync-cfgtool -s)",
    )
    add_stale_option(p)


def server_data(
    snap: Snapshot,
    pulses: Mapping[ServerName, Pulse] | None = None,
    now: float = 0.0,
    stale: float = DEFAULT_STALE,
) -> list[dict[str, Any]]:
    """Every server with its state judged from the sentinels' liveness reports
    (``liveness_view``); ``entry_state`` is what its entry says (up, maintenance)."""
    judged = liveness_view.judgements(snap.servers, pulses or {}, now, stale)
    out = []
    for name in sorted(snap.servers):
        s = snap.servers[name]
        apps = snap.apps.values()
        fresh = name in pulse_alive([name], {name: _stamp(pulses, name)}, now, stale)
        out.append(
            {
                "name": name,
                "entry_state": s.state.value,
                **liveness_view.state_json(judged[name], fresh),
                "addresses": list(s.addresses),
                "resources": sorted(s.resources),
                "hosting": sorted(a.tag for a in apps if a.host == name),
                "primary_for": sorted(a.tag for a in apps if a.primary == name),
                "backup_for": sorted(a.tag for a in apps if name in a.backups),
                "dn": s.dn,
            }
        )
    return out


def _stamp(pulses: Mapping[ServerName, Pulse] | None, name: ServerName) -> float | None:
    p = (pulses or {}).get(name)
    return None if p is None else common.parse_time(p.stamp)


def cmd_list(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        snap = st.snapshot()
        pulses = st.pulses()
    finally:
        st.close()
    now = time.time()
    if args.channels:
        rows = liveness_view.channel_data(snap.servers, pulses, now, args.stale)
        if args.json:
            common.print_json(rows)
        else:
            columns, table = liveness_view.channel_rows(rows)
            common.print_rows("channels each sentinel hears its peers on", columns, table)
        return 0
    data = server_data(snap, pulses, now, args.stale)
    if args.json:
        common.print_json(data)
    else:
        common.print_rows("servers", COLUMNS, [{**d, "server": d["name"]} for d in data])
    for e in snap.invalid:
        if e.dn.lower().endswith(st.servers_dn.lower()):
            print(f"ndsclust: invalid server entry, ignored: {e}", file=sys.stderr)
    return 0


def build_server(
    st: Store, name: str, addresses: Sequence[str], resources: Sequence[str], state: str
) -> Server:
    """The server the options describe, checked as the sentinels check it; ConfigError
    naming the option and what is allowed."""
    try:
        check_server_name(name)
    except ValueError as e:
        raise ConfigError("servers add", [f"NAME: {e}"]) from None
    attrs: dict[str, list[str]] = {
        "objectClass": ["top", "ndsclustServer"],
        "cn": [name],
        "ndsclustServerState": [state],
    }
    if addresses:
        attrs["ndsclustAddress"] = list(addresses)
    if resources:
        attrs["ndsclustResource"] = list(resources)
    flags = {
        "ndsclustAddress": "--address",
        "ndsclustResource": "--resource",
        "ndsclustServerState": "--state",
    }
    try:
        return entries.parse_server(st.server_dn(name), attrs)
    except EntryInvalid as e:
        raise ConfigError(
            "servers add", [f"{e.attribute} ({flags.get(e.attribute, e.attribute)}): {e.problem}"]
        ) from None


def cmd_add(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        server = build_server(st, args.name, args.address, args.resource, args.state)
        st.ensure_base()
        try:
            st.add_server(server)
        except EntryExists:
            raise EntryExists(f"server {server.name!r} already exists ({server.dn})") from None
        common.audit(
            st,
            "server_add",
            server=server.name,
            text=f"server={server.name} addresses={','.join(server.addresses) or '-'}",
        )
    finally:
        st.close()
    print(
        f"{server.name}: added"
        + ("" if server.addresses else " (no heartbeat address: the lan channel cannot reach it)")
    )
    return 0


def naming_apps(found: Sequence[Entry], name: str) -> list[str]:
    """``dn (attribute)`` of every application entry that names server ``name``, read raw so
    that invalid entries count too."""
    out = []
    for e in found:
        for attr in NAMING:
            for v in e.all(attr):
                if _ORDER_PREFIX.sub("", v).removeprefix("migrate:") == name:
                    out.append(f"{e.dn} ({attr})")
    return out


def cmd_remove(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        if not reads.exists(st, st.server_dn(args.name), "(objectClass=ndsclustServer)"):
            raise NoSuchEntry(f"no server {args.name!r} under {st.servers_dn}")
        users = naming_apps(reads.applications(st, NAMING), args.name)
        if users:
            print(
                f"ndsclust: {args.name} is still named by: {'; '.join(users)}. Move or edit "
                "those applications first ('ndsclust migrate', 'ndsclust app edit TAG --set "
                "backups=...')",
                file=sys.stderr,
            )
            return 1
        st.delete_server(args.name)
        try:
            st.delete(st.pulse_dn(args.name))
        except NoSuchEntry:
            pass  # its sentinel never published a pulse
        except StoreError as e:
            print(f"ndsclust: warning: its pulse entry stays: {e}", file=sys.stderr)
        common.audit(st, "server_remove", server=args.name, text=f"server={args.name}")
    finally:
        st.close()
    print(f"{args.name}: removed")
    return 0

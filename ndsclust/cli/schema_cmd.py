"""``ndsclust schema install|show``: load the schema into every provider's cn=config."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ndsclust import schema
from ndsclust.cli import common
from ndsclust.errors import NdsclustError
from ndsclust.ldapstore import schema_admin


def register(sub: Any) -> None:
    p = sub.add_parser("schema", help="show or install the ndsclust LDAP schema")
    s = p.add_subparsers(dest="schema_command", metavar="ACTION")
    s.required = True
    show = s.add_parser("show", help="print the schema (cn=config LDIF or slapd.conf form)")
    show.add_argument("--format", choices=("ldif", "schema"), default="ldif")
    show.set_defaults(handler=cmd_show)
    inst = s.add_parser(
        "install",
        help="load the schema into each provider's cn=config (idempotent)",
        description="Load the schema into each provider given by --uri. cn=config is not "
        "replicated: run it against every provider. Typical use as root on each "
        "server: ndsclust --uri ldapi:/// -Y schema install",
    )
    inst.set_defaults(handler=cmd_install)


def cmd_show(args: argparse.Namespace) -> int:
    print(schema.render_ldif() if args.format == "ldif" else schema.render_schema(), end="")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    creds = common.credentials(args)
    failed = 0
    for uri in common.uris(args):
        try:
            outcome = schema_admin.install(uri, creds)
            print(f"{uri}: ndsclust schema version {schema.VERSION} {outcome}")
        except NdsclustError as e:
            print(f"ndsclust: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0

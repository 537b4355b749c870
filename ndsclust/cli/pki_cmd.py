"""``ndsclust pki init|issue|heartbeat-key``: the cluster CA, server certificates, the
heartbeat key. The work is ``ndsclust.pki``; this module reads the options and says what
was written."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ndsclust import pki


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pki",
        help="create the cluster CA, server certificates and the heartbeat key",
        description="Create the TLS material of a cluster: a CA (ECDSA P-256, 10 years), one "
        "certificate per server for its slapd and its sentinel (serverAuth and "
        "clientAuth, 2 years), and the LAN heartbeat key. Keys are written 0600, "
        "certificates 0644; existing files are kept unless --force.",
    )
    s = p.add_subparsers(dest="pki_command", metavar="ACTION")
    s.required = True

    init = s.add_parser("init", help="create the cluster CA (ca.key, ca.crt) in DIR")
    init.add_argument("--dir", required=True, type=Path, help="directory for the CA files")
    init.add_argument(
        "--cluster",
        default="ndsclust",
        help="cluster name, the O= of every subject (default %(default)s)",
    )
    init.add_argument(
        "--base",
        metavar="DN",
        help="cluster base entry; prints the olcAuthzRegexp that maps server "
        "certificates to their entries under it",
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(handler=cmd_init)

    iss = s.add_parser(
        "issue",
        help="issue SERVER.key and SERVER.crt, signed by the CA in DIR",
        description="The certificate names the server (DNS:SERVER) and every --dns and --ip "
        "given: list each name or address clients use in provider URIs.",
    )
    iss.add_argument("server", metavar="SERVER", help="server name (the cn of its entry)")
    iss.add_argument("--dir", required=True, type=Path, help="directory holding the CA")
    iss.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="an IP address of the server (repeatable)",
    )
    iss.add_argument(
        "--dns",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name of the server (repeatable)",
    )
    iss.add_argument("--force", action="store_true", help="replace existing files")
    iss.set_defaults(handler=cmd_issue)

    hb = s.add_parser(
        "heartbeat-key",
        help="write a new LAN heartbeat key (mode 0600)",
        description="32 random bytes, base64. Copy the file to every server "
        "(channels.lan.key_file). To rotate: give the old file as "
        "old_key_file and the new one as key_file on every server, "
        "then drop old_key_file.",
    )
    hb.add_argument("--out", required=True, type=Path, help="file to write")
    hb.add_argument("--force", action="store_true", help="replace an existing file")
    hb.set_defaults(handler=cmd_heartbeat_key)


def _report(written: tuple[pki.Written, ...]) -> None:
    for w in written:
        print(f"wrote {w.path} (mode {w.mode:04o})")


def cmd_init(args: argparse.Namespace) -> int:
    _report(pki.init_ca(args.dir, args.cluster, datetime.now(UTC), force=args.force))
    if args.base:
        print(f"olcAuthzRegexp: {pki.authz_regexp(args.cluster, args.base)}")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    _report(
        pki.issue(
            args.dir, args.server, datetime.now(UTC), ips=args.ip, dns=args.dns, force=args.force
        )
    )
    return 0


def cmd_heartbeat_key(args: argparse.Namespace) -> int:
    _report((pki.write_heartbeat_key(args.out, force=args.force),))
    return 0

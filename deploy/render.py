"""Render the slapd configuration of an ndsclust directory from a site file.

One site file (``site.example.yaml`` beside this script) describes the whole directory:
suffixes, the providers in write-provider order, the replication identity, the operators
and auditors, TLS material. From it this script renders, with ``ndsclust.site`` and its
templates in ``ndsclust/slapd/`` (the local lab renders its providers from the same ones):

``provider SITE --server-id N``
    the cn=config LDIF of provider N, for ``slapadd -n0``: syncprov, accesslog and
    delta-syncrepl from every other provider, the pulse database, the monitor, indexes on
    the ndsclust attributes, the ndsclust schema, TLS and the ACLs;
``seed SITE --out-dir DIR``
    the base entries (suffix, cluster base, groups, replication identity, pulse suffix),
    with fixed entryUUID and entryCSN: render them once and load the same files on every
    provider with ``slapadd -w``, so they are one entry everywhere;
``server SITE --name NAME --address IP:PORT --password-file FILE``
    the entry of one server, which is also the identity its sentinel binds as.

Run it with the Python that has ndsclust installed (``/opt/ndsclust/bin/python``): the
schema, the server entry and the server-name rules come from the package itself. Every
problem with the site file is reported at once; the exit status is then 2. See INSTALL.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from ndsclust.errors import ConfigError
from ndsclust.site import (RenderError, fill, load_site, parse_site, provider_ldif,
                           read_secret, seed_ldifs, server_ldif, ssha, with_operational)

__all__ = ["RenderError", "fill", "main", "parse_site", "provider_ldif", "seed_ldifs",
           "server_ldif", "ssha", "with_operational"]


# -- command line ------------------------------------------------------------------------


def _write(text: str, out: str | None) -> None:
    """Print ``text``, or write it to ``out`` readable by its owner only: rendered files
    hold the replication password or password hashes."""
    if out is None:
        sys.stdout.write(text)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prov = sub.add_parser("provider", help="cn=config LDIF of one provider (slapadd -n0)")
    prov.add_argument("site", help="site file (see site.example.yaml)")
    prov.add_argument("--server-id", type=int, required=True, help="this provider's id")
    prov.add_argument("-o", "--out", help="write here (mode 0600) instead of stdout")
    seed = sub.add_parser("seed", help="base entries for every provider (slapadd -w)")
    seed.add_argument("site")
    seed.add_argument("--out-dir", required=True, help="writes seed-main.ldif, seed-pulse.ldif")
    srv = sub.add_parser("server", help="one server entry with its sentinel's identity")
    srv.add_argument("site")
    srv.add_argument("--name", required=True, help="server name (lower case, digits, '-')")
    srv.add_argument("--address", action="append", default=[], metavar="IP:PORT",
                     help="heartbeat address of its sentinel; repeat for redundant rings")
    srv.add_argument("--resource", action="append", default=[], metavar="NAME",
                     help="resource the server offers; repeat")
    srv.add_argument("--password-file", required=True,
                     help="the password its sentinel binds with (directory.password_file)")
    srv.add_argument("-o", "--out", help="write here (mode 0600) instead of stdout")
    args = parser.parse_args(argv)
    try:
        site = load_site(args.site)
        if args.command == "provider":
            _write(provider_ldif(site, args.server_id), args.out)
        elif args.command == "seed":
            out_dir = Path(args.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            for name, text in seed_ldifs(site, datetime.now(timezone.utc)).items():
                _write(text, str(out_dir / name))
        else:
            try:
                password = read_secret(args.password_file)
            except OSError as e:
                raise ConfigError("--password-file", [f"{args.password_file}: {e.strerror}"]) from None
            _write(server_ldif(site, args.name, args.address, args.resource, password), args.out)
    except ConfigError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

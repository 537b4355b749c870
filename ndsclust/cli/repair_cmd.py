"""``ndsclust doctor --repair``: repair what the providers hold differently, with consent.

Without ``--reseed``: one anti-entropy sweep (``ndsclust.ldapstore.antientropy``) through
the write provider, then what still differs and the re-seed command for it. With
``--reseed URI --slapd-conf DIR`` (run where that provider's files are, its slapd stopped):
reload that provider's cluster database from the write provider
(``ndsclust.ldapstore.reseed``). Each step asks first unless ``--yes``; docs/operating.md,
"When providers differ".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ndsclust.cli import common
from ndsclust.ldapstore import reseed
from ndsclust.ldapstore.antientropy import Repairer
from ndsclust.ldapstore.store import Store


def add_arguments(p: Any) -> None:
    p.add_argument(
        "--repair",
        action="store_true",
        help="repair entries the providers hold differently through the write provider; "
        "with --reseed, reload one provider's copy (asks first)",
    )
    p.add_argument("--yes", action="store_true", help="with --repair: do not ask")
    p.add_argument("--reseed", metavar="URI", help="with --repair: the provider to re-seed")
    p.add_argument(
        "--slapd-conf", metavar="DIR", type=Path, help="with --reseed: that provider's slapd.d"
    )


def _consent(args: argparse.Namespace, question: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question} -- not a terminal: give --yes to go ahead", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _write_provider(store: Store) -> str:
    store.search(store.base, "(objectClass=*)", scope="BASE", attributes=["1.1"])
    assert store.provider is not None
    return store.provider


def run(args: argparse.Namespace) -> int:
    store = common.store(args)
    try:
        write = _write_provider(store)
        return _reseed(args, store, write) if args.reseed else _sweep(args, store, write)
    finally:
        store.close()


def _sweep(args: argparse.Namespace, store: Store, write: str) -> int:
    if not _consent(args, f"Repair diverged entries through the write provider {write}?"):
        return 1
    rep = Repairer(
        uris=common.uris(args),
        creds=common.credentials(args),
        base=store.base,
        suffix=store.suffix,
        write=lambda: write,
        record=lambda kind, text: store.record_event(kind, server="cli", text=text),
    )
    try:
        out = rep.sweep()
    finally:
        rep.close()
    for d in out.done:
        print(f"repair\t{d.repair.dn}\t{d.provider}\t{d.repair.action.value}\tok={d.ok}")
    for dn, where in out.still:
        for u in where:
            print(
                f"still differs\t{dn}\t{u}\tre-seed it: stop its slapd, then on its server "
                f"ndsclust doctor --repair --reseed {u} --slapd-conf /etc/ldap/slapd.d"
            )
    print(
        f"repair: entries={out.entries} differing={len(out.differing)} "
        f"repaired={out.repaired} still={len(out.still)}"
        + (f" held={out.held!r}" if out.held else "")
    )
    return 1 if out.held or out.still else 0


def _reseed(args: argparse.Namespace, store: Store, write: str) -> int:
    target: str = args.reseed
    if args.slapd_conf is None:
        print("--reseed needs --slapd-conf DIR (that provider's slapd.d)", file=sys.stderr)
        return 2
    if target == write:
        print(f"{target} is the write provider: nothing to re-seed it from", file=sys.stderr)
        return 2
    if reseed.answers(target, common.credentials(args)):
        print(f"{target} answers: stop its slapd first", file=sys.stderr)
        return 1
    if not _consent(
        args,
        f"Replace {target}'s copy of {store.suffix} ({args.slapd_conf}) with the write "
        f"provider {write}'s?",
    ):
        return 1
    ldif = reseed.export_from(write, common.credentials(args), store.suffix)
    kept, took = reseed.reload(args.slapd_conf, store.suffix, ldif)
    store.record_event(
        "reseed",
        server="cli",
        text=f"provider={target} from={write} entries={ldif.count(chr(10) + 'dn:') + 1} "
        f"old_files={kept}",
    )
    print(f"reseed: provider={target} from={write} slapadd_s={took:.2f} old_files={kept}")
    print("start its slapd again; replication resumes from the reloaded copy")
    return 0

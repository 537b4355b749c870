# PARAMS ARGCOMPLETE_OK
"""The ``ndsclust`` command: one subcommand per verb (docs/style.md section 9).

Exit codes (``EXIT_*``, README "Exit codes"): 0 done; 1 refused or not done (the
sentinels rejected or ignored a request, a ``--wait`` ran out, ``doctor`` found a problem, the
bind may not read what was asked); 2 bad usage or configuration, wrong credentials included
(a bind refused by the providers); 3 the directory is unreachable (no provider answered).

Shell completion: argcomplete (``register-python-argcomplete ndsclust``); the marker on
the first line lets its global hook find this module.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

import argcomplete

from ndsclust.cli import (
    app_cmd,
    common,
    doctor_cmd,
    events_cmd,
    fence_cmd,
    lab_cmd,
    pause_cmd,
    pki_cmd,
    report_cmd,
    request_cmd,
    schema_cmd,
    sentinel_cmd,
    servers_cmd,
    simulate_cmd,
    status_cmd,
    web_cmd,
)
from ndsclust.errors import BindRefused, ConfigError, NdsclustError, ProviderUnreachable

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# Each command module offers register(subparsers); its parsers set `handler`.
MODULES = [
    status_cmd,
    servers_cmd,
    app_cmd,
    request_cmd,
    events_cmd,
    doctor_cmd,
    fence_cmd,
    schema_cmd,
    pki_cmd,
    sentinel_cmd,
    lab_cmd,
    web_cmd,
    pause_cmd,
    simulate_cmd,
    report_cmd,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ndsclust",
        description="Keep applications running when a server dies: status and control of an "
        "ndsclust cluster whose state lives in an OpenLDAP directory.",
    )
    common.add_global_options(parser)
    parser.add_argument("--version", action="version", version=f"ndsclust {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in MODULES:
        module.register(sub)
    return parser


def version() -> str:
    try:
        return metadata.version("ndsclust")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argcomplete.autocomplete(parser)  # answers and exits only when the shell asks
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as e:
        print(f"ndsclust: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BindRefused as e:
        print(f"ndsclust: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ProviderUnreachable as e:
        print(f"ndsclust: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except NdsclustError as e:
        print(f"ndsclust: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130

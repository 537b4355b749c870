"""The ``ndsclust`` command: one subcommand per verb (docs/style.md section 9).

Exit codes: 0 ok, 1 the operation failed (or ``doctor`` found problems), 2 bad usage or
configuration, 3 no provider reachable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from ndsclust.cli import (
    app_cmd,
    common,
    doctor_cmd,
    events_cmd,
    fence_cmd,
    lab_cmd,
    pki_cmd,
    request_cmd,
    schema_cmd,
    sentinel_cmd,
    servers_cmd,
    status_cmd,
    web_cmd,
)
from ndsclust.errors import ConfigError, NdsclustError, ProviderUnreachable

Handler = Callable[[argparse.Namespace], int]

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
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ndsclust",
        description="Keep applications running when a server dies: status and control of an "
        "ndsclust cluster whose state lives in an OpenLDAP directory.",
    )
    common.add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
        return 2
    except ProviderUnreachable as e:
        print(f"ndsclust: {e}", file=sys.stderr)
        return 3
    except NdsclustError as e:
        print(f"ndsclust: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

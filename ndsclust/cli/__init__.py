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
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NoReturn

from ndsclust.cli import common
from ndsclust.errors import BindRefused, ConfigError, NdsclustError, ProviderUnreachable

Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# Each command module offers register(subparsers); its parsers set `handler`. They are
# imported when the parser is built, in this order (the order of `ndsclust --help`).
MODULES = (
    "status_cmd",
    "servers_cmd",
    "app_cmd",
    "request_cmd",
    "events_cmd",
    "doctor_cmd",
    "fence_cmd",
    "schema_cmd",
    "pki_cmd",
    "sentinel_cmd",
    "lab_cmd",
    "web_cmd",
    "pause_cmd",
    "simulate_cmd",
    "report_cmd",
)
# Commands parsed with their own module alone: `ndsclust sentinel run` then loads none of
# the other commands' libraries (rich, cryptography, the lab, the web console, the
# simulator), about 13 MB of resident memory (docs/platform.md fact 36).
LEAN = {"sentinel": "sentinel_cmd"}


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"ndsclust.cli.{name}")


class _VersionAction(argparse.Action):
    """--version: reads the installed version only when asked (importlib.metadata is 1 MB)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit", **kw)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(f"ndsclust {version()}")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command`` one of ``LEAN``, of that one only."""
    parser = argparse.ArgumentParser(
        prog="ndsclust",
        description="Keep applications running when a server dies: status and control of an "
        "ndsclust cluster whose state lives in an OpenLDAP directory.",
    )
    common.add_global_options(parser)
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in (LEAN[command],) if command in LEAN else MODULES:
        command_module(name).register(sub)
    return parser


class _Peek(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def named_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names after the global options; None when it names none, they
    are wrong (the whole parser then says what is wrong) or help is asked for (the whole
    parser lists every command)."""
    peek = _Peek(add_help=False)
    common.add_global_options(peek)
    peek.add_argument("-h", "--help", action="store_true")
    peek.add_argument("command", nargs="?")
    try:
        known, _ = peek.parse_known_args(argv)
    except ValueError:
        return None
    named: str | None = None if known.help else known.command
    return named


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ndsclust")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answer and exit
        import argcomplete

        argcomplete.autocomplete(build_parser())
    args = build_parser(named_command(sys.argv[1:] if argv is None else argv)).parse_args(argv)
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

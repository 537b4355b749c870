"""``ndsclust sentinel run``: the per-server daemon."""

from __future__ import annotations

import argparse
from typing import Any

from ndsclust.config import DEFAULT_PATH
from ndsclust.sentinel import daemon


def register(sub: Any) -> None:
    p = sub.add_parser("sentinel", help="run the per-server sentinel daemon")
    s = p.add_subparsers(dest="sentinel_command", metavar="ACTION")
    s.required = True
    run = s.add_parser(
        "run",
        help="run the sentinel (foreground for systemd, or --daemon)",
        description="Run this server's sentinel. A bad configuration exits with status 2 and "
        "names every wrong key. SIGTERM unloads this server's programs, hands them "
        "to their backups and exits; SIGHUP reloads the configuration.",
    )
    run.add_argument(
        "--config",
        dest="sentinel_config",
        default=None,
        metavar="FILE",
        help=f"sentinel YAML configuration (default: {DEFAULT_PATH})",
    )
    run.add_argument("--daemon", action="store_true", help="detach (python-daemon)")
    run.add_argument("--pidfile", help="with --daemon: write the pid here")
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    path = args.sentinel_config or args.config or DEFAULT_PATH
    return daemon.run(path, daemonize=args.daemon, pidfile=args.pidfile)

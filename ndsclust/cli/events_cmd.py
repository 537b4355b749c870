"""``ndsclust events [--follow]``: the audit trail under ou=events.

Every failover, failback, refusal and operator action is an entry there (docs/design.md
section 2). ``--follow`` prints the newest ones, then each new one as the RFC 4533 watch
delivers it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from ndsclust.cli import common
from ndsclust.ldapstore.follow import Follower
from ndsclust.ldapstore.store import Store
from ndsclust.model import Event, check_tag

COLUMNS = ("time", "kind", "server", "tag", "text")
DEFAULT_LIMIT = 50


def register(sub: Any) -> None:
    p = sub.add_parser(
        "events",
        help="the audit trail: what sentinels and operators did",
        description="Print the newest events of the audit trail (ou=events), oldest first. "
        "--follow keeps printing new ones as they happen, until Ctrl-C.",
    )
    p.add_argument("--tag", type=_tag, help="only events of this application")
    p.add_argument(
        "--limit",
        type=common.positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help="print at most the N newest (default %(default)s)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="JSON (stable keys): a list; with --follow one event per line",
    )
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new events as the directory receives them",
    )
    common.add_follow_limits(p, "--follow", "new events")
    p.set_defaults(handler=cmd_events)


def _tag(value: str) -> str:
    try:
        return check_tag(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def event_row(e: Event) -> dict[str, Any]:
    return {
        "time": common.event_time(e),
        "kind": e.kind,
        "server": e.server,
        "tag": e.tag,
        "text": e.text,
    }


def _print_lines(events: Sequence[Event], json_out: bool) -> None:
    for e in events:
        if json_out:
            common.print_json_line(common.event_json(e))
        else:
            print("\t".join(common.cell(v) for v in event_row(e).values()), flush=True)


def cmd_events(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        if args.follow:
            return _follow(args, st)
        events = st.events(tag=args.tag, limit=args.limit)
    finally:
        st.close()
    if args.json:
        common.print_json([common.event_json(e) for e in events])
    else:
        common.print_rows("events", COLUMNS, [event_row(e) for e in events])
    return 0


def _follow(args: argparse.Namespace, st: Store) -> int:
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        with Follower(st, cluster=False, events=True, event_tag=args.tag) as f:
            f.wait_ready(args.connect_timeout)
            if not args.json:
                print("\t".join(COLUMNS))
            _print_lines(f.event_list()[-args.limit :], args.json)
            done = 0
            while not (args.count and done >= args.count):
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    break
                f.wait_change(left)
                fresh = [n.event for n in f.new_events[done:]]
                fresh = fresh[: args.count - done] if args.count else fresh
                _print_lines(sorted(fresh, key=lambda e: (e.time, e.id)), args.json)
                done += len(fresh)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how an operator stops following
    return 0

"""``ndsclust status [--watch]``: what runs where, and why, at a glance.

Servers with their state and directory pulse (claim 44: a pulse that stops changing means
the sentinel went silent), applications with host, primary, backups, state and the last
event of the audit trail. ``--watch`` follows the RFC 4533 watch and redraws on every
change; it never polls the directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ndsclust.cli import common, liveness_view
from ndsclust.cli.app_fields import stack_text
from ndsclust.ldapstore.follow import Follower
from ndsclust.ldapstore.store import Snapshot, Store
from ndsclust.model import Event, Pulse, ServerName, Tag

DEFAULT_STALE = 5.0
SERVER_COLUMNS = ("server", "state", "seen", "pulse_age", "hosting", "reason")
APP_COLUMNS = (
    "tag",
    "type",
    "host",
    "primary",
    "backups",
    "state",
    "request",
    "last_event",
    "stack",  # stacks: last, so scripts reading the columns before it keep working
)
INVALID_COLUMNS = ("dn", "attribute", "problem")
# How often a live view on a terminal redraws pulse ages when nothing changes.
REDRAW_INTERVAL = 1.0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="servers and applications: what runs where",
        description="Show every server (state, directory pulse) and every application "
        "(host, primary, backups, state, last event). A table on a terminal, "
        "tab-separated text when piped, JSON with --json. --watch keeps the view "
        "current from the directory's change stream until Ctrl-C.",
    )
    p.add_argument("--json", action="store_true", help="print JSON (stable keys) for scripts")
    p.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="redraw on every change until Ctrl-C; piped, print one view (one JSON "
        "line with --json) per change",
    )
    common.add_follow_limits(p, "--watch", "views")
    add_stale_option(p)
    p.set_defaults(handler=cmd_status)


def add_stale_option(p: Any) -> None:
    p.add_argument(
        "--stale",
        type=common.positive_float,
        default=DEFAULT_STALE,
        metavar="SECONDS",
        help="a pulse older than this counts as silent (default %(default)g)",
    )


# -- pure: what the view shows -------------------------------------------------------------


def last_events(events: Sequence[Event]) -> dict[Tag, Event]:
    """The newest event of each application (events in any order)."""
    out: dict[Tag, Event] = {}
    for e in sorted(events, key=lambda e: (e.time, e.id)):
        if e.tag:
            out[e.tag] = e
    return out


def pulse_json(p: Pulse | None, now: float, stale: float) -> tuple[dict[str, Any] | None, bool]:
    """The pulse as JSON and whether it is fresh (written less than ``stale`` s before now)."""
    if p is None:
        return None, False
    t = common.parse_time(p.stamp)
    age = None if t is None else round(now - t, 3)
    fresh = age is not None and age <= stale
    return {
        "counter": p.counter,
        "time": common.iso_time(t) if t is not None else p.stamp,
        "age": age,
    }, fresh


def status_data(
    snap: Snapshot,
    pulses: Mapping[ServerName, Pulse],
    events: Sequence[Event],
    now: float,
    stale: float = DEFAULT_STALE,
) -> dict[str, Any]:
    """Everything ``status`` shows, with stable keys (the ``--json`` document)."""
    latest = last_events(events)
    judged = liveness_view.judgements(snap.servers, pulses, now, stale)
    servers = []
    for name in sorted(snap.servers):
        s = snap.servers[name]
        pulse, fresh = pulse_json(pulses.get(name), now, stale)
        servers.append(
            {
                "name": name,
                "entry_state": s.state.value,
                "addresses": list(s.addresses),
                "resources": sorted(s.resources),
                "hosting": sorted(a.tag for a in snap.apps.values() if a.host == name),
                "pulse": pulse,
                "pulse_fresh": fresh,
                # state, liveness, reason, seen (the channels its peers hear it on), heard_by
                **liveness_view.state_json(judged[name], fresh),
            }
        )
    apps = []
    for tag in sorted(snap.apps):
        a = snap.apps[tag]
        last = latest.get(tag)
        apps.append({**common.app_json(a), "last_event": common.event_json(last) if last else None})
    return {
        "servers": servers,
        "applications": apps,
        "invalid": [common.invalid_json(e) for e in snap.invalid],
        "pause": pause_json(snap, now),
    }


def pause_json(snap: Snapshot, now: float) -> dict[str, Any] | None:
    """The cluster-wide pause while it holds (docs/operating.md, "Pause"), else None."""
    p = snap.pause
    if p is None or not p.active(now):
        return None
    return {"until": p.until, "reason": p.reason, "text": p.describe(now)}


def _event_cell(e: Mapping[str, Any] | None, now: float) -> str:
    if e is None:
        return "-"
    t = common.parse_iso(str(e["time"]))
    when = f" ({common.age_text(now - t)} ago)" if t is not None else ""
    return f"{e['kind']}{when}"


def server_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in data["servers"]:
        pulse = s["pulse"]
        if pulse is None:
            age = "none"
        elif pulse["age"] is None:
            age = "unreadable"
        else:
            age = common.age_text(pulse["age"]) + ("" if s["pulse_fresh"] else " (silent)")
        rows.append(
            {
                "server": s["name"],
                "state": s["state"],
                "seen": s["seen"],
                "pulse_age": age,
                "hosting": s["hosting"],
                "reason": s["reason"],
            }
        )
    return rows


def app_rows(data: Mapping[str, Any], now: float) -> list[dict[str, Any]]:
    return [
        {
            **{k: a[k] for k in APP_COLUMNS if k not in ("last_event", "stack")},
            "state": state_cell(a),
            "stack": stack_text(a),
            "last_event": _event_cell(a["last_event"], now),
        }
        for a in data["applications"]
    ]


def state_cell(a: Mapping[str, Any]) -> str:
    """The state, and for the one hold whose state cannot say it (a migrate's pin, kept as
    ``running(migrate)``), how to release it (README, "Where an application runs, and
    why"). Every other hold's state carries its own reason."""
    state = str(a["state"])
    if state == "running(migrate)" and a["host"] != a["primary"]:
        return f"{state}: stays; back with ndsclust failback {a['tag']}"
    return state


def change_key(data: Mapping[str, Any]) -> str:
    """What makes a new view worth printing when piped: everything except the pulse
    counters and ages, which move with every pulse; freshness flips do count."""
    servers = [{k: v for k, v in s.items() if k != "pulse"} for s in data["servers"]]
    return json.dumps({**data, "servers": servers}, sort_keys=True)


# -- output --------------------------------------------------------------------------------


def _print_text(data: Mapping[str, Any], now: float) -> None:
    if data.get("pause"):
        print(data["pause"]["text"])
    common.print_rows("servers", SERVER_COLUMNS, server_rows(data))
    print()
    common.print_rows("applications", APP_COLUMNS, app_rows(data, now))
    if data["invalid"]:
        print()
        common.print_rows(
            "invalid entries (ignored by the sentinels)", INVALID_COLUMNS, data["invalid"]
        )


def _renderable(data: Mapping[str, Any], now: float, base: str) -> Any:
    from rich.console import Group
    from rich.text import Text

    paused = [Text(data["pause"]["text"], style="bold yellow")] if data.get("pause") else []
    parts: list[Any] = [
        *paused,
        common.rich_table("servers", SERVER_COLUMNS, server_rows(data)),
        common.rich_table("applications", APP_COLUMNS, app_rows(data, now)),
    ]
    if data["invalid"]:
        parts.append(
            common.rich_table(
                "invalid entries (ignored by the sentinels)", INVALID_COLUMNS, data["invalid"]
            )
        )
    parts.append(Text(f"{base} at {time.strftime('%H:%M:%S')}; Ctrl-C to stop", style="dim"))
    return Group(*parts)


def cmd_status(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        if args.watch:
            return _watch(args, st)
        snap = st.snapshot()
        data = status_data(snap, st.pulses(), st.events(), time.time(), args.stale)
        if not snap.servers and not snap.apps:
            common.check_readable(args, st)
    finally:
        st.close()
    if args.json:
        common.print_json(data)
    else:
        if not data["servers"] and not data["applications"]:
            print(
                f"ndsclust: no servers and no applications under {st.base}; add servers "
                "with 'ndsclust servers add NAME --address IP:PORT'",
                file=sys.stderr,
            )
        _print_text(data, time.time())
    return 0


def _watch(args: argparse.Namespace, st: Store) -> int:
    deadline = time.monotonic() + args.timeout if args.timeout else None
    shown = 0
    last_key = ""

    def left() -> float:
        return (
            REDRAW_INTERVAL
            if deadline is None
            else min(REDRAW_INTERVAL, deadline - time.monotonic())
        )

    try:
        with Follower(st, pulses=True) as f:
            f.wait_ready(args.connect_timeout)
            if sys.stdout.isatty() and not args.json:
                from rich.live import Live

                now = time.time()
                data = status_data(f.snapshot(), f.pulse_map(), f.event_list(), now, args.stale)
                with Live(_renderable(data, now, st.base), auto_refresh=False) as live:
                    while True:
                        key = change_key(data)
                        if key != last_key:
                            shown, last_key = shown + 1, key
                        live.update(_renderable(data, now, st.base), refresh=True)
                        if (args.count and shown >= args.count) or left() <= 0:
                            return 0
                        f.wait_change(left())
                        now = time.time()
                        data = status_data(
                            f.snapshot(), f.pulse_map(), f.event_list(), now, args.stale
                        )
            while True:
                now = time.time()
                data = status_data(f.snapshot(), f.pulse_map(), f.event_list(), now, args.stale)
                key = change_key(data)
                if key != last_key:
                    shown, last_key = shown + 1, key
                    if args.json:
                        common.print_json_line(data)
                    else:
                        print(f"# {common.iso_time(now)}")
                        _print_text(data, now)
                        print(flush=True)
                if (args.count and shown >= args.count) or left() <= 0:
                    return 0
                f.wait_change(left())
    except KeyboardInterrupt:
        return 0

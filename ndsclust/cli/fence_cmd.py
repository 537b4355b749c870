"""``ndsclust fence SERVER``: power a server off through its fence devices, by hand;
``ndsclust fence --confirm-off SERVER``: swear it is off (``stonith_admin --confirm``);
``ndsclust fence --list``: every server's fence record.

A manual fence runs the levels of the ``fencing`` section of the sentinel configuration
(``--config``) here, takes the same lock on the server's fence record as a sentinel does
and writes its outcome there. Confirming off writes ``confirmed`` without running an
agent: takeovers from that server, waiting for its fence, then start. Both ask first
(type the server's name; ``--yes`` for scripts) and are audited (``fence`` or
``fence_failed`` events). docs/operating.md, "Fencing other servers".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ndsclust.cli import common
from ndsclust.doctor.fencing import check_fencing
from ndsclust.doctor.findings import Finding
from ndsclust.errors import ConfigError, SwapConflict
from ndsclust.fencing import agent, plan
from ndsclust.fencing.config import Device
from ndsclust.fencing.fencer import attempt
from ndsclust.fencing.record import FenceState, Phase
from ndsclust.ldapstore.fence_records import FenceRecord
from ndsclust.model import ServerName, check_server_name

COLUMNS = ("server", "phase", "by", "at", "attempts", "text")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fence",
        help="power a server off through its fence devices, or confirm it is off",
        description="Fence SERVER by hand through the fence devices of the sentinel "
        "configuration's fencing section, level by level until one reports success; with "
        "--confirm-off, record that you made sure it is off (no agent is run). Takeovers "
        "from a server waiting for its fence start once either is confirmed.",
    )
    p.add_argument("server", nargs="?", help="the server to fence")
    p.add_argument(
        "--confirm-off",
        action="store_true",
        help="do not run an agent: swear the server is off (powered off, unplugged)",
    )
    p.add_argument("--list", action="store_true", help="every server's fence record")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.add_argument("--json", action="store_true", help="with --list: print JSON")
    p.set_defaults(handler=run)


def judge(found: FenceRecord, now: float, *, confirm_off: bool, longest: float) -> str | None:
    """Why this fence must not go ahead now (None: it may). A lock younger than every
    level's timeout (``longest``) plus ``plan.LOCK_SLACK`` is left to its holder; an
    operator's word (--confirm-off) overrides it."""
    st = found.state
    if confirm_off or st is None or st.phase is not Phase.FENCING:
        return None
    if now - st.at > longest + plan.LOCK_SLACK:
        return None
    return f"{st.by} is fencing it now (since {common.iso_time(st.at)}); try again later"


def _ask(args: argparse.Namespace, question: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question} -- not a terminal: give --yes to go ahead", file=sys.stderr)
        return False
    answer = input(f"{question}\nType the server's name to go ahead: ").strip()
    return bool(answer) and answer == args.server


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    if not args.server:
        raise ConfigError("fence", ["name the SERVER to fence, or give --list"])
    try:
        server = check_server_name(args.server)
    except ValueError as e:
        raise ConfigError("fence", [f"SERVER: {e}"]) from None
    devices: tuple[Device, ...] = ()
    if not args.confirm_off:
        cfg = common.load_config(args)
        if cfg is None or cfg.fencing is None or not cfg.fencing.levels(server):
            raise ConfigError(
                "fence",
                [
                    f"no fence device for {server} in the fencing section of the sentinel "
                    "configuration (--config); if you made sure it is off: --confirm-off"
                ],
            )
        devices = cfg.fencing.levels(server)
    st = common.store(args)
    try:
        found = st.fence_record(server)
        why = judge(
            found,
            time.time(),
            confirm_off=args.confirm_off,
            longest=sum(d.timeout for d in devices),
        )
        if why is not None:
            print(f"ndsclust: not fencing {server}: {why}", file=sys.stderr)
            return 1
        by = f"operator:{common.operator()}"
        if args.confirm_off:
            if not _ask(args, f"Confirm that {server} is OFF: nothing of it runs any more."):
                return 1
            base = found.state or FenceState(Phase.OWED, by, time.time())
            new = base.moved(Phase.CONFIRMED, by, time.time(), via="confirm-off")
            text = f"{server} confirmed off by {by} (no agent run)"
            st.swap_fence_record(server, found, new, text)
            common.audit(st, "fence", server=server, text=text)
            print(text)
            return 0
        levels = ", ".join(d.describe() for d in devices)
        if not _ask(args, f"Power {server} off through {len(devices)} level(s): {levels}"):
            return 1
        try:
            done = attempt(st, server, found, by, devices)
        except SwapConflict:
            done = None
        if done is None:
            print(f"ndsclust: the fence record of {server} changed: try again", file=sys.stderr)
            return 1
        common.audit(
            st, "fence" if done.confirmed else "fence_failed", server=server, text=done.text
        )
        print(done.text)
        return 0 if done.confirmed else 1
    finally:
        st.close()


def _list(args: argparse.Namespace) -> int:
    st = common.store(args)
    try:
        found = st.fence_records()
    finally:
        st.close()
    rows = []
    for name, f in sorted(found.items()):
        s = f.state
        rows.append(
            {
                "server": name,
                "phase": s.phase.value if s else "-",
                "by": s.by if s else "-",
                "at": common.iso_time(s.at) if s else "-",
                "attempts": s.attempts if s else 0,
                "text": f.text,
            }
        )
    if args.json:
        common.print_json(rows)
    else:
        common.print_rows("fence records", COLUMNS, rows)
    return 0


def doctor_findings(args: argparse.Namespace) -> list[Finding]:
    """What ``doctor`` reports of fencing: every configured device asked ``monitor``, every
    fence record read (``ndsclust.doctor.fencing``)."""
    cfg = common.load_config(args)
    fencing = cfg.fencing if cfg is not None else None
    monitors: dict[tuple[ServerName, int], agent.Result] = {}
    modes: dict[str, int | None] = {}
    for server, levels in (fencing.servers if fencing else {}).items():
        for i, d in enumerate(levels):
            monitors[(server, i + 1)] = agent.run(d.agent, "monitor", d.stdin_options(), d.timeout)
            for path in d.secret_files:
                try:
                    modes[path] = os.stat(path).st_mode & 0o777
                except OSError:
                    modes[path] = None
    st = common.store(args)
    try:
        records = {name: f.state for name, f in st.fence_records().items()}
        servers, _ = st.servers()
    finally:
        st.close()
    return check_fencing(
        fencing, monitors, records, servers, cfg.server if cfg else None, secret_modes=modes
    )

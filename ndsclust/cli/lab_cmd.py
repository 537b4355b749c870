"""``ndsclust lab up|down|demo``: a complete cluster on this machine, to learn and to show.

``lab up`` starts real slapd providers in multi-provider replication, one sentinel per
server (each serving its HTTP face) and sample programs, and the web console, and leaves
them running (state in ``--dir``, ``lab.json`` with a key ``http`` per server and
``console``); ``lab down``
removes everything ``lab up`` started. ``lab demo`` runs the scripted story on a fresh lab
of its own and always removes it at the end: status, kill the primary server, the failover
live, bring the server back, the failback live, a summary. Its last line is
``demo: failover_ms=<n> failback_ms=<n> double_runs=<n>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ndsclust.cli import common
from ndsclust.cli.status_cmd import status_data
from ndsclust.errors import NdsclustError
from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import DirectoryCluster
from ndsclust.lab.provider import LabError, descendants
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.follow import Follower
from ndsclust.ldapstore.store import Store
from ndsclust.ledger import double_runs, lives
from ndsclust.model import ServerName, Tag
from ndsclust.web.lab import start_console

DEFAULT_DIR = "/var/tmp/ndsclust-lab"
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


def register(sub: Any) -> None:
    p = sub.add_parser("lab", help="a complete local cluster on this machine (learning, demos)")
    s = p.add_subparsers(dest="lab_command", metavar="ACTION")
    s.required = True
    up = s.add_parser("up", help="start a lab cluster and leave it running")
    up.add_argument("--servers", type=common.positive_int, default=3, help="servers (1-8)")
    up.add_argument("--apps", type=int, default=2, help="sample applications to register")
    up.add_argument("--dir", default=DEFAULT_DIR, help=f"where the lab lives ({DEFAULT_DIR})")
    up.set_defaults(handler=cmd_up)
    down = s.add_parser("down", help="stop and remove everything 'lab up' started")
    down.add_argument("--dir", default=DEFAULT_DIR)
    down.set_defaults(handler=cmd_down)
    demo = s.add_parser("demo", help="scripted failover and failback on a fresh lab")
    demo.set_defaults(handler=cmd_demo)


# -- up / down ------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    base = Path(args.dir)
    if (base / "lab.json").exists():
        print(
            f"ndsclust: a lab already lives in {base}; 'ndsclust lab down --dir {base}' first",
            file=sys.stderr,
        )
        return 1
    if base.exists():
        shutil.rmtree(base)
    lab = LabCluster(args.servers, base_dir=base, die_with_parent=False, http=True)
    try:
        took = lab.start()
        names = lab.names
        for i in range(args.apps):
            primary = names[i % len(names)]
            backups = [n for n in names if n != primary]
            lab.add_app(f"app{i + 1}", primary, backups)
        console = start_console(lab, die_with_parent=False)
    except BaseException:
        lab.stop()
        raise
    d = lab.directory
    uris = " ".join(f"--uri {u}" for u in d.uris)
    print(f"lab: {args.servers} servers up in {took:.1f}s under {base}")
    for name, srv in lab.servers.items():
        print(
            f"  {name}: provider {d.providers[srv.index].url}, heartbeat {srv.address}, "
            f"log {srv.log_path}"
        )
    print("URLs (in lab.json too): the console, then each sentinel's /metrics, /health, /app/<tag>")
    print(f"  console {console.url}")
    for name, srv in lab.servers.items():
        print(f"  {name} http://{srv.http}/")
    print(f"""
Talk to it (the providers speak ldaps:// only, with certificates of the lab CA; each
sentinel binds as its own server entry, the admin below is the lab's):
  export NDSCLUST_URI="{" ".join(d.uris)}" NDSCLUST_SUFFIX={d.suffix} \\
         NDSCLUST_PULSE_SUFFIX={d.pulse_suffix} NDSCLUST_BIND_DN={d.admin_dn} \\
         NDSCLUST_PASSWORD_FILE={base / "admin.pw"} NDSCLUST_CA_FILE={d.ca_file}
  ndsclust status
  ndsclust migrate app1 beta
  ndsclust doctor

or with plain LDAP tools:
  LDAPTLS_CACERT={d.ca_file} ldapmodify -x -H {d.uris[0]} -D {d.admin_dn} -y {base / "admin.pw"} <<EOF
  dn: ndsclustTag=app1,ou=applications,{d.base}
  changetype: modify
  replace: ndsclustRequest
  ndsclustRequest: migrate:beta
  EOF

Stop it: ndsclust lab down --dir {base}   (global options for other tools: {uris} --ca-file {d.ca_file})""")
    return 0


def _is(pid: int, word: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return word.encode() in f.read()
    except OSError:
        return False


def cmd_down(args: argparse.Namespace) -> int:
    base = Path(args.dir)
    state_file = base / "lab.json"
    if not state_file.exists():
        print(f"ndsclust: no lab in {base}", file=sys.stderr)
        return 1
    state = json.loads(state_file.read_text())
    pid = state.get("console", {}).get("pid")
    if pid and _is(pid, "web"):
        os.kill(pid, signal.SIGTERM)
        print(f"lab: stopped the console (pid {pid})")
    for name, srv in state.get("servers", {}).items():
        pid = srv.get("pid")
        if pid and _is(pid, "sentinel"):
            for p in [pid, *descendants(pid)]:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            print(f"lab: stopped the sentinel of {name} (pid {pid}) and its programs")
    try:
        DirectoryCluster.attach(base).stop()
    except NdsclustError as e:
        print(f"ndsclust: {e}", file=sys.stderr)
    shutil.rmtree(base, ignore_errors=True)
    print(f"lab: removed {base}")
    return 0


# -- demo -----------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)


def _status(lab: LabCluster) -> None:
    from ndsclust.cli.status_cmd import _print_text

    st = lab.store()
    data = status_data(st.snapshot(), st.pulses(), st.events(), time.time(), 5.0)
    _print_text(data, time.time())
    sys.stdout.flush()


def _follow(
    lab: LabCluster, tag: str, server: str, event: str, timeout: float, act: Callable[[], float]
) -> float:
    """Run ``act`` (it returns the CLOCK_MONOTONIC time it acted at) once the watch is
    ready, then print each change of the application's host and state, and its events, as
    the watch delivers them, until it runs on ``server`` only, is shown running there and
    the ``event`` of the tag has been shown; return that time. Acting only after the refresh means no event can hide in it;
    the event is recorded after the state it explains, so it is waited for too.

    The watch follows beta's provider: alpha's is the one that dies and comes back."""
    d = lab.directory
    st = Store(
        Providers(d.uris[1:] + d.uris[:1], d.admin_credentials(), timeout=1.0),
        d.suffix,
        pulse_base=d.pulse_suffix,
    )
    last = ""
    seen: set[str] = set()
    try:
        with Follower(st, events=True) as f:
            f.wait_ready(10)
            since = act()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                app = f.snapshot().apps.get(Tag(tag))
                if app is not None:
                    line = f"host={app.host or '-'} state={app.state}"
                    if line != last:
                        _say(f"  +{(time.monotonic() - since) * 1000:6.0f} ms  {tag}: {line}")
                        last = line
                for e in f.fresh_events():
                    if e.tag == tag:
                        seen.add(e.kind)
                        _say(
                            f"  +{(time.monotonic() - since) * 1000:6.0f} ms  event {e.kind} "
                            f"by {e.server}: {e.text}"
                        )
                f.new_events.clear()
                if event in seen and _settled(lab, tag, server):
                    return since
                f.wait_change(0.05)
    finally:
        st.close()
    raise LabError(f"the demo did not see {tag} settle with a {event} event within {timeout:.0f}s")


def _settled(lab: LabCluster, tag: str, server: str) -> bool:
    return lab.running_on(tag) == {server} and lab.app(tag).state.state.value == "running"


def cmd_demo(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="ndsclust-demo-"))
    lab = LabCluster(3, base_dir=base, log_level="warning")
    try:
        _say("demo: starting 3 slapd providers (multi-provider replication) and 3 sentinels")
        took = lab.start()
        lab.add_app("web", A, [B, C], auto_recover=True)
        lab.wait_running("web", A, timeout=30)
        _say(f"demo: cluster up in {took:.1f}s; 'web' runs on alpha (backups: beta, gamma)\n")
        _status(lab)
        _say("\ndemo: killing server alpha (sentinel, lease guard, program and slapd, SIGKILL)")
        t0 = _follow(lab, "web", B, "failover", 30, lambda: lab.kill_server(A))
        started = lab.first_start_after("web", t0, server=B)
        failover_ms = (started - t0) * 1000 if started else float("nan")
        _say(f"demo: web runs on beta {failover_ms:.0f} ms after alpha died\n")
        _status(lab)
        _say("\ndemo: bringing alpha back (slapd, then its sentinel)")

        def restart() -> float:
            t = time.monotonic()
            lab.restart_server(A)
            return t

        t1 = _follow(lab, "web", A, "failback", 60, restart)
        back = lab.first_start_after("web", t1, server=A)
        stopped_on_b = _last_stop(lab, "web", B, t1)
        failback_ms = (back - stopped_on_b) * 1000 if back and stopped_on_b else float("nan")
        _say("")
        _status(lab)
        doubles = double_runs(lives(lab.ledger_lines()))
        _say(
            f"\nsummary: failover {failover_ms:.0f} ms (alpha killed -> web started on beta); "
            f"failback hand-over {failback_ms:.0f} ms (stopped on beta -> started on alpha); "
            f"double runs in the ledger: {len(doubles)}"
        )
        _say(
            f"demo: failover_ms={failover_ms:.0f} failback_ms={failback_ms:.0f} "
            f"double_runs={len(doubles)}"
        )
        return 0 if not doubles else 1
    finally:
        lab.stop()
        shutil.rmtree(base, ignore_errors=True)


def _last_stop(lab: LabCluster, tag: str, server: str, after: float) -> float | None:
    found = None
    for line in lab.ledger_lines():
        parts = line.split()
        if (
            len(parts) == 5
            and parts[0] == server
            and parts[2] == tag
            and parts[3] == "stop"
            and float(parts[4]) >= after
        ):
            found = float(parts[4])
    return found

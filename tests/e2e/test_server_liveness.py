"""Server states from the sentinels' liveness (docs/operating.md, "Server states"), with
servers as network namespaces, each with its own provider and sentinel (the deployed
shape): a killed server shows ``down``, one cut off on the lan but heard on the disk and
the directory shows ``isolated``, a cleanly stopped one ``down`` with no false maintenance
or failback events, and each change is one event whoever observed it.

The ``lab`` fixture checks every ledger for double runs and stops everything, namespaces
included, even when a test fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.model import Event, ServerName
from tools.faults.harness import Faults, hold

NsLab = Callable[..., tuple[LabCluster, Faults]]

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
SERVER_KINDS = ("server_down", "server_up", "server_isolated")


def cli(c: LabCluster, *argv: str) -> subprocess.CompletedProcess[str]:
    """``ndsclust ARGV`` as an operator, against every provider."""
    d = c.directory
    pw = d.base_dir / "operator.pw"
    if not pw.exists():
        pw.write_text(d.admin_password)
        pw.chmod(0o600)
    opts = [opt for uri in d.uris for opt in ("--uri", uri)]
    opts += ["-D", d.admin_dn, "-y", str(pw), "--suffix", d.suffix]
    opts += ["--pulse-suffix", d.pulse_suffix, "--ca-file", str(d.ca_file)]
    return subprocess.run(
        [sys.executable, "-m", "ndsclust", *opts, *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


def servers_json(c: LabCluster) -> dict[str, dict[str, Any]]:
    proc = cli(c, "servers", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return {s["name"]: s for s in json.loads(proc.stdout)}


def state_of(c: LabCluster, name: str) -> str:
    return str(servers_json(c)[name]["state"])


def wait_state(c: LabCluster, name: str, state: str, timeout: float = 30.0) -> None:
    wait_until(
        lambda: state_of(c, name) == state,
        timeout=timeout,
        what=f"servers list --json to show {name} {state}",
    )


def server_events(c: LabCluster, about: str, since: str = "") -> list[Event]:
    return [
        e
        for e in c.store().events()
        if e.kind in SERVER_KINDS and e.text.startswith(f"{about} ") and e.time > since
    ]


def all_up(c: LabCluster) -> None:
    wait_until(
        lambda: all(s["state"] == "up" for s in servers_json(c).values()),
        timeout=30,
        what="every server up",
    )


def newest_time(c: LabCluster) -> str:
    return max((e.time for e in c.store().events()), default="")


def one_event(c: LabCluster, kind: str, about: str, since: str) -> Event:
    """Exactly one ``kind`` event about ``about`` after ``since``, and it stays one."""
    wait_until(
        lambda: any(e.kind == kind for e in server_events(c, about, since)),
        timeout=30,
        what=f"a {kind} event about {about}",
    )
    hold(
        lambda: len([e for e in server_events(c, about, since) if e.kind == kind]) == 1,
        3.0,
        f"one {kind} event about {about}, not one per observer",
    )
    (event,) = [e for e in server_events(c, about, since) if e.kind == kind]
    return event


def test_killed_server_is_down_then_up(nslab: NsLab) -> None:
    """SIGKILL of a whole server (sentinel, programs, provider, links): ``servers list`` and
    ``status`` show it down with one ``server_down`` event; back, it is up again with one
    ``server_up``."""
    c, _ = nslab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    all_up(c)
    since = newest_time(c)
    c.kill_server(A)
    wait_state(c, A, "down")
    down = one_event(c, "server_down", A, since)
    assert down.server in (B, C)
    status = cli(c, "status", "--json")
    assert status.returncode == 0, status.stderr
    (alpha,) = [s for s in json.loads(status.stdout)["servers"] if s["name"] == A]
    assert alpha["state"] == "down" and alpha["seen"] == []
    c.wait_running("web", B)
    since = newest_time(c)
    c.restart_server(A)
    wait_state(c, A, "up", timeout=60)
    one_event(c, "server_up", A, since)


def test_lan_cut_server_is_isolated(nslab: NsLab) -> None:
    """Only the host's lan link is cut: its peers still hear it on the disk and through the
    directory, so nothing fails over, and it shows ``isolated`` (one ``server_isolated``
    event); ``servers --channels`` says which channels hear it; doctor blames the network,
    not the sentinel. With the link back it is up."""
    c, f = nslab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    all_up(c)
    since = newest_time(c)
    f.link_down(A, ["lan"])
    wait_state(c, A, "isolated")
    one_event(c, "server_isolated", A, since)
    proc = cli(c, "servers", "--channels", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {(r["observer"], r["peer"]): r for r in json.loads(proc.stdout)}
    for observer in (B, C):
        chans = rows[(observer, A)]["channels"]
        assert chans["lan"] == "silent" and chans["disk"] == "heard", chans
    assert rows[(B, C)]["channels"]["lan"] == "heard"
    assert state_of(c, B) == "up" and state_of(c, C) == "up"
    proc = cli(c, "doctor", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    findings = [x for x in json.loads(proc.stdout)["findings"] if x["subject"] == A]
    liveness = [x for x in findings if x["check"] == "liveness"]
    assert liveness and "network" in liveness[0]["fix"], findings
    assert not any("systemctl status" in x.get("fix", "") for x in findings), findings
    assert c.app("web").host == A
    since = newest_time(c)
    f.net.link_up(A, ["lan"])
    wait_state(c, A, "up")
    one_event(c, "server_up", A, since)


def test_graceful_stop_makes_no_false_events(nslab: NsLab) -> None:
    """SIGTERM of the primary's sentinel: it hands its applications on saying it is
    stopping (not "in maintenance"); while it stops and after, no failback starts and no
    ``awaiting_failback`` says it is back; it shows down with one ``server_down``. Started
    again, it is up and the auto-recover application comes back."""
    c, _ = nslab(3)
    c.add_app("web", A, [B, C])
    c.add_app("db", A, [B, C], auto_recover=False)
    c.wait_running("web", A)
    c.wait_running("db", A)
    all_up(c)
    since = newest_time(c)
    c.stop_sentinel(A)
    c.wait_running("web", B)
    c.wait_running("db", B)
    wait_state(c, A, "down")
    down = one_event(c, "server_down", A, since)
    assert "stopped" in down.text
    hold(lambda: c.running_on("web") == {B}, 3.0, "web staying on beta")
    events = [e for e in c.store().events() if e.time > since]
    texts = [f"{e.kind}: {e.text}" for e in events]
    false = ("awaiting_failback", "failback", "failback_held")
    assert not [e for e in events if e.kind in false], texts
    assert not [e for e in events if "in maintenance" in e.text], texts
    moves = [e for e in events if e.kind == "maintenance"]
    assert moves and all("alpha is stopping" in e.text for e in moves), texts
    since = newest_time(c)
    c.start_sentinel(A)
    wait_state(c, A, "up", timeout=60)
    c.wait_running("web", A, timeout=60)
    one_event(c, "server_up", A, since)
    wait_until(
        lambda: any(e.kind == "awaiting_failback" and e.tag == "db" for e in c.store().events()),
        timeout=30,
        what="db awaiting failback once alpha is back",
    )

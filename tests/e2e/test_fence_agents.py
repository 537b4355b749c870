"""Fencing other servers before a takeover (issue: fence the other server).

The lab's servers are network namespaces (``tools/netns.py``); every server's configuration
names, for each other server, fence devices run by ``tools/fence_netns``, a
test agent by the fence-agents convention that "powers off" a namespace: it SIGKILLs every
process in it and takes its links down, and logs each call. A host frozen as a whole
(every process in its namespace SIGSTOPped, its lease guard included, so nothing on it can
act) is the failure no lease and no self-fencing covers: only a fence makes a takeover safe.
Every ledger is checked for overlapping lives after each test, whatever it asserted.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ndsclust.lab.cluster import LabCluster, LabServer
from ndsclust.lab.directory import wait_until
from ndsclust.ledger import double_runs, lives
from ndsclust.model import AppState, ServerName
from tools.faults.harness import Faults
from tools.netns import NetLab

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
AGENT = Path(__file__).resolve().parents[2] / "tools" / "fence_netns"
Levels = Callable[[LabCluster, ServerName], list[dict[str, Any]]]
NsLab = Callable[..., tuple[LabCluster, Faults]]


def agent_log(lab: LabCluster) -> list[dict[str, str]]:
    """Every call of the test agent: its fields, ``at`` its monotonic time."""
    try:
        lines = (lab.base_dir / "fence-calls.log").read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        at, *rest = line.split()
        out.append({"at": at, **dict(w.split("=", 1) for w in rest)})
    return out


def device(lab: LabCluster, server: ServerName, *, fail: Path | None = None) -> dict[str, Any]:
    assert isinstance(lab.net, NetLab)
    options = {"netns": lab.net.namespace(server), "log": str(lab.base_dir / "fence-calls.log")}
    if fail is not None:
        options["fail_file"] = str(fail)
    return {"agent": str(AGENT), "timeout": 20, "options": options}


@pytest.fixture
def fenced(
    nslab: NsLab, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[LabCluster, Faults]]]:
    """``fenced(levels)``: ``nslab(3)`` whose sentinels carry a ``fencing`` section,
    ``levels(lab, server)`` giving each server's fence devices. Processes still frozen
    after the test are let go before the lab stops."""
    made: list[LabCluster] = []
    plain = LabCluster.sentinel_config

    def make(levels: Levels, **options: Any) -> tuple[LabCluster, Faults]:
        def with_fencing(lab: LabCluster, server: LabServer) -> dict[str, Any]:
            cfg = plain(lab, server)
            cfg["fencing"] = {
                "retry_min": 0.5,
                "retry_max": 2.0,
                "servers": {s: levels(lab, s) for s in lab.names if s != server.name},
            }
            return cfg

        monkeypatch.setattr(LabCluster, "sentinel_config", with_fencing)
        c, f = nslab(3, **options)
        made.append(c)
        return c, f

    yield make
    for c in made:
        thaw(c, A)


def namespace_pids(c: LabCluster, server: ServerName) -> list[int]:
    assert isinstance(c.net, NetLab)
    done = subprocess.run(
        ["ip", "netns", "pids", c.net.namespace(server)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def freeze(c: LabCluster, server: ServerName) -> float:
    """SIGSTOP every process in the server's namespace: sentinel, lease guard, programs,
    slapd. Returns the monotonic time it was done."""
    for pid in namespace_pids(c, server):
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
    return time.monotonic()


def thaw(c: LabCluster, server: ServerName) -> None:
    for pid in namespace_pids(c, server):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def offs(c: LabCluster, server: ServerName) -> list[dict[str, str]]:
    assert isinstance(c.net, NetLab)
    ns = c.net.namespace(server)
    return [x for x in agent_log(c) if x["action"] in ("off", "reboot") and x["netns"] == ns]


def events(c: LabCluster, kind: str) -> list[str]:
    return [e.text for e in c.store().events() if e.kind == kind]


def test_frozen_host_is_fenced_and_its_application_runs_on_the_backup(fenced: Any) -> None:
    """alpha hosts web (backups beta, gamma) and db (backups gamma, beta) and freezes as a
    whole: beta and gamma each take one over, one of them at a time fences alpha, and each
    program starts only after the agent reported alpha off."""
    c, _ = fenced(lambda lab, s: [device(lab, s)])
    c.add_app("web", A, [B, C])
    c.add_app("db", A, [C, B])
    c.wait_running("web", A)
    c.wait_running("db", A)
    frozen = freeze(c, A)
    c.wait_running("web", B, timeout=60)
    c.wait_running("db", C, timeout=60)
    calls = offs(c, A)
    assert calls and all(x["code"] == "0" for x in calls), calls
    # One fencer at a time: no two calls of the agent on alpha overlap.
    spans = sorted((float(x["began"]), float(x["at"])) for x in calls)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    for tag, server in (("web", B), ("db", C)):
        started = c.first_start_after(tag, frozen, server=server)
        # The program started only after the agent had powered alpha off ...
        assert started is not None and started > spans[0][1], (tag, started, spans)
    # ... and nothing of alpha is left: its frozen copies did not live to run again.
    assert namespace_pids(c, A) == []
    assert not double_runs(lives(c.ledger_lines()))
    wait_until(lambda: events(c, "fence"), timeout=20, what="a fence event")
    assert "fence_netns" in events(c, "fence")[0]


def test_failing_first_level_falls_through_to_the_second(fenced: Any, tmp_path: Path) -> None:
    broken = tmp_path / "pdu-down"
    broken.write_text("PDU 192.0.2.9 does not answer")
    c, _ = fenced(lambda lab, s: [device(lab, s, fail=broken), device(lab, s)])
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    freeze(c, A)
    c.wait_running("web", B, timeout=60)
    codes = [x["code"] for x in offs(c, A)]
    assert codes[:2] == ["1", "0"], codes
    wait_until(lambda: events(c, "fence"), timeout=20, what="a fence event")
    text = events(c, "fence")[0]
    assert "level 1 fence_netns action=off: exit 1: simulated failure: PDU 192.0.2.9" in text
    assert "level 2 fence_netns action=off: exit 0" in text


def test_every_level_failing_leaves_it_stopped_until_a_fence_succeeds(
    fenced: Any, tmp_path: Path
) -> None:
    broken = [tmp_path / "ipmi-down", tmp_path / "pdu-down"]
    for i, f in enumerate(broken):
        f.write_text(f"device {i + 1} unreachable")
    c, _ = fenced(lambda lab, s: [device(lab, s, fail=broken[0]), device(lab, s, fail=broken[1])])
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    frozen = freeze(c, A)

    def fence_failed_state() -> bool:
        state = c.app("web").state
        return state.state is AppState.FAILED and "fence_netns" in state.reason

    wait_until(fence_failed_state, timeout=60, what="web failed naming the fence agent")
    reason = c.app("web").state.reason
    assert "device 1 unreachable" in reason and "device 2 unreachable" in reason, reason
    assert c.app("web").host == B
    wait_until(lambda: events(c, "fence_failed"), timeout=20, what="a fence_failed event")
    assert "fencing alpha failed" in events(c, "fence_failed")[0]
    # Retried with a backoff, and nothing started meanwhile.
    wait_until(lambda: len(offs(c, A)) >= 4, timeout=30, what="a second attempt")
    assert c.first_start_after("web", frozen) is None
    broken[1].unlink()  # the second device answers again
    c.wait_running("web", B, timeout=60)
    assert namespace_pids(c, A) == []
    started = c.first_start_after("web", frozen, server=B)
    assert started is not None and started > float(offs(c, A)[-1]["at"])


def ndsclust(c: LabCluster, server: ServerName, *argv: str) -> subprocess.CompletedProcess[str]:
    """The command line, in the root namespace, with ``server``'s sentinel configuration
    (its fencing section, the providers), bound as the directory's admin (an operator)."""
    d = c.directory
    pw = d.base_dir / "operator.pw"
    pw.write_text(d.admin_password)
    pw.chmod(0o600)
    cfg = c.servers[server].config_path
    return subprocess.run(
        [sys.executable, "-m", "ndsclust", "--config", str(cfg), "-D", d.admin_dn, "-y", str(pw)]
        + list(argv),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_operators_confirm_a_server_off_or_fence_one_by_hand(fenced: Any, tmp_path: Path) -> None:
    """alpha's only device fails: web waits on beta. The operator powers alpha off himself
    and swears to it (--confirm-off): web starts. Then gamma is fenced by hand through its
    device. Both are audited."""
    broken = tmp_path / "ilo-down"
    broken.write_text("iLO of alpha unreachable")
    c, f = fenced(lambda lab, s: [device(lab, s, fail=broken if s == A else None)])
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    frozen = freeze(c, A)
    wait_until(lambda: c.app("web").state.state is AppState.FAILED, timeout=60, what="web failed")
    doctor = ndsclust(c, B, "doctor", "--json")
    assert doctor.returncode == 1, doctor.stderr  # a fence device fails: a problem
    found = {
        (f["subject"], f["level"])
        for f in json.loads(doctor.stdout)["findings"]
        if f["check"] == "fencing"
    }
    assert {("alpha level 1", "problem"), ("gamma level 1", "ok")} <= found, found
    refused = ndsclust(c, B, "fence", "--confirm-off", "alpha")
    assert refused.returncode == 1 and "not a terminal: give --yes" in refused.stderr
    assert c.first_start_after("web", frozen) is None
    f.server_down(A)  # the operator pulls alpha's power cords
    done = ndsclust(c, B, "fence", "--confirm-off", "alpha", "--yes")
    assert done.returncode == 0, done.stderr
    c.wait_running("web", B, timeout=60)
    assert "confirmed off by operator:" in done.stdout
    listed = ndsclust(c, B, "fence", "--list", "--json")
    records = {r["server"]: r for r in json.loads(listed.stdout)}
    assert records["alpha"]["phase"] == "confirmed"
    manual = ndsclust(c, B, "fence", "gamma", "--yes")
    assert manual.returncode == 0, manual.stderr
    assert "gamma fenced by fence_netns" in manual.stdout
    assert namespace_pids(c, C) == []
    texts = events(c, "fence")
    assert any("alpha confirmed off by operator:" in t for t in texts), (texts, done.stderr)
    assert any("gamma fenced by fence_netns" in t and "by=" in t for t in texts)

"""The lease guard's real-time priority, refused for real: a supervisor without
CAP_SYS_NICE (as under systemd's RestrictRealtime=yes, which answers EPERM too) logs one
line saying so and supervises all the same."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ndsclust.sentinel.guard import SCHED_POLICY

ROOT = Path(__file__).resolve().parents[2]

# Start a supervisor, run one program, print the log lines and the guard's policy.
OWNER = """\
import logging, os, sys, time
from ndsclust.model import ServerName, Tag
from ndsclust.sentinel.procs import ProcState
from ndsclust.sentinel.supervisor import Supervisor
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")
with Supervisor(ServerName("alpha"), lease_timeout=30.0) as sup:
    sup.start(Tag("web"), ["/bin/sleep", "1000"])
    deadline = time.monotonic() + 10
    while sup.table()[Tag("web")].state is not ProcState.RUNNING and time.monotonic() < deadline:
        sup.renew_leases()
        sup.poll()
        time.sleep(0.01)
    pid = sup.table()[Tag("web")].pid
    guard = int(open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[1])
    print("RUNNING", sup.table()[Tag("web")].state.name, "GUARD_POLICY", os.sched_getscheduler(guard))
"""


def test_refused_realtime_is_logged_and_the_guard_still_supervises() -> None:
    assert os.geteuid() == 0 and shutil.which("setpriv"), (
        "needs root and setpriv (util-linux) to take CAP_SYS_NICE away: run the suite as root"
    )
    done = subprocess.run(
        [
            "setpriv",
            "--bounding-set",
            "-sys_nice",
            "--inh-caps",
            "-sys_nice",
            sys.executable,
            "-c",
            OWNER,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    starts = [line for line in lines if "event=guard_start" in line]
    assert len(starts) == 1, lines
    assert starts[0].startswith("WARNING event=guard_start server=alpha guard_pid=")
    assert " scheduling=ordinary error=EPERM detail=" in starts[0]
    assert "RestrictRealtime=no" in starts[0]
    # The guard runs with the ordinary policy and its program runs.
    assert f"RUNNING RUNNING GUARD_POLICY {os.SCHED_OTHER}" in lines
    assert SCHED_POLICY != os.SCHED_OTHER  # what it would have had with the privilege

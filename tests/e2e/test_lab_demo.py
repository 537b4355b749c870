"""`make demo` runs `ndsclust lab demo`: it must end with the demo line, no double run, and
leave no process or temp dir behind."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile


def _processes(word: str) -> set[int]:
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if word.encode() in f.read():
                        found.add(int(pid))
            except OSError:
                pass
    return found


def test_lab_demo_shows_failover_and_failback_and_cleans_up() -> None:
    demo_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "ndsclust-demo-*")))
    out = subprocess.run(
        [sys.executable, "-m", "ndsclust", "lab", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"demo: failover_ms=(\d+) failback_ms=(\d+) double_runs=(\d+)", last)
    assert m, last
    assert m.group(3) == "0"
    assert "event failover by beta" in out.stdout and "event failback by beta" in out.stdout
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "ndsclust-demo-*"))) == demo_dirs
    # Every slapd, sentinel and program of the demo runs with the demo's directory on its
    # command line (slapd -F <dir>/..., sentinel --config <dir>/...): none may be left.
    assert not _processes("ndsclust-demo-")

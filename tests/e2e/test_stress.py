"""The machine load of tools/stress.py: it starts what it says and leaves nothing behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ndsclust.lab.cluster import alive
from tools.stress import Stress


def test_stress_starts_its_load_and_stops_all_of_it() -> None:
    lines: list[str] = []
    s = Stress(burners=2, servers=2, apps=1, out=lines.append)
    with s:
        assert s.lab is not None and s.pgid is not None
        base = s.lab.base_dir
        burners = [p.pid for p in s._procs]
        assert len(burners) == 2
        assert all(os.getpgid(pid) == s.pgid for pid in burners)
        assert s.lab.running_on("stress0") == {"alpha"}
        pids = s.pids()
        assert set(burners) <= set(pids) and len(pids) > len(burners)
        assert all(alive(pid) for pid in pids)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)], "stress left processes behind"
    assert not base.exists(), "stress left its cluster's directory behind"
    assert s.pids() == [] and lines[-1] == "stress: off"
    s.stop()  # idempotent


def test_a_failed_start_stops_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Stress(burners=1, servers=1, apps=1)
    dirs: list[Path] = []

    def fail(self: Stress) -> None:
        assert self.lab is not None
        dirs.append(self.lab.base_dir)
        raise OSError("no burner today")

    monkeypatch.setattr(Stress, "_start_burners", fail)
    with pytest.raises(OSError, match="no burner"):
        s.start()
    assert len(dirs) == 1  # the cluster had started when the burners failed
    assert not dirs[0].exists()
    assert s.lab is None and s.pgid is None and s.pids() == []

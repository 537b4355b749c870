"""The false-failover soak (tools/bench_soak.py), shortened: a quarter of a minute with the
lab's fast timings and one sentinel stalled for well under its lease. Nothing may move."""

from __future__ import annotations

from tools import bench_soak
from tools.timings import lab_defaults


def test_a_short_soak_with_a_stalled_sentinel_moves_nothing() -> None:
    timings = lab_defaults()
    pause = timings.effective.lease * 0.4
    lines: list[str] = []
    count = bench_soak.run(timings, 0.25, stress=False, pause_s=pause, out=lines.append)
    assert any(line.startswith("paused the sentinel of alpha") for line in lines), lines
    assert "resumed it" in lines
    assert count.false_failovers == 0, count.seen
    assert count.directory_errors == 0, count.seen

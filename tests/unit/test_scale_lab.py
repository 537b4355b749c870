"""What the scale benchmarks read (tools/scale_lab.py): the sentinels' event lines, /proc,
and the placement of the sample applications."""

import os
from pathlib import Path

from ndsclust.model import AppState, ServerName
from tools import scale_lab


def test_event_lines_are_read_with_their_time_and_quoted_values(tmp_path: Path) -> None:
    log = tmp_path / "sentinel.log"
    log.write_text(
        "2026-12-02 01:05:01,657 INFO event=sentinel_start server=alpha pid=12 channels=lan\n"
        "a line that is no event\n"
        "2026-12-02 01:06:21,736 WARNING event=program_exited tag=c00622 server=s15 pid=1 code=- reason=lease-expired\n"
        '2026-12-02 01:06:22,000 INFO event=registration tag=c1 server=s10 text="simultaneous failure: \\"x\\" here" n=2\n'
    )
    events = list(scale_lab.sentinel_events(log))
    assert [e.event for e in events] == ["sentinel_start", "program_exited", "registration"]
    assert events[1].level == "WARNING" and events[1].fields["reason"] == "lease-expired"
    assert events[2].fields["text"] == 'simultaneous failure: \\"x\\" here'
    assert events[2].fields["n"] == "2"
    assert abs(events[1].wall - events[0].wall - 80.079) < 1e-6
    later = list(scale_lab.sentinel_events(log, since=events[1].wall))
    assert [e.event for e in later] == ["program_exited", "registration"]
    assert list(scale_lab.sentinel_events(tmp_path / "missing.log")) == []


def test_proc_stat_reads_this_process() -> None:
    st = scale_lab.ProcStat.read(os.getpid())
    assert st is not None and st.cpu_s > 0 and st.rss_bytes > 1024 * 1024
    assert scale_lab.ProcStat.read(2**22 + 1) is None  # above the largest pid


def test_sample_apps_round_robin_with_the_next_servers_as_backups() -> None:
    names = scale_lab.server_names(10)
    assert names[:2] == ["alpha", "beta"] and names[8:] == ["s09", "s10"]
    apps = scale_lab.sample_apps(names[:3], 5, running=2)
    assert [a.primary for a in apps] == ["alpha", "beta", "gamma", "alpha", "beta"]
    assert apps[2].backups == (ServerName("alpha"), ServerName("beta"))
    assert [a.host for a in apps] == ["alpha", "beta", None, None, None]
    assert [a.state.state for a in apps] == [AppState.LOADING] * 2 + [AppState.STOPPED] * 3
    assert len({a.tag for a in scale_lab.sample_apps(names, 100, 0)}) == 100


def test_usage_takes_the_largest_window() -> None:
    u = scale_lab.Usage(rss_max=3, cpu_pcts=[0.5, 2.0, 1.0])
    assert u.cpu_pct_max == 2.0 and abs(u.cpu_pct_mean - 7 / 6) < 1e-9
    assert scale_lab.Usage().cpu_pct_max == 0.0

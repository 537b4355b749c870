"""Lab timings read from a sentinel configuration file (tools.timings)."""

from pathlib import Path

import pytest
import yaml

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import LabError
from ndsclust.lab.sentinel_config import LAB_TIMEOUTS
from tools.timings import lab_defaults, read_timings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "sentinel.example.yaml"


def test_the_example_file_gives_what_it_says() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    t = read_timings(EXAMPLE)
    assert t.failover == float(raw["timeouts"]["failover"])
    for ch in ("lan", "directory", "disk"):
        assert t.intervals[ch] == float(raw["channels"][ch]["interval"])
    w = raw["channels"]["witness"]
    assert t.witness == (float(w["interval"]), float(w["timeout"]))
    opts = t.lab_options()
    assert opts["intervals"] == t.intervals and opts["witness"] is True
    assert opts["timeouts"]["lease"] == float(raw["timeouts"]["lease"])
    assert t.line().startswith(f"timings: file={EXAMPLE} failover=")


def test_milliseconds_and_left_out_keys(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "channels": {"lan": {"interval": "200ms"}},
                "timeouts": {"failover": "2s", "fence": 1, "lease": 1},
            }
        )
    )
    t = read_timings(f)
    assert t.intervals == {"lan": 0.2} and t.witness is None
    assert t.timeouts == {"failover": 2.0, "fence": 1.0, "lease": 1.0}
    assert "witness" not in t.lab_options()


def test_timings_the_loader_refuses_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"timeouts": {"failover": 1, "fence": 4, "lease": 4}}))
    with pytest.raises(LabError, match=r"timeouts.failover"):
        read_timings(f)


def test_lab_defaults_match_a_lab_given_nothing() -> None:
    d = lab_defaults()
    assert d.lab_options() == {}
    assert d.effective.stop_grace == LAB_TIMEOUTS["stop_grace"]


def test_per_channel_intervals_reach_the_sentinel_config() -> None:
    lab = LabCluster(
        3, intervals={"lan": 0.2, "disk": 0.3}, witness_interval=0.4, witness_timeout=1.5
    )
    assert lab.channel_interval("lan") == 0.2 and lab.channel_interval("directory") is None
    assert lab.witness_interval == 0.4 and lab.witness_timeout == 1.5
    old = LabCluster(3, intervals=0.01)
    assert all(old.channel_interval(ch) == 0.01 for ch in ("lan", "directory", "disk"))
    with pytest.raises(LabError, match="unknown channel"):
        LabCluster(3, intervals={"witness": 0.1})

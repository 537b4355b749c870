"""The CI part of the randomized fault suite (``tools/faults/chaos.py``): a few trials of a
fixed seed on one namespace lab. ``chaos.py --trials 200`` is the full run.

These run with the lab's own fast timings (``--lab-timings``), not the deployed shape
``chaos.py`` uses by default (``deploy/sentinel.example.yaml``): its trials scale with the
failover timeout, and with the example file's they take ten times as long, which would
turn these eight trials from about a minute into many. The schedules are the same apart
from their time scale, the isolation of the write provider's server included (trial 5 of
seed ``ci`` isolates alpha, tests/unit/test_chaos_plan.py)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from ndsclust.lab.cluster import LabCluster
from tools.faults import chaos
from tools.faults.harness import lab_options

LabFactory = Callable[..., LabCluster]

CI_TRIALS = 8
CI_SEED = "ci"


def test_chaos_trials_keep_every_invariant(lab: LabFactory) -> None:
    c = lab(3, **lab_options())
    lines: list[str] = []
    totals = chaos.run(CI_TRIALS, CI_SEED, lab=c, out=lines.append)
    summary = totals.line(CI_SEED)
    print("\n".join(lines + [summary]))
    # A repair is no failure: a provider that lost an entry and got it back is the
    # anti-entropy doing its job (docs/design.md invariant 3).
    assert re.fullmatch(
        rf"chaos: trials={CI_TRIALS} double_runs=0 liveness_violations=0 "
        rf"diverged_entries=0 repaired=\d+ seed={CI_SEED}",
        summary,
    ), "\n".join(lines)


@pytest.mark.e2e
def test_replay_of_an_isolating_trial(capsys: pytest.CaptureFixture[str]) -> None:
    """``--replay`` plays an isolation trial again, on a lab of its own. Whether the trial
    keeps the invariants is the test above's business: this one checks that the replay
    injects the isolation and reports in the usual format."""
    names = ["alpha", "beta", "gamma"]
    i = next(
        i
        for i in range(40)
        if any(s.kind == "isolate" for s in chaos.plan(i, f"{CI_SEED}-{i}", names).steps)
    )
    code = chaos.main(["--replay", f"{CI_SEED}-{i}", "--lab-timings"])
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert lines[0].startswith("timings: file=lab-defaults ")
    assert any(line.startswith((f"trial={i} ", f"FAILED trial={i} ")) for line in lines), out
    assert "isolate alpha" in out, out
    assert not re.search(r"skipped \+[0-9.]+s isolate", out), "the isolation was not injected"
    last = re.fullmatch(
        r"chaos: trials=1 double_runs=(\d+) liveness_violations=(\d+) "
        rf"diverged_entries=(\d+) repaired=(\d+) seed={CI_SEED} stress=off "
        r"timings=lab-defaults",
        lines[-1],
    )
    assert last is not None, lines[-1]
    assert code == (0 if last.groups()[:3] == ("0", "0", "0") else 1)

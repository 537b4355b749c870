"""The CI part of the randomized fault suite (``tools/faults/chaos.py``): a few trials of a
fixed seed on one namespace lab. ``chaos.py --trials 200`` is the full run."""
from __future__ import annotations

from collections.abc import Callable

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
    assert summary == (f"chaos: trials={CI_TRIALS} double_runs=0 liveness_violations=0 "
                       f"diverged_entries=0 seed={CI_SEED}"), "\n".join(lines)

"""The chaos suite's schedules (tools/faults/chaos.py): deterministic, scaled with the
failover timeout, and isolating the write provider's server in about one trial in four."""

from tools.faults import chaos

NAMES = ["alpha", "beta", "gamma"]


def test_a_seed_gives_the_same_trial_again() -> None:
    assert chaos.plan(3, "ci-3", NAMES) == chaos.plan(3, "ci-3", NAMES)


def test_isolation_is_frequent_and_cuts_off_the_write_server() -> None:
    trials = [chaos.plan(i, f"ci-{i}", NAMES, writer="alpha") for i in range(80)]
    isolating = [t for t in trials if any(s.kind == "isolate" for s in t.steps)]
    assert 10 <= len(isolating) <= 30
    for t in isolating:
        assert [s.args for s in t.steps if s.kind == "isolate"] == [("alpha",)]
        assert len(t.steps) <= chaos.MAX_FAULTS
    # The CI run (tests/e2e/test_chaos.py) plays trials 0 to 7 of seed "ci": one isolates.
    assert any(s.kind == "isolate" for t in trials[:8] for s in t.steps)


def test_windows_scale_with_the_failover_timeout() -> None:
    lab = chaos.Scale.of(0.8)
    assert lab.window == (3.0, 6.0) and lab.budget >= 20.0
    slow = chaos.Scale.of(8.0)
    assert slow.window == (12.0, 24.0)
    assert slow.budget > 3 * 8.0 and slow.settle > lab.settle and slow.start > lab.start
    t = chaos.plan(0, "x-0", NAMES, slow.window)
    assert 12.0 <= t.window <= 24.0
    assert all(0.0 <= s.at <= t.window * 0.6 for s in t.steps)


def test_the_summary_line_keeps_its_prefix() -> None:
    totals = chaos.Totals(trials=2)
    assert totals.line("s") == (
        "chaos: trials=2 double_runs=0 liveness_violations=0 diverged_entries=0 repaired=0 seed=s"
    )
    assert totals.line("s", stress=True, timings="f.yaml").endswith(
        " seed=s stress=on timings=f.yaml"
    )

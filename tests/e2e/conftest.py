"""End-to-end fixtures: a real lab cluster (slapd providers + sentinel processes) per test."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from ndsclust.lab.cluster import LabCluster
from ndsclust.ledger import double_runs, lives
from tools.faults.harness import Faults, lab_options
from tools.netns import cleanup_stale

LabFactory = Callable[..., LabCluster]
NsLab = Callable[..., tuple[LabCluster, Faults]]


@pytest.fixture
def lab(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LabFactory]:
    """``lab(n=3, **options)`` starts a LabCluster; all are stopped after the test, and the
    ledger of each is checked for double runs (invariant 1) whatever the test asserted."""
    started: list[LabCluster] = []

    def make(n: int = 3, **options: Any) -> LabCluster:
        c = LabCluster(n, base_dir=tmp_path_factory.mktemp("lab"), **options)
        started.append(c)
        c.start()
        return c

    yield make
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    try:
        for c in started:
            if failed:
                for name in c.servers:
                    print(f"--- sentinel log of {name} ---\n{c.log_tail(name, 60)}")
            found = double_runs(lives(c.ledger_lines()))
            assert not found, f"double runs in the ledger: {found}"
    finally:
        for c in started:
            c.stop()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def nslab(lab: LabFactory) -> Iterator[NsLab]:
    """``nslab(n=3, **options)``: a lab whose servers are network namespaces, and its fault
    injector. Disk faults are undone before the ``lab`` fixture removes the lab's files."""
    cleanup_stale()  # leftovers of runs whose process was killed; live runs are kept
    made: list[Faults] = []

    def make(n: int = 3, **options: Any) -> tuple[LabCluster, Faults]:
        c = lab(n, **{**lab_options(), **options})
        f = Faults(c)
        made.append(f)
        return c, f

    yield make
    for f in made:
        f.release()

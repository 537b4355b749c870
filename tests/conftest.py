"""Shared fixtures: real slapd providers in multi-provider replication (never a mock).

``directory``      session-wide, 3 providers with the ndsclust schema
``slapd_pair``     session-wide, 2 providers with the ndsclust schema
``fresh_directory`` factory of private clusters for tests that break or stop them

Every cluster is stopped (processes killed, directories removed) in a ``finally``; its
slapd processes also die with the test process if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ndsclust.lab.directory import DirectoryCluster, wait_until

__all__ = ["wait_until"]

LAYERS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with the layer its directory names (``tests/integration``,
    ``tests/e2e``): the marker follows where a module lives, so a new module cannot be
    left unmarked, and ``-m "not e2e"`` selects what it says."""
    here = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(here).parts if item.path.is_relative_to(here) else ()
        if parts and parts[0] in LAYERS:
            item.add_marker(LAYERS[parts[0]])


def _started(
    tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: Any
) -> DirectoryCluster:
    cluster = DirectoryCluster(base_dir=tmp_path_factory.mktemp(name), **kwargs)
    cluster.start()  # stops and cleans up by itself when it fails
    return cluster


@pytest.fixture(scope="session")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryCluster]:
    cluster = _started(tmp_path_factory, "directory", n=3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slapd_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryCluster]:
    cluster = _started(tmp_path_factory, "slapd_pair", n=2)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fresh_directory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., DirectoryCluster]]:
    """``fresh_directory(n=3, **DirectoryCluster options)``: a started private cluster,
    stopped when the test ends."""
    clusters: list[DirectoryCluster] = []

    def make(**kwargs: Any) -> DirectoryCluster:
        cluster = _started(tmp_path_factory, "fresh", **kwargs)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        errors = []
        for cluster in clusters:
            try:
                cluster.stop()
            except Exception as e:  # stop every cluster before reporting any failure
                errors.append(e)
        if errors:
            raise errors[0]

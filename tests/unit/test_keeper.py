"""The keeper's fencing round: an alarm when a server loses the peers it heard, a plain
warning for the first server of a new cluster, which has heard nobody yet."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import pytest

from ndsclust.model import ServerName
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.detector import Detector
from ndsclust.sentinel.keeper import Fence, Keeper
from ndsclust.sentinel.recorder import Record

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


class Heard:
    def __init__(self) -> None:
        self.last: dict[ServerName, float] = {}

    def observe(self, now: float) -> Mapping[ServerName, float]:
        return dict(self.last)

    def acknowledged(self, now: float) -> Mapping[ServerName, float]:
        return dict(self.last)


class Programs:
    def __init__(self) -> None:
        self.stopped = 0

    def renew_leases(self) -> None:
        pass

    def stop_all(self, grace: float) -> None:
        self.stopped += 1


class Collect(list[Record]):
    def put(self, record: Record) -> None:
        self.append(record)


def keeper(lan: Heard, records: Collect, programs: Programs) -> Keeper:
    detector = Detector({"lan": 0.7}, A, 0.0, 2.0)
    return Keeper(
        A,
        fence=Fence(detector, {"lan": lan}, lan, None),
        leases=programs,
        records=records,
        clock=lambda: 0.0,
        interval=0.05,
        stall_limit=10.0,
        hang_limit=30.0,
        progress=lambda: 0.0,
        servers=lambda: [A, B, C],
        ask_rejoin=lambda why: None,
        stop=threading.Event(),
    )


def test_first_server_of_a_new_cluster_fences_without_an_alarm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records, programs = Collect(), Programs()
    k = keeper(Heard(), records, programs)
    with caplog.at_level(logging.INFO, logger="ndsclust.sentinel"):
        k.round(3.0, 0.05)
    assert k.fenced.is_set() and programs.stopped == 1  # it still claims nothing
    assert records == []
    (line,) = [r for r in caplog.records if "event=fenced" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert "none heard since this sentinel started" in line.getMessage()


def test_losing_the_peers_it_heard_is_an_alarm(caplog: pytest.LogCaptureFixture) -> None:
    lan, records, programs = Heard(), Collect(), Programs()
    k = keeper(lan, records, programs)
    lan.last = {B: 1.0, C: 1.0}
    k.round(1.1, 0.05)
    assert not k.fenced.is_set()
    with caplog.at_level(logging.INFO, logger="ndsclust.sentinel"):
        k.round(5.0, 0.05)
    assert k.fenced.is_set()
    assert [(r.kind, r.notify) for r in records] == [(EventKind.FENCED, True)]
    (line,) = [r for r in caplog.records if "event=fenced" in r.getMessage()]
    assert line.levelno == logging.ERROR

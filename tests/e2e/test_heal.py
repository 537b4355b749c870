"""Rejoin in the deployed shape: every server a network namespace with its provider beside
its sentinel, alpha beside the first provider of the list (the write provider), as
deploy/INSTALL.md lays them out. Healing a server that was cut off together with its
provider must not let it act on that provider's stale copy (two live copies), and cutting
the write provider's server off by dropped packets must cost its peers no socket timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ndsclust.lab.cluster import LabCluster
from ndsclust.ledger import double_runs, lives
from ndsclust.model import ServerName
from tools.faults.checker import check_directory
from tools.faults.harness import Faults, hold, live_copies, wait_log
from tools.timings import read_timings

NsLab = Callable[..., tuple[LabCluster, Faults]]
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
PARTITION_HOLD = 8.0
# What operators deploy: deploy/sentinel.example.yaml's heartbeat intervals and timeouts.
EXAMPLE = read_timings(Path(__file__).resolve().parents[2] / "deploy" / "sentinel.example.yaml")
TIMINGS: dict[str, Any] = EXAMPLE.lab_options()


@pytest.mark.parametrize("auto_recover", [False, True], ids=["approve", "auto"])
def test_isolated_write_provider_server_heals_without_a_second_copy(
    nslab: NsLab, auto_recover: bool
) -> None:
    """alpha (host, beside the first provider) is cut off on every channel, witness
    included: it fences, beta takes over through its own provider. On the heal alpha's
    provider still names alpha host until replication brings beta's claim; alpha must wait
    for that before it decides, so it never starts a second copy. Without auto-recover the
    application stays on beta awaiting approval (the sharp case: a copy alpha started on
    its stale view would run beside beta's); with it, it comes back to alpha by failback."""
    c, f = nslab(**TIMINGS)  # the example has a witness: alpha loses it too
    c.add_app("web", A, [B, C], auto_recover=auto_recover)
    c.wait_running("web", A)
    f.settle()
    mark = c.servers[A].log_path.stat().st_size
    f.disk_cut(A)
    f.partition([[B, C], [A]])
    wait_log(c, A, "event=fenced", timeout=10, after=mark)
    c.wait_running("web", B, timeout=20)
    # A partition of some seconds: the providers' replication connections back off (TCP
    # retransmission, syncrepl retry), so alpha's provider lags well after the heal.
    hold(lambda: set(live_copies(c, "web")) == {B}, PARTITION_HOLD, "web running on beta only")
    healed = time.monotonic()
    f.heal()
    wait_log(c, A, "event=rejoined", timeout=30, after=mark)
    home = A if auto_recover else B
    c.wait_running("web", home, timeout=30)
    f.settle()
    if not auto_recover:
        # A copy started on a stale view would show within a few seconds.
        hold(
            lambda: (
                not [
                    life
                    for life in lives(c.ledger_lines())
                    if life.tag == "web" and life.start >= healed
                ]
            ),
            3.0,
            "no copy of web started after the heal",
        )
    print(c.log_tail(A, 30))
    print(c.log_tail(B, 30))
    assert double_runs(lives(c.ledger_lines())) == []
    assert set(live_copies(c, "web")) == {home}
    assert not check_directory(c.directory)


def test_write_provider_server_cut_off_is_replaced_without_socket_timeouts(nslab: NsLab) -> None:
    """alpha, host of web and beside the write provider, is cut off: its packets are
    dropped (links onto a bridge of their own, its disk path lost), nothing is refused.
    beta's writes must move to its own provider as soon as the channels find alpha dead,
    so its claim of web waits for no socket timeout on the silent provider: in beta's log
    the move of the write provider comes before the claim, and no write of the write
    session is lost between the cut and the claim. (Its pulse writer's write in flight at
    the cut times out, on a connection of its own, ``session=pulse``.) How long the
    failover takes is ``tools/bench_failover.py``'s to measure."""
    c, f = nslab(**TIMINGS)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    f.settle()
    mark = c.servers[B].log_path.stat().st_size
    f.disk_cut(A)
    f.partition([[B, C], [A]])
    c.wait_running("web", B, timeout=20)
    lines = c.servers[B].log_path.read_bytes()[mark:].decode().splitlines()
    moved = [i for i, line in enumerate(lines) if "event=write_provider " in line]
    claims = [i for i, line in enumerate(lines) if "event=claim tag=web " in line]
    assert moved and claims and moved[0] < claims[0], "\n".join(lines)
    assert 'reason="its server is dead on every channel"' in lines[moved[0]], lines[moved[0]]
    lost = [
        line
        for line in lines[: claims[0]]
        if "event=provider_lost" in line and "session=write" in line
    ]
    assert not lost, "\n".join(lines)

"""The rejoin state machine (``sentinel/rejoin.py``): pure, so every branch is a plain test."""

from __future__ import annotations

from ndsclust.sentinel.rejoin import CheckView, Phase, Rejoin, WriteBarrier


def fresh() -> Rejoin:
    return Rejoin(barrier_retry=5.0, recheck=0.5)


def test_after_a_fence_nothing_is_decided_until_view_and_barrier() -> None:
    r = fresh()
    assert r.begin(10.0, "unfenced", grace=8.0)
    assert r.pending and r.in_grace(17.9) and not r.in_grace(18.0)
    assert r.next_step(10.0) == CheckView(1)
    assert r.next_step(10.0) is None  # one probe at a time
    r.view_checked(1, 10.1, True)
    assert r.phase is Phase.BARRIER and r.pending
    assert r.next_step(10.1) == WriteBarrier(1)
    assert not r.barrier_written(1, 10.2, "CN=E1,ou=events")
    assert r.pending
    assert r.echoed("cn=e1,ou=events")
    assert not r.pending


def test_own_provider_agreeing_with_itself_is_not_a_current_view() -> None:
    """The heal case: the view check says behind until replication catches up; the barrier
    is not even written before that (its echo would come from the stale provider)."""
    r = fresh()
    r.begin(0.0, "unfenced", grace=8.0)
    assert r.next_step(0.0) == CheckView(1)
    assert r.view_checked(1, 0.0, False, "behind beta's provider")
    assert r.waiting == "behind beta's provider"
    assert r.next_step(0.2) is None  # probes again after recheck
    assert r.next_step(0.5) == CheckView(1)
    assert not r.view_checked(1, 0.5, False, "behind beta's provider")  # same reason: no log
    assert r.next_step(1.0) == CheckView(1)
    r.view_checked(1, 1.0, True)
    assert r.next_step(1.0) == WriteBarrier(1)


def test_a_new_trigger_disowns_the_probe_and_barrier_under_way() -> None:
    r = fresh()
    r.begin(0.0, "stall")
    assert r.next_step(0.0) == CheckView(1)
    assert not r.begin(1.0, "stall again")  # already rejoining: not logged again
    r.view_checked(1, 1.1, True)  # the old generation's answer
    assert r.phase is Phase.VIEW
    assert r.next_step(1.1) == CheckView(2)
    r.view_checked(2, 1.2, True)
    assert r.next_step(1.2) == WriteBarrier(2)
    r.begin(1.3, "stall once more")
    assert not r.barrier_written(2, 1.4, "cn=old")
    assert not r.echoed("cn=old")
    assert r.pending and r.phase is Phase.VIEW


def test_echo_before_the_write_answers_completes_on_the_answer() -> None:
    r = fresh()
    r.begin(0.0, "write provider changed", check_view=False)
    assert r.phase is Phase.BARRIER and not r.in_grace(0.0)
    assert r.next_step(0.0) == WriteBarrier(1)
    assert not r.echoed("cn=e7")
    assert r.barrier_written(1, 0.1, "cn=e7")
    assert not r.pending


def test_an_overdue_or_failed_barrier_is_written_again() -> None:
    r = fresh()
    r.begin(0.0, "x", check_view=False)
    assert r.next_step(0.0) == WriteBarrier(1)
    r.barrier_written(1, 0.1, None)  # the write failed
    assert r.next_step(0.1) == WriteBarrier(1)
    r.barrier_written(1, 0.2, "cn=e1")
    assert not r.overdue(5.1) and r.next_step(5.1) is None
    assert r.overdue(5.2)
    assert r.next_step(5.2) == WriteBarrier(1)
    r.barrier_written(1, 5.3, "cn=e2")
    assert not r.echoed("cn=e1x") and r.echoed("cn=e2")


def test_a_barrier_only_rejoin_keeps_a_view_check_already_asked_for() -> None:
    """A write-provider change during a rejoin after a fence must not skip the view check."""
    r = fresh()
    r.begin(0.0, "unfenced", grace=8.0)
    r.begin(0.1, "write provider changed", check_view=False)
    assert r.phase is Phase.VIEW and r.in_grace(7.0)

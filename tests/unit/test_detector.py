"""The failure detector: any live channel means alive (FIG. 8, 806 -> 808), and isolation."""

from __future__ import annotations

import pytest

from ndsclust.errors import ConfigError
from ndsclust.model import ServerName
from ndsclust.sentinel.detector import Detector, Liveness, isolated, must_fence

ME, B, C, D, E = (ServerName(n) for n in ("alpha", "beta", "gamma", "delta", "epsilon"))
TIMEOUTS = {"lan": 1.0, "directory": 3.0, "disk": 3.0}


def detector(timeouts: dict[str, float] | None = None, grace: float = 5.0) -> Detector:
    return Detector(timeouts or TIMEOUTS, me=ME, started=0.0, startup_grace=grace)


def test_fig8_lan_silent_but_disk_pulse_alive_keeps_peer_alive() -> None:
    lv = detector().liveness(
        {"lan": {B: 10.0}, "disk": {B: 99.5}, "directory": {B: 90.0}}, 100.0, [B]
    )
    assert lv.alive(B)
    assert lv.channels(B) == frozenset({"disk"})
    assert lv.silent(B) == frozenset({"lan", "directory"})
    assert lv.dead() == frozenset()


def test_fig8_every_channel_silent_is_dead() -> None:
    lv = detector().liveness(
        {"lan": {B: 98.9}, "disk": {B: 96.9}, "directory": {B: 96.0}}, 100.0, [B]
    )
    assert not lv.alive(B)
    assert lv.channels(B) == frozenset()
    assert lv.dead() == frozenset({B})


def test_each_single_channel_alone_keeps_peer_alive() -> None:
    for channel, timeout in TIMEOUTS.items():
        observations = {name: {B: 0.0} for name in TIMEOUTS}
        observations[channel] = {B: 100.0 - timeout}  # exactly at the timeout still counts
        lv = detector().liveness(observations, 100.0, [B])
        assert lv.channels(B) == frozenset({channel}), channel


def test_lan_only_configuration_follows_lan() -> None:
    d = detector({"lan": 1.0})
    assert d.liveness({"lan": {B: 99.5}}, 100.0, [B]).alive(B)
    assert not d.liveness({"lan": {B: 98.0}}, 100.0, [B]).alive(B)


def test_unconfigured_channel_observations_are_ignored() -> None:
    lv = detector({"lan": 1.0}).liveness({"lan": {B: 1.0}, "disk": {B: 100.0}}, 100.0, [B])
    assert not lv.alive(B)


def test_one_live_lan_ring_is_enough() -> None:
    # The lan channel merges its rings: a peer heard on any one of its addresses is heard.
    lv = detector().liveness({"lan": {B: 99.9}}, 100.0, [B, C])
    assert lv.alive(B) and lv.channels(B) == frozenset({"lan"})
    assert lv.dead() == frozenset({C})


def test_startup_grace_keeps_never_heard_peers_alive() -> None:
    d = detector(grace=5.0)
    early = d.liveness({}, 4.9, [B, C])
    assert early.alive(B) and early.alive(C)
    assert early.grace == frozenset({B, C})
    assert early.channels(B) == frozenset() and early.dead() == frozenset()
    late = d.liveness({}, 5.0, [B, C])
    assert late.dead() == frozenset({B, C})


def test_startup_grace_does_not_cover_a_peer_already_heard_then_silent() -> None:
    lv = detector(grace=5.0).liveness({"lan": {B: 0.5}}, 4.0, [B])
    assert not lv.alive(B)
    assert lv.dead() == frozenset({B})


def test_me_is_always_alive_and_never_dead() -> None:
    lv = detector().liveness({}, 100.0, [ME, B])
    assert lv.alive(ME)
    assert ME not in lv.dead()
    assert lv.dead() == frozenset({B})


def test_unknown_server_is_not_alive() -> None:
    lv = detector().liveness({"lan": {B: 100.0}}, 100.0, [B])
    assert not lv.alive(ServerName("zeta"))
    assert lv.channels(ServerName("zeta")) == frozenset()


def test_bad_detector_configuration_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        Detector({"lan": 0.0, "disk": -1.0}, me=ME, started=0.0, startup_grace=-1.0)
    assert len(info.value.problems) == 3
    with pytest.raises(ConfigError):
        Detector({}, me=ME, started=0.0, startup_grace=1.0)


def view(
    seen: dict[ServerName, frozenset[str]], grace: frozenset[ServerName] = frozenset()
) -> Liveness:
    return Liveness(me=ME, configured=frozenset(TIMEOUTS), seen=seen, grace=grace)


NONE: frozenset[str] = frozenset()
LAN = frozenset({"lan"})


def test_two_servers_peer_seen_is_not_isolated() -> None:
    assert not isolated(view({B: LAN}), witness_reachable=False, n_servers=2)


def test_two_servers_peer_silent_but_witness_reachable_means_peer_died() -> None:
    assert not isolated(view({B: NONE}), witness_reachable=True, n_servers=2)


def test_two_servers_peer_silent_and_witness_unreachable_means_cut_off() -> None:
    assert isolated(view({B: NONE}), witness_reachable=False, n_servers=2)


def test_two_servers_without_witness_never_fence() -> None:
    assert not isolated(view({B: NONE}), witness_reachable=None, n_servers=2)


def test_single_server_is_never_isolated() -> None:
    assert not isolated(view({}), witness_reachable=False, n_servers=1)


def test_grace_peers_are_not_visible_for_isolation() -> None:
    assert isolated(view({B: NONE}, grace=frozenset({B})), witness_reachable=False, n_servers=2)


def test_three_servers_majority_rules() -> None:
    assert not isolated(view({B: LAN, C: NONE}), witness_reachable=False, n_servers=3)
    assert isolated(view({B: NONE, C: NONE}), witness_reachable=None, n_servers=3)


def test_three_servers_minority_fences_even_with_witness_reachable() -> None:
    # A witness both sides of a partition reach must not let the minority keep running.
    assert isolated(view({B: NONE, C: NONE}), witness_reachable=True, n_servers=3)


def test_even_split_is_not_a_majority() -> None:
    four = view({B: LAN, C: NONE, D: NONE})
    assert isolated(four, witness_reachable=True, n_servers=4)
    five = view({B: LAN, C: LAN, D: NONE, E: NONE})
    assert not isolated(five, witness_reachable=False, n_servers=5)


def test_isolation_counts_only_visible_peers() -> None:
    lv = detector().liveness({"lan": {B: 99.9}, "disk": {C: 1.0}}, 100.0, [B, C, D])
    assert lv.visible() == frozenset({B})
    assert isolated(lv, witness_reachable=None, n_servers=4)


def test_fencing_waits_for_peers_not_yet_heard_at_start_up() -> None:
    assert not must_fence(view({B: NONE, C: NONE}, grace=frozenset({B, C})), None, 3)


def test_peers_heard_then_lost_fence_even_inside_the_start_up_grace() -> None:
    """The peers take over after their failover timeout whether this sentinel has just
    started or not: a start-up grace must not hold the fence back."""
    d = detector()
    lv = d.liveness({"lan": {B: 0.1, C: 0.1}}, 2.0, [B, C])
    assert lv.grace == frozenset() and must_fence(lv, None, 3)


def test_a_channel_failing_at_this_end_proves_no_peer_dead() -> None:
    """This server's disk path is lost (the channel degraded here) while the peer's LAN and
    directory are silent: others may still hear the peer on the disk, so it is not dead."""
    obs = {"lan": {B: 10.0}, "directory": {B: 10.0}}
    assert not detector().liveness(obs, 100.0, [B]).alive(B)
    lv = detector().liveness(obs, 100.0, [B], blind={"disk"})
    assert lv.alive(B) and lv.channels(B) == frozenset({"disk"})

"""The double-run checker that every end-to-end test and benchmark relies on."""

from ndsclust.ledger import double_runs, lives


def test_handover_without_overlap_is_not_a_double_run() -> None:
    ls = lives(
        [
            "alpha 10 web start 1.0",
            "alpha 10 web tick 1.5",
            "alpha 10 web stop 2.0",
            "beta 20 web start 2.1",
            "beta 20 web tick 3.0",
        ]
    )
    assert [(x.server, x.start, x.end, x.stopped) for x in ls] == [
        ("alpha", 1.0, 2.0, True),
        ("beta", 2.1, 3.0, False),
    ]
    assert double_runs(ls) == []


def test_overlapping_copies_on_two_servers_are_reported() -> None:
    ls = lives(
        [
            "alpha 10 web start 1.0",
            "alpha 10 web tick 2.5",
            "beta 20 web start 2.0",
            "beta 20 web tick 3.0",
            "gamma 5 db start 0.0",
        ]
    )
    found = double_runs(ls)
    assert len(found) == 1 and found[0].tag == "web"
    assert abs(found[0].overlap - 0.5) < 1e-9


def test_restart_on_the_same_server_is_not_a_double_run() -> None:
    ls = lives(
        [
            "alpha 10 web start 1.0",
            "alpha 10 web tick 2.0",
            "alpha 11 web start 1.9",
            "alpha 11 web tick 3.0",
        ]
    )
    assert double_runs(ls) == []


def test_malformed_lines_are_ignored() -> None:
    assert lives(["", "garbage", "alpha x web start 1", "alpha 1 web jump 1.0"]) == []

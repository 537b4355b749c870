"""The pure parts of anti-entropy: digests, the repair plan, the partition rule, the schedule,
and the sweeper with a fake sweep (docs/design.md invariant 3, "Anti-entropy")."""

from __future__ import annotations

import json

from ndsclust import config
from ndsclust.config import Config
from ndsclust.ldapstore.antientropy import (
    Action,
    Digests,
    Done,
    Outcome,
    Repair,
    entry_digest,
    plan,
    user_values,
)
from ndsclust.ldapstore.antientropy_probe import lagging, partition_reason, unreachable
from ndsclust.ldapstore.reseed import to_ldif
from ndsclust.sentinel.antientropy import Schedule, Sweeper, sweeps
from ndsclust.sentinel.sweep_child import outcome_from_json, outcome_to_json

W, A, B = "ldap://w", "ldap://a", "ldap://b"


def d(csn: str, text: str) -> bytes:
    return entry_digest({"cn": (text,), "csn": (csn,)})


BASE = {"cn=x": d("1", "x"), "cn=y": d("2", "y")}


def looks(a: Digests, b: Digests | None = None) -> dict[str, Digests | None]:
    return {W: dict(BASE), A: a, B: dict(BASE) if b is None else b}


def test_digest_ignores_order_case_of_names_and_operational_attributes() -> None:
    one = user_values({"cn": [b"x"], "Mail": [b"b", b"a"], "entryCSN": [b"1"]})
    two = user_values({"mail": [b"a", b"b"], "CN": [b"x"], "modifyTimestamp": [b"2"]})
    assert entry_digest(one) == entry_digest(two)
    assert entry_digest(one) != entry_digest({"cn": ("x",), "mail": ("a",)})
    # values cannot run into each other
    assert entry_digest({"a": ("bc",)}) != entry_digest({"a": ("b", "c")})


def test_alike_providers_need_nothing() -> None:
    p = plan(W, looks(dict(BASE)), earlier=looks(dict(BASE)))
    assert p.repairs == () and p.differing == () and p.held == ""


def test_differing_and_missing_entries_are_rewritten_through_the_write_provider() -> None:
    a = {"cn=x": d("9", "old")}  # cn=x differs, cn=y missing
    p = plan(W, looks(a), earlier=looks(a))
    assert [(r.dn, r.action, r.providers) for r in p.repairs] == [
        ("cn=x", Action.REWRITE, (A,)),
        ("cn=y", Action.REWRITE, (A,)),
    ]


def test_an_entry_the_write_provider_deleted_is_deleted_where_it_is_left() -> None:
    a = {**BASE, "cn=z": d("3", "z")}
    p = plan(W, looks(a), earlier=looks(a))
    assert [(r.dn, r.action, r.providers) for r in p.repairs] == [("cn=z", Action.DELETE, (A,))]


def test_one_look_confirms_nothing() -> None:
    a = {"cn=x": d("1", "x")}
    p = plan(W, looks(a))
    assert p.repairs == () and p.differing == ("cn=y",)


def test_a_change_on_its_way_is_not_divergence() -> None:
    # the write provider's copy changed between the looks: a write, not divergence
    first = looks(dict(BASE))
    second = {**looks(dict(BASE)), W: {**BASE, "cn=x": d("5", "new")}}
    assert plan(W, second, earlier=first).repairs == ()
    # a difference that went away on the second look is not repaired either
    assert plan(W, looks(dict(BASE)), earlier=looks({"cn=x": d("1", "x")})).repairs == ()


def test_nothing_while_a_provider_is_unreachable_or_replication_is_cut() -> None:
    a = {"cn=x": d("9", "old")}
    held = plan(W, {**looks(a), B: None}, earlier=looks(a))
    assert held.repairs == () and held.held == f"unreachable: {B}"
    cut = plan(W, looks(a), earlier=looks(a), partitioned="replication cut off: a behind w")
    assert cut.repairs == () and cut.held.startswith("replication cut off")
    assert plan(W, {A: a}).held.startswith("write provider")


def test_partition_is_a_lag_that_does_not_move() -> None:
    ahead, old, newer = {"001": "20260101#1"}, {"001": "20250101#1"}, {"001": "20250601#1"}
    assert partition_reason({W: ahead, A: old}, {W: ahead, A: old}) == (
        f"replication cut off: {A} behind {W}"
    )
    assert partition_reason({W: ahead, A: old}, {W: ahead, A: newer}) == ""  # catching up
    assert partition_reason({W: ahead, A: ahead}, {W: ahead, A: ahead}) == ""
    assert partition_reason({W: ahead, A: None}, {W: ahead, A: old}) == ""


def test_schedule_pokes_settle_held_sweeps_retry_then_slow() -> None:
    s = Schedule(interval=300, settle=2, retry=1, next_at=0, pending=False, reason="slow")
    s.swept("", 0)
    assert s.due(299) is None and s.due(300) == "slow"
    s.poke("provider_restart", 10)
    assert s.due(11) is None and s.due(12) == "provider_restart" and s.wait(11) == 1
    s.swept("unreachable: a", 12)
    assert s.due(13) == "provider_restart"  # held on a pending poke: retried
    s.swept("", 13)
    assert s.due(14) is None and s.due(313) == "slow"
    s.swept("unreachable: a", 313)  # a held slow sweep waits for the next one
    assert s.due(314) is None


def test_a_later_poke_does_not_postpone_an_earlier_one() -> None:
    s = Schedule(settle=2, next_at=0, pending=False)
    s.poke("heal", 10)
    s.poke("provider_restart", 11)
    assert s.due(12) == "provider_restart"


class FakeSweep:
    def __init__(self, outcome: Outcome) -> None:
        self.outcome, self.calls, self.closed = outcome, 0, False

    def sweep(self) -> Outcome:
        self.calls += 1
        return self.outcome

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_sweeper_sweeps_only_when_due_and_mine() -> None:
    now = [0.0]
    fake = FakeSweep(Outcome(entries=3))
    mine = [False]
    s = Sweeper(fake, mine=lambda: mine[0], settle=1, interval=100, clock=lambda: now[0])
    assert s.step() is None and fake.calls == 0  # settling
    now[0] = 1
    assert s.step() is None and fake.calls == 0  # not this sentinel's job
    s.poke("heal")
    now[0] = 2
    mine[0] = True
    assert s.step() == Outcome(entries=3) and fake.calls == 1
    assert s.step() is None


def test_sweeper_survives_a_failing_sweep() -> None:
    class Boom(FakeSweep):
        def sweep(self) -> Outcome:
            raise RuntimeError("slapd said no")

    now = [5.0]
    s = Sweeper(Boom(Outcome()), settle=0, clock=lambda: now[0])
    out = s.step()
    assert out is not None and out.held == "error: RuntimeError"


def test_reseed_ldif_puts_parents_first_and_encodes_what_is_not_plain() -> None:
    text = to_ldif(
        [
            ("cn=a,ou=x,dc=t", {"cn": [b"a"], "objectClass": [b"top"], "description": [b" lead"]}),
            ("ou=x,dc=t", {"ou": [b"x"], "objectClass": [b"top"]}),
            ("dc=t", {"dc": [b"t"], "objectClass": [b"top"], "userPassword": [b"\xff\x00"]}),
        ]
    )
    blocks = text.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        "dn: dc=t",
        "dn: ou=x,dc=t",
        "dn: cn=a,ou=x,dc=t",
    ]
    assert blocks[0].splitlines()[1] == "objectClass: top"  # objectClass first
    assert "userPassword:: /wA=" in blocks[0]
    assert "description:: IGxlYWQ=" in blocks[2]


def test_the_first_look_may_keep_only_what_differed() -> None:
    a = {**BASE, "cn=z": d("3", "z")}
    full = looks(a)
    first = plan(W, full)
    kept = {u: {dn: v[dn] for dn in first.differing if dn in v} for u, v in full.items() if v}
    assert plan(W, looks(a), earlier=kept).repairs == plan(W, looks(a), earlier=full).repairs
    # an entry that differs only on the second look is still not confirmed
    b = {**a, "cn=x": d("9", "old")}
    assert {r.dn for r in plan(W, looks(b), earlier=kept).repairs} == {"cn=z"}


class FakeProbe:
    def __init__(self, answers: list[str]) -> None:
        self.answers, self.closed = answers, False

    def check(self) -> str:
        return self.answers.pop(0) if self.answers else ""

    def whole(self) -> str:
        return self.held

    held = ""

    def close(self) -> None:
        self.closed = True


def test_a_provider_the_probe_finds_restarted_is_a_poke() -> None:
    now = [0.0]
    fake = FakeSweep(Outcome())
    probe = FakeProbe(["", "provider_restart"])
    s = Sweeper(fake, settle=1, interval=100, clock=lambda: now[0], probe=probe, probe_interval=5)
    s.schedule.swept("", 0)  # the start sweep is done: next one at 100
    s._probed()
    assert s.schedule.due(1) is None
    now[0] = 3
    s._probed()  # not due: the probe is asked every 5 s
    assert probe.answers == ["provider_restart"]
    now[0] = 5
    s._probed()
    assert s.schedule.due(6) == "provider_restart"
    s.stop()
    assert probe.closed and fake.closed


def test_lagging_and_unreachable_name_the_providers() -> None:
    assert unreachable({"a": {"1": "x"}, "b": None}) == "unreachable: b"
    assert lagging({"a": {"1": "x"}, "b": {"1": "x"}}) == ""
    assert lagging({"a": {"1": "x"}, "b": {"1": "w"}}) == "replication under way: b behind a"
    assert lagging({"a": {"1": "x"}, "b": {"1": "x", "2": "y"}}).endswith("a behind b")


def test_outcome_crosses_the_child_process_as_json() -> None:
    done = Done(
        Repair("cn=x,dc=t", Action.REWRITE, ("ldap://b",)),
        "ldap://b",
        None,
        {"cn": ("x",), "objectclass": ("top",)},
        True,
    )
    out = Outcome("", ("cn=x,dc=t",), (done,), (("cn=y,dc=t", ("ldap://b",)),), 0.5, 3)
    back = outcome_from_json(json.loads(json.dumps(outcome_to_json(out))))
    assert back == out and back.repaired == 1


def _cfg(server: str, local: str | None, owners: dict[str, str] | None = None) -> Config:
    uris = ["ldaps://p1", "ldaps://p2", "ldaps://p3"]
    d = {"uris": uris, "suffix": "dc=t", "allow_plain_ldap": False}
    if local:
        d["local_uri"] = local
    if owners is not None:
        d["provider_servers"] = owners
    return config.parse(
        {"server": server, "directory": d, "channels": {"directory": {}}},
    )


def test_exactly_one_sentinel_sweeps() -> None:
    uris = ["ldaps://p1", "ldaps://p2", "ldaps://p3"]
    names = ["alpha", "beta", "gamma"]
    owners = dict(zip(uris, names, strict=True))
    # deployed and loopback lab: a provider beside each sentinel, with or without the map
    for m in (owners, None):
        chosen = [n for n, u in zip(names, uris, strict=True) if sweeps(_cfg(n, u, m))]
        assert chosen == ["alpha"]
    # a scale lab: eight sentinels over three providers, server i beside provider i % 3
    eight = [f"s{i}" for i in range(8)]
    owners8 = {u: eight[i] for i, u in enumerate(uris)}
    chosen = [n for i, n in enumerate(eight) if sweeps(_cfg(n, uris[i % 3], owners8))]
    assert chosen == ["s0"]
    assert not sweeps(_cfg("alpha", None))  # no provider of its own: never


def test_a_sweep_the_probe_would_hold_is_not_started_and_a_failed_one_waits() -> None:
    class Boom(FakeSweep):
        def sweep(self) -> Outcome:
            self.calls += 1
            raise RuntimeError("the sweep process exited 1")

    now = [0.0]
    probe = FakeProbe([])
    probe.held = "unreachable: ldap://b"
    fake = Boom(Outcome())
    s = Sweeper(fake, settle=0, retry=2, interval=100, clock=lambda: now[0], probe=probe)
    out = s.step()
    assert out is not None and out.held == "unreachable: ldap://b" and fake.calls == 0
    assert s.schedule.due(2) == "start"  # held on a pending poke: tried again soon
    probe.held = ""
    now[0] = 2
    out = s.step()
    assert out is not None and out.held == "error: RuntimeError" and fake.calls == 1
    assert s.schedule.due(4) is None and s.schedule.due(102) == "slow"

"""Service stacks in the decision core (ndsclust/sentinel/stacks.py): sets found, checked and
ordered; a set moved as one by every kind of move; separation with availability first;
service addresses as a server's eligibility."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ndsclust.model import (
    App,
    AppState,
    AppType,
    Request,
    Server,
    ServerName,
    StateValue,
    Tag,
    address_needs,
    check_network,
    check_service_address,
    networks_values,
    parse_networks,
)
from ndsclust.sentinel.actions import (
    Action,
    Claim,
    EventKind,
    ForwardRequest,
    Load,
    SetState,
    Unload,
)
from ndsclust.sentinel.decide import decide
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.pulse import Networks
from ndsclust.sentinel.stacks import find_stacks
from ndsclust.sentinel.view import View
from ndsclust.simulate.engine import Sim
from tests.unit.test_decide_sim import ALL, DETECT, TIMING
from tests.unit.test_decide_sim import A as ALPHA
from tests.unit.test_decide_sim import B as BETA
from tests.unit.test_decide_sim import G as GAMMA

IP, DB, WEB = Tag("ip"), Tag("db"), Tag("web")
RUNNING = StateValue(AppState.RUNNING)


def member(
    tag: Tag,
    requires: Iterable[str] = (),
    *,
    host: ServerName | None = ALPHA,
    primary: ServerName = ALPHA,
    backups: tuple[ServerName, ...] = (BETA, GAMMA),
    avoids: Iterable[str] = (),
    addresses: Iterable[str] = (),
    resources: Iterable[str] = (),
) -> App:
    return App(
        tag=tag,
        type=AppType.CAPABLE,
        command=(f"/usr/bin/{tag}",),
        primary=primary,
        backups=backups,
        host=host,
        resources=frozenset(resources),
        state=RUNNING,
        requires=tuple(Tag(r) for r in requires),
        avoids=tuple(Tag(a) for a in avoids),
        addresses=tuple(addresses),
    )


def stack_apps(**changes: object) -> list[App]:
    """ip <- db <- web: web requires db, db requires ip."""
    return [
        replace(member(IP), **changes),  # type: ignore[arg-type]
        replace(member(DB, ["ip"]), **changes),  # type: ignore[arg-type]
        replace(member(WEB, ["db"]), **changes),  # type: ignore[arg-type]
    ]


class StackWorld(Sim):
    """The simulation engine with several applications and a log of starts and stops per
    server: the ledger the order is checked on."""

    def __init__(
        self,
        apps: list[App],
        resources: dict[ServerName, set[str]] | None = None,
        networks: dict[ServerName, set[str]] | None = None,
    ):
        # ``networks``: what each server's sentinel published on its pulse entry (None:
        # nothing, as an older sentinel); ``resources``: what each sees of itself.
        self.networks = {s: frozenset(v) for s, v in (networks or {}).items()}
        needs = {r for a in apps for r in a.resources}
        resources = resources if resources is not None else {s: set(needs) for s in ALL}
        super().__init__(
            [Server(s, resources=frozenset(resources.get(s, ()))) for s in ALL],
            apps,
            timing=TIMING,
            procs={
                s: [ProcInfo(a.tag, ProcState.RUNNING, 100, 0.0) for a in apps if a.host == s]
                for s in ALL
            },
        )
        self.log: list[tuple[ServerName, str, Tag]] = []

    def view(self, me: ServerName) -> View:
        published = {s: n for s, n in self.networks.items() if s != me}
        return replace(super().view(me), networks=published)

    def apply(self, me: ServerName, action: Action) -> bool:
        match action:
            case Load(tag):
                self.log.append((me, "start", tag))
            case Unload(tag, _):
                self.log.append((me, "stop", tag))
        return super().apply(me, action)

    def check(self) -> None:
        super().check()
        if not self.checking:
            return
        # Two servers never run parts of one set at once.
        for stack in {id(s): s for s in find_stacks(self.apps).values()}.values():
            where = {s for t in stack.members for s in self.runners(t)}
            assert len(where) <= 1, (self.now, stack.members, where)

    def hosts(self) -> set[ServerName | None]:
        return {a.host for a in self.apps.values()}

    def runs_all_on(self, server: ServerName) -> bool:
        return all(self.running_on(t) == [server] for t in (IP, DB, WEB)) and self.hosts() == {
            server
        }

    def order(self, server: ServerName, what: str) -> list[Tag]:
        return [t for s, w, t in self.log if s == server and w == what]


def settle(w: StackWorld, n: int = 12) -> None:
    w.step(n)


# ------------------------------------------------------------------ sets, order, errors


def test_sets_are_connected_ordered_requirements_first_and_share_servers() -> None:
    apps = stack_apps()
    apps[2] = replace(apps[2], backups=(GAMMA,))  # web may not run on beta
    other = member(Tag("mail"))
    stacks = find_stacks({a.tag: a for a in [*apps, other]})
    assert Tag("mail") not in stacks
    s = stacks[WEB]
    assert s is stacks[IP] and s.members == (IP, DB, WEB) and s.root == IP
    assert s.servers == (ALPHA, GAMMA) and s.problem is None


def test_requires_matches_tags_case_insensitively() -> None:
    apps = [member(IP), member(DB, ["IP"])]
    assert find_stacks({a.tag: a for a in apps})[DB].members == (IP, DB)


def test_missing_tag_cycle_and_unplaceable_set_are_errors_naming_the_entries() -> None:
    missing = find_stacks({DB: member(DB, ["nosuch"])})[DB].problem
    assert missing == "db requires nosuch, which is not an application"
    cyc = [member(IP, ["web"]), member(DB, ["ip"]), member(WEB, ["db"])]
    problem = find_stacks({a.tag: a for a in cyc})[IP].problem
    assert problem is not None and "a cycle" in problem and "db requires ip" in problem
    apart = [member(IP, backups=(BETA,)), member(DB, ["ip"], primary=GAMMA, backups=())]
    problem = find_stacks({a.tag: a for a in apart})[DB].problem
    assert problem is not None and "no server is in the server lists" in problem
    assert "ip: alpha, beta" in problem and "db: gamma" in problem


def test_a_broken_set_does_not_run_and_its_state_says_why() -> None:
    apps = [member(IP, ["web"]), member(DB, ["ip"]), member(WEB, ["db"])]
    w = StackWorld(apps)
    w.step(2)
    for t in (IP, DB, WEB):
        assert w.runners(t) == []
        state = w.apps[t].state
        assert state.state is AppState.ERROR and "a cycle" in state.reason
    assert EventKind.ERROR in w.kinds()


# ------------------------------------------------------------- a set moves as one unit


def test_set_starts_in_order_on_load() -> None:
    w = StackWorld(stack_apps(host=None, state=StateValue(AppState.STOPPED)))
    w.procs[ALPHA] = {}
    w.request(DB, "load")  # a request on any member is the set's
    settle(w)
    assert w.runs_all_on(ALPHA)
    assert w.order(ALPHA, "start") == [IP, DB, WEB]
    assert EventKind.STACK in w.kinds()


def test_failover_moves_the_whole_set_in_order() -> None:
    w = StackWorld(stack_apps())
    w.step(2)
    w.kill(ALPHA)
    w.step(DETECT)
    settle(w)
    assert w.runs_all_on(BETA)
    assert w.order(BETA, "start") == [IP, DB, WEB]
    # One decision: the failover is the root's; the members follow it.
    failovers = [(e.tag, e.server) for e in w.events if e.kind is EventKind.FAILOVER]
    assert failovers == [(IP, BETA)]


def test_migrate_of_a_member_moves_the_set_stopping_dependents_first() -> None:
    w = StackWorld(stack_apps())
    w.request(WEB, "migrate:gamma")
    settle(w)
    assert w.runs_all_on(GAMMA)
    assert w.order(ALPHA, "stop") == [WEB, DB, IP]
    assert w.order(GAMMA, "start") == [IP, DB, WEB]
    assert all(a.request is None for a in w.apps.values())
    w.step(10)
    assert w.runs_all_on(GAMMA)  # a migrate pins the set


def test_failback_moves_the_set_back() -> None:
    w = StackWorld(stack_apps())
    w.kill(ALPHA)
    w.step(DETECT)
    settle(w)
    assert w.runs_all_on(BETA)
    w.revive(ALPHA)
    settle(w, 20)
    assert w.runs_all_on(ALPHA)
    assert w.order(BETA, "stop") == [WEB, DB, IP]
    assert EventKind.FAILBACK in w.kinds()


def test_maintenance_moves_the_set_and_unload_stops_it_in_order() -> None:
    w = StackWorld(stack_apps())
    w.maintenance(ALPHA, True)
    settle(w)
    assert w.runs_all_on(BETA)
    w.request(DB, "unload")
    settle(w)
    assert w.hosts() == {None} and all(w.runners(t) == [] for t in (IP, DB, WEB))
    assert w.order(BETA, "stop") == [WEB, DB, IP]


def test_handoff_of_the_root_moves_the_set() -> None:
    w = StackWorld(stack_apps())
    w.step(2)
    for _ in range(w.policy.max_restarts + 1):
        w.crash(IP)
        w.step(2)
    settle(w)
    assert w.runs_all_on(BETA)
    assert EventKind.HANDOFF in w.kinds()


def test_a_member_failing_past_its_limit_hands_the_whole_set_off() -> None:
    w = StackWorld(stack_apps())
    w.step(2)
    for _ in range(w.policy.max_restarts + 1):
        w.crash(DB)
        w.step(2)
    settle(w)
    # The set moves as one, like a failover: web stops, then ip (db had ended), and all
    # three start in order on beta; the one hand-off is the root's and names the member.
    assert w.runs_all_on(BETA)
    assert w.order(ALPHA, "stop") == [WEB, IP]
    assert w.order(BETA, "start") == [IP, DB, WEB]
    handoffs = [(e.tag, e.server, e.text) for e in w.events if e.kind is EventKind.HANDOFF]
    assert [(t, s) for t, s, _ in handoffs] == [(IP, ALPHA)]
    assert handoffs[0][2].startswith("handoff to beta: db in the stack of ip: exited;")
    assert all(a.state.state is AppState.RUNNING for a in w.apps.values())
    w.step(20)
    assert w.runs_all_on(BETA)  # the failures on alpha count: no failback to them yet


def test_a_member_past_its_limit_with_no_other_server_fails_and_says_why() -> None:
    w = StackWorld(stack_apps(backups=()))
    w.step(2)
    for _ in range(w.policy.max_restarts + 1):
        w.crash(DB)
        w.step(2)
    settle(w)
    state = w.apps[DB].state
    assert state.state is AppState.FAILED and w.runners(DB) == []
    assert "no other server can take the stack of ip" in state.reason
    assert state.reason.endswith("ndsclust cleanup ip")
    assert w.running_on(IP) == [ALPHA] and EventKind.HANDOFF not in w.kinds()


def test_two_takers_race_for_a_set_only_one_runs_it() -> None:
    w = StackWorld(stack_apps())
    w.kill(ALPHA)
    w.isolate(BETA)  # beta and gamma cannot hear each other's claims at first
    w.step(DETECT)
    w.heal()
    settle(w, 20)
    hosts = w.hosts()
    assert len(hosts) == 1 and None not in hosts  # check() asserted one server at a time


OPS = st.one_of(
    st.tuples(st.just("kill"), st.sampled_from(ALL)),
    st.tuples(st.just("revive"), st.sampled_from(ALL)),
    st.tuples(st.just("isolate"), st.sampled_from(ALL)),
    st.tuples(st.just("heal"), st.just(ALPHA)),
    st.tuples(st.just("crash"), st.sampled_from((IP, DB, WEB))),
    st.tuples(st.just("maintenance_on"), st.sampled_from(ALL)),
    st.tuples(st.just("maintenance_off"), st.sampled_from(ALL)),
    st.tuples(
        st.sampled_from(["load", "unload", "failback", "migrate:beta", "migrate:gamma"]),
        st.sampled_from((IP, DB, WEB)),
    ),
)


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(st.tuples(OPS, st.integers(1, 4)), max_size=10))
def test_random_faults_never_split_a_set_and_it_settles_whole(
    ops: list[tuple[tuple[str, str], int]],
) -> None:
    w = StackWorld(stack_apps())
    for (op, arg), cycles in ops:
        match op:
            case "kill":
                w.kill(ServerName(arg))
            case "revive":
                w.revive(ServerName(arg))
            case "isolate":
                w.isolate(ServerName(arg))
            case "heal":
                w.heal()
            case "crash":
                w.crash(Tag(arg))
            case "maintenance_on":
                w.maintenance(ServerName(arg), True)
            case "maintenance_off":
                w.maintenance(ServerName(arg), False)
            case _:
                w.request(Tag(arg), op)
        w.step(cycles)  # check() runs after every action
    w.heal()
    for s in ALL:
        w.revive(s)
        w.maintenance(s, False)
    w.step(60)
    hosts = w.hosts()
    assert len(hosts) == 1, w.apps
    (host,) = hosts
    failed = any(a.state.state is AppState.FAILED for a in w.apps.values())
    if host is None:
        assert all(w.runners(t) == [] for t in (IP, DB, WEB))
    elif not failed:
        assert w.runs_all_on(host), (w.apps, w.procs)


# ------------------------------------------------------------- separation


def test_the_later_tag_gives_way_to_what_it_avoids() -> None:
    a = member(Tag("a1"), avoids=["b1"])
    b = member(Tag("b1"), host=None)
    w = StackWorld([a, b])
    w.procs[ALPHA].pop(Tag("b1"), None)
    w.request(Tag("b1"), "load")
    settle(w)
    # b1 sorts later, so b1 gives way: it loads on beta, not on its primary alpha.
    assert w.apps[Tag("b1")].host == BETA and w.apps[Tag("a1")].host == ALPHA


def test_availability_over_preference_runs_together_and_says_so() -> None:
    a = member(Tag("a1"), avoids=["b1"], backups=(BETA,))
    b = member(Tag("b1"), host=BETA, backups=(BETA,))
    w = StackWorld([a, b])
    w.kill(BETA)
    w.step(DETECT)
    settle(w)
    # Nowhere else to go: b1 runs next to a1, and its state and an event say why.
    assert w.running_on(Tag("b1")) == [ALPHA] and w.running_on(Tag("a1")) == [ALPHA]
    state = w.apps[Tag("b1")].state
    assert state.state is AppState.RUNNING and "avoids a1" in state.reason
    assert EventKind.AVOIDS_OVERRIDDEN in w.kinds()
    # Once another server is back, it moves there on its own.
    w.revive(BETA)
    settle(w, 20)
    assert w.apps[Tag("b1")].host == BETA and w.running_on(Tag("b1")) == [BETA]
    assert w.apps[Tag("b1")].state == RUNNING


# ------------------------------------------------------------- service addresses


def test_service_address_values_are_checked_and_canonical() -> None:
    assert check_service_address("198.18.5.10/24") == "198.18.5.10/24"
    assert check_service_address("FD00::A/64@eth0") == "fd00::a/64@eth0"
    for bad in ("198.18.5.10", "bogus/24", "224.0.0.1/4", "198.18.5.1/24@" + "x" * 20):
        try:
            check_service_address(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
    assert address_needs(("198.18.5.10/24", "fd00::1/64@eth1")) == {
        "net:198.18.5.0/24",
        "iface:eth1",
    }


SVC, ADDRESS, NET = Tag("svc"), "198.18.5.10/24", "net:198.18.5.0/24"


def address_world(
    beta: set[str], gamma: set[str], *, published: bool = True, stack: bool = False
) -> StackWorld:
    """``svc`` (or the stack ip <- db <- web, web holding the address) on alpha, which has
    an interface on 198.18.5.0/24; beta and gamma have ``beta`` and ``gamma``; every
    sentinel published its own (none when not ``published``)."""
    have = {ALPHA: {NET, "iface:lan0"}, BETA: beta, GAMMA: gamma}
    if stack:
        apps = stack_apps()
        apps[2] = replace(apps[2], addresses=(ADDRESS,))
    else:
        apps = [replace(member(SVC), addresses=(ADDRESS,))]
    return StackWorld(apps, resources=have, networks=have if published else None)


def said(w: StackWorld, server: ServerName, kind: EventKind) -> list[str]:
    return [e.text for e in w.events if e.kind is kind and e.server == server]


def test_first_backup_without_the_network_is_skipped_and_the_second_takes_over() -> None:
    w = address_world({"iface:lan0", "net:198.18.9.0/24"}, {NET})
    w.step(2)
    w.kill(ALPHA)
    w.step(DETECT)
    settle(w)
    # Every server judges beta by what beta published: gamma takes it, beta never tries.
    assert w.apps[SVC].host == GAMMA and w.running_on(SVC) == [GAMMA]
    assert [e.server for e in w.events if e.kind is EventKind.FAILOVER] == [GAMMA]
    assert "skipped beta lacks net:198.18.5.0/24" in said(w, GAMMA, EventKind.RESOURCE_MISSING)
    (own,) = said(w, BETA, EventKind.RESOURCE_MISSING)
    assert own == "beta lacks net:198.18.5.0/24: cannot take it over from alpha"


def test_every_server_decides_the_same_taker_from_the_published_networks() -> None:
    w = address_world(set(), {NET})
    w.step(2)
    lan = frozenset({"lan"})

    def alpha_dead(me: ServerName) -> View:
        seen = {p: frozenset() if p == ALPHA else lan for p in ALL if p != me}
        return replace(w.view(me), liveness=Liveness(me, lan, seen))

    claims = {
        s: [a.tag for a in decide(alpha_dead(s), s, w.now) if isinstance(a, Claim)]
        for s in (BETA, GAMMA)
    }
    assert claims == {BETA: [], GAMMA: [SVC]}


def test_no_server_with_the_network_fails_it_naming_each_server_and_network() -> None:
    w = address_world(set(), {"net:198.18.9.0/24"})
    w.step(2)
    w.kill(ALPHA)
    w.step(DETECT)
    settle(w)
    state = w.apps[SVC].state
    assert w.apps[SVC].host == ALPHA and w.runners(SVC) == []
    assert state.state is AppState.FAILED
    assert state.reason == (
        "no server can take it over from alpha: beta lacks net:198.18.5.0/24, "
        "gamma lacks net:198.18.5.0/24"
    )


def test_a_server_that_published_nothing_counts_as_eligible_and_refuses_by_itself() -> None:
    # An older sentinel (or one not yet published): its peers count it fit, as before
    # publication existed; it says what it lacks and does not take the address.
    w = address_world(set(), {NET}, published=False)
    w.kill(ALPHA)
    w.step(DETECT + 1)
    assert w.apps[SVC].host == ALPHA and w.runners(SVC) == []
    (own,) = said(w, BETA, EventKind.RESOURCE_MISSING)
    assert "net:198.18.5.0/24" in own


def test_a_set_skips_the_server_without_its_members_network() -> None:
    w = address_world({"iface:lan0"}, {NET}, stack=True)
    w.step(2)
    w.kill(ALPHA)
    w.step(DETECT)
    settle(w)
    assert w.runs_all_on(GAMMA)
    assert w.order(GAMMA, "start") == [IP, DB, WEB]
    assert "skipped beta lacks net:198.18.5.0/24" in said(w, GAMMA, EventKind.RESOURCE_MISSING)


def test_apps_without_stack_attributes_decide_as_before() -> None:
    w = StackWorld([member(WEB)])
    view = w.view(ALPHA)
    out = decide(view, ALPHA, 1.0)
    assert not any(isinstance(a, (Unload, ForwardRequest)) for a in out)
    assert not [a for a in out if isinstance(a, SetState) and a.value.state is AppState.ERROR]
    assert Request.parse("load")  # the module's imports stay used


def test_a_member_left_running_where_the_root_is_not_stops() -> None:
    # After a partition the directory may converge with the root on beta and the members
    # still naming alpha: alpha stops its copies at once (no server runs part of a set
    # whose root it does not hold) and the set comes together again.
    apps = stack_apps()
    apps[0] = replace(apps[0], host=BETA)
    w = StackWorld(apps)
    w.checking = False  # the split is set up on purpose
    w.step(1)
    assert w.running_on(DB) == [] and w.running_on(WEB) == []
    w.checking = True
    settle(w)
    (host,) = w.hosts()  # whole again (here back on its primary, by failback)
    assert host is not None and w.runs_all_on(host)


# ------------------------------------------------------------- published networks


def test_published_network_values_are_checked_and_none_is_not_absent() -> None:
    assert parse_networks([]) is None  # nothing published
    assert parse_networks(["-"]) == frozenset()
    assert parse_networks(["net:198.18.5.0/24", "iface:lan0"]) == {NET, "iface:lan0"}
    assert networks_values(frozenset()) == ["-"]
    for bad in ("net:198.18.5.1/24", "net:198.18.5.0", "net:fd00::/64x", "lan0", "iface:"):
        try:
            check_network(bad)
        except ValueError as e:
            assert "net:<network>/<prefix>" in str(e)
            continue
        raise AssertionError(bad)
    assert check_network("net:fd00::/64") == "net:fd00::/64"


def test_networks_are_written_at_start_and_when_they_change_not_every_pulse() -> None:
    now = [0.0]
    reads = [frozenset({NET}), None, frozenset({NET}), frozenset({NET, "iface:lan1"})]
    n = Networks(read=lambda: reads.pop(0), clock=lambda: now[0], every=1.0)
    assert n.due() == {NET}  # the first pulse: not yet written
    n.done(frozenset({NET}))
    now[0] = 0.5
    assert n.due() is None  # not read again within ``every``
    now[0] = 1.0
    assert n.due() is None  # the kernel could not be asked: the last read stands
    now[0] = 2.0
    assert n.due() is None  # unchanged
    now[0] = 3.0
    assert n.due() == {NET, "iface:lan1"}
    assert n.due() == {NET, "iface:lan1"}  # until written
    n.done(frozenset({NET, "iface:lan1"}))
    assert n.due() is None

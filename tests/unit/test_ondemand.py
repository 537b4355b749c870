"""Decide on change (``ndsclust/sentinel/ondemand.py``) gives exactly what a full ``decide``
gives: over random views and random sequences of changes, each marked the way the shell
marks it (``ndsclust/sentinel/gather.py``), and over time passing their deadlines."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ndsclust.model import (
    App,
    AppState,
    AppType,
    Request,
    RequestKind,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
)
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.decide import decide
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.ondemand import Decisions, Marks, due
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.view import History, Policy, View

A, B, G = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
ALL = (A, B, G)
TAGS = tuple(Tag(t) for t in ("app0", "app1", "app2", "app3", "app4", "app5"))
POLICY = Policy(restart_window=30.0, flap_window=60.0, repeat_after=20.0)
CHANNELS = frozenset({"lan", "disk"})

servers_st = st.sampled_from(ALL)
states = st.sampled_from(
    [
        StateValue(AppState.RUNNING),
        StateValue(AppState.STOPPED),
        StateValue(AppState.LOADING),
        StateValue(AppState.FAILED, "restart limit"),
    ]
)
requests = st.one_of(
    st.none(),
    st.sampled_from(
        [
            Request(RequestKind.LOAD),
            Request(RequestKind.UNLOAD),
            Request(RequestKind.FAILBACK),
            Request(RequestKind.MIGRATE, B),
        ]
    ),
)


@st.composite
def apps_st(draw: st.DrawFn, tag: Tag) -> App:
    order = draw(st.permutations(ALL))
    n = draw(st.integers(1, 3))
    others = [t for t in TAGS if t != tag]
    links = st.lists(st.sampled_from(others), max_size=1, unique=True).map(tuple)
    return App(
        tag=tag,
        type=AppType.CAPABLE,
        command=("/bin/true",),
        primary=order[0],
        backups=tuple(order[1:n]),
        host=draw(st.one_of(st.none(), servers_st)),
        state=draw(states),
        request=draw(requests),
        auto_recover=draw(st.booleans()),
        resources=draw(st.sampled_from([frozenset(), frozenset({"db"})])),
        requires=draw(st.one_of(st.just(()), links)),
        avoids=draw(st.one_of(st.just(()), links)),
    )


@st.composite
def procs_st(draw: st.DrawFn, tag: Tag, now: float) -> ProcInfo:
    state = draw(st.sampled_from(list(ProcState)))
    restarts = tuple(sorted(draw(st.lists(st.floats(now - 40, now), max_size=3))))
    return ProcInfo(
        tag=tag,
        state=state,
        pid=None if state is ProcState.EXITED else 100,
        started_at=now - 50,
        exit_code=1 if state is ProcState.EXITED else None,
        restarts=restarts,
        paused=state is ProcState.STARTING and draw(st.booleans()),
        stop_requested=state is ProcState.EXITED and draw(st.booleans()),
    )


@st.composite
def histories_st(draw: st.DrawFn, now: float) -> History:
    failures = draw(st.lists(st.tuples(st.floats(now - 70, now), servers_st), max_size=3))
    return History(failures=tuple(sorted(failures)), seen=frozenset(s for _, s in failures))


def liveness_of(dead: frozenset[ServerName]) -> Liveness:
    seen = {s: frozenset() if s in dead else CHANNELS for s in ALL if s != A}
    return Liveness(me=A, configured=CHANNELS, seen=seen)


@st.composite
def views_st(draw: st.DrawFn, now: float) -> View:
    tags = draw(st.lists(st.sampled_from(TAGS), min_size=1, unique=True))
    apps = {t: draw(apps_st(t)) for t in tags}
    proc_tags = draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=4))
    said_tags = draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=2))
    return View(
        apps=apps,
        servers={s: Server(s, resources=frozenset({"db"}) if s != G else frozenset()) for s in ALL},
        liveness=liveness_of(draw(st.frozensets(st.sampled_from([B, G])))),
        procs={t: draw(procs_st(t, now)) for t in proc_tags},
        resources=frozenset({"db"}),
        history={t: draw(histories_st(now)) for t in draw(st.lists(st.sampled_from(TAGS)))},
        said={
            (t, EventKind.RESOURCE_MISSING, f"{A} lacks db"): draw(st.floats(now - 30, now))
            for t in said_tags
        },
    )


@st.composite
def change_st(draw: st.DrawFn, view: View, now: float) -> tuple[View, Marks]:
    """One change to ``view``, marked as the shell marks it."""
    tag = draw(st.sampled_from(TAGS))
    kind = draw(
        st.sampled_from(
            [
                "app",
                "gone",
                "proc",
                "noproc",
                "history",
                "said",
                "channel",
                "liveness",
                "flag",
                "server",
            ]
        )
    )
    one = Marks(frozenset({tag}))
    if kind == "app":
        old = view.apps.get(tag)
        new = draw(apps_st(tag))
        if old is not None and draw(st.booleans()):  # a small change: links kept
            new = replace(old, host=new.host, state=new.state, request=new.request)
        return replace(view, apps={**view.apps, tag: new}), one
    if kind == "gone":
        return replace(view, apps={t: a for t, a in view.apps.items() if t != tag}), one
    if kind == "proc":
        return replace(view, procs={**view.procs, tag: draw(procs_st(tag, now))}), one
    if kind == "noproc":
        return replace(view, procs={t: p for t, p in view.procs.items() if t != tag}), one
    if kind == "history":
        return replace(view, history={**view.history, tag: draw(histories_st(now))}), one
    if kind == "said":
        key = (tag, EventKind.RESOURCE_MISSING, f"{A} lacks db")
        return replace(view, said={**view.said, key: now}), one
    if kind == "channel":  # a live peer heard on fewer channels: still alive, no mark
        seen = {s: frozenset({"lan"}) if ch else ch for s, ch in view.liveness.seen.items()}
        return replace(view, liveness=replace(view.liveness, seen=seen)), Marks()
    if kind == "liveness":
        dead = draw(st.frozensets(st.sampled_from([B, G])))
        return replace(view, liveness=liveness_of(dead)), Marks(everything=True)
    if kind == "server":
        who = draw(servers_st)
        state = draw(st.sampled_from(list(ServerState)))
        servers = {**view.servers, who: replace(view.servers[who], state=state)}
        return replace(view, servers=servers), Marks(everything=True)
    flag = draw(st.sampled_from(["replication_caught_up", "starts_held", "paused", "fenced"]))
    flipped = replace(view, **{flag: not getattr(view, flag)})
    return flipped, Marks(everything=True)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_on_change_equals_full_decide(data: st.DataObject) -> None:
    now = 1000.0
    view = data.draw(views_st(now))
    decisions = Decisions()
    got = decisions.decide(view, A, now, POLICY, Marks(everything=True), None)
    assert got == decide(view, A, now, POLICY)
    before = view.apps
    for _ in range(data.draw(st.integers(1, 12))):
        marks = Marks()
        for _ in range(data.draw(st.integers(0, 3))):
            view, more = data.draw(change_st(view, now))
            marks = Marks(marks.tags | more.tags, marks.everything or more.everything)
        now += data.draw(st.sampled_from([0.0, 0.05, 1.0, 7.0, 25.0]))
        got = decisions.decide(view, A, now, POLICY, marks, before)
        assert got == decide(view, A, now, POLICY)
        before = view.apps


def test_unmarked_tags_are_not_decided_again() -> None:
    now = 1000.0
    apps = {
        t: App(tag=t, type=AppType.CAPABLE, command=("/bin/true",), primary=A, backups=(B,))
        for t in TAGS
    }
    view = View(apps=apps, servers={s: Server(s) for s in ALL}, liveness=liveness_of(frozenset()))
    decisions = Decisions()
    decisions.decide(view, A, now, POLICY, Marks(everything=True), None)
    assert decisions.decided == len(TAGS)
    changed = replace(view, apps={**apps, TAGS[0]: replace(apps[TAGS[0]], host=A)})
    actions = decisions.decide(changed, A, now, POLICY, Marks(frozenset({TAGS[0]})), apps)
    assert decisions.decided == 1
    assert actions == decide(changed, A, now, POLICY)
    assert decisions.decide(changed, A, now + 1, POLICY, Marks(), changed.apps) == actions
    assert decisions.decided == 0


def test_a_deadline_is_the_first_one_after_now() -> None:
    now = 1000.0
    proc = ProcInfo(Tag("app0"), ProcState.RUNNING, 1, 900.0, restarts=(980.0, 960.0))
    view = View(
        apps={},
        servers={},
        liveness=liveness_of(frozenset()),
        procs={proc.tag: proc},
        history={proc.tag: History(failures=((950.0, B),))},
    )
    # restarts count for 30 s (990, 1010), failures for 60 s (1010), said for 20 s (1015)
    assert due(view, proc.tag, now, POLICY, [995.0]) == 1010.0
    assert due(view, proc.tag, 1010.0, POLICY, [995.0]) == 1015.0
    assert due(view, proc.tag, 1015.0, POLICY, [995.0]) == float("inf")


def test_the_kept_view_marks_what_changed() -> None:
    from ndsclust.ldapstore.cache import ClusterCache
    from ndsclust.sentinel.gather import Flags, Gather

    cache = ClusterCache()
    for name in ALL:
        cache.put(
            f"s-{name}", f"cn={name},ou=servers", {"objectClass": ["ndsclustServer"], "cn": [name]}
        )
    app = {
        "objectClass": ["ndsclustApplication"],
        "ndsclustTag": ["app0"],
        "ndsclustType": ["capable"],
        "ndsclustCommand": ["/bin/true"],
        "ndsclustPrimaryServer": ["alpha"],
        "ndsclustHostServer": ["alpha"],
    }
    cache.put("u0", "ndsclustTag=app0", app)
    gather = Gather(A, cache, lambda: frozenset())
    flags = Flags(True, False, False, False, False, frozenset())
    live = liveness_of(frozenset())
    proc = ProcInfo(Tag("app0"), ProcState.RUNNING, 1, 0.0)
    view, marks = gather.update(0.0, liveness=live, procs={proc.tag: proc}, said={}, flags=flags)
    assert marks.everything and set(view.apps) == {"app0"}
    # Nothing changed: nothing is marked, and the view keeps its parts.
    again, marks = gather.update(
        0.05, liveness=live, procs={proc.tag: proc}, said=None, flags=flags
    )
    assert marks == Marks() and again.apps is view.apps
    # A new row of the process table, a changed entry, a standing condition: that tag.
    moved = replace(proc, state=ProcState.STOPPING)
    _, marks = gather.update(0.1, liveness=live, procs={proc.tag: moved}, said=None, flags=flags)
    assert marks == Marks(frozenset({Tag("app0")}))
    cache.put("u0", "ndsclustTag=app0", {**app, "ndsclustHostServer": ["beta"]})
    said = {(Tag("app1"), EventKind.RESOURCE_MISSING, "x"): 0.1}
    view, marks = gather.update(
        0.15, liveness=live, procs={proc.tag: moved}, said=said, flags=flags
    )
    assert marks == Marks(frozenset({Tag("app0"), Tag("app1")})) and view.apps["app0"].host == B
    # What every decision reads: liveness, flags.
    _, marks = gather.update(
        0.2, liveness=liveness_of(frozenset({B})), procs={proc.tag: moved}, said=None, flags=flags
    )
    assert marks.everything
    _, marks = gather.update(
        0.25,
        liveness=liveness_of(frozenset({B})),
        procs={proc.tag: moved},
        said=None,
        flags=replace(flags, starts_held=True),
    )
    assert marks.everything

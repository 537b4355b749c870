"""Decide on change: ``decide``'s answer, worked out only for what changed or came due.

``decide`` is a pure function of the view, and its actions come in independent groups,
one per tag (``decide.py``). A tag's group reads the tag's own inputs (its entry, its local
program, its moves in ``View.history``, the conditions ``View.said`` holds for it, its
invalid entry), the members of its stack and what it avoids (``stacks.py``), the part of
the view every decision reads (servers, liveness, resources, the flags) and the clock, and
only through deadlines: a hand-off counts for ``flap_window``, a restart for
``restart_window``, a standing condition is said again after ``repeat_after``
(``view.Viewpoint``). So a group computed at one instant is still the answer at a later
one as long as none of those inputs changed and no deadline passed.

``Decisions`` keeps each tag's group and when it next comes due (``due``, pure). Each call
names what changed (``Marks``); the tags marked and the tags whose deadline passed are
decided again, each with every tag it is linked to by ``ndsclustRequires`` or
``ndsclustAvoids``, and everything is decided again when what every decision reads
changed, when a link changed, and when the view is fenced. The answer is exactly what
``decide`` gives on the same view (``tests/unit/test_ondemand.py`` checks it over random
views and changes), in the same order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ndsclust.model import App, ServerName, Tag
from ndsclust.sentinel import stacks
from ndsclust.sentinel.actions import Action
from ndsclust.sentinel.decide import decide, decide_tag, tags_of
from ndsclust.sentinel.view import Policy, View, Viewpoint


@dataclass(frozen=True, slots=True)
class Marks:
    """What changed since the last call: these tags' own inputs, or (``everything``)
    something every decision reads."""

    tags: frozenset[Tag] = frozenset()
    everything: bool = False


def due(view: View, tag: Tag, now: float, policy: Policy, said: Iterable[float] = ()) -> float:
    """The first instant after ``now`` at which the clock alone may change ``tag``'s group
    (``inf``: none). ``said`` holds when each standing condition of the tag was recorded."""
    times = [t + policy.repeat_after for t in said]
    history = view.history.get(tag)
    if history is not None:
        times += [t + policy.flap_window for t, _ in history.failures]
    proc = view.procs.get(tag)
    if proc is not None:
        times += [t + policy.restart_window for t in proc.restarts]
    return min((t for t in times if t > now), default=float("inf"))


def _links(app: App) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (tuple(app.requires), tuple(app.avoids))


class Decisions:
    """``decide`` kept between calls; not thread-safe (the loop's)."""

    def __init__(self) -> None:
        self._groups: dict[Tag, list[Action]] = {}  # tags with actions only
        self._due: list[tuple[float, Tag]] = []  # heap; stale rows are skipped
        self._when: dict[Tag, float] = {}
        self._plan: stacks.Plan | None = None
        self._linked: dict[Tag, frozenset[Tag]] = {}  # tag -> the tags decided with it
        self._named: set[str] = set()  # keys of the tags some link names
        self._said: dict[Tag, list[float]] = {}
        self._said_of: object = None
        self._context: object = None
        self.decided = 0  # tags decided by the last call (for the benchmarks and tests)

    @property
    def next_due(self) -> float:
        """The first deadline of a kept group (``inf``: none)."""
        while self._due and self._when.get(self._due[0][1]) != self._due[0][0]:
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else float("inf")

    @property
    def standing(self) -> bool:
        """Some tag's group is not empty: the shell carries it out again now and then."""
        return bool(self._groups)

    def decide(
        self,
        view: View,
        me: ServerName,
        now: float,
        policy: Policy,
        marks: Marks,
        before: Mapping[Tag, App] | None = None,
    ) -> list[Action]:
        """``decide(view, me, now, policy)``. ``marks`` says what changed since the last
        call, whose ``view.apps`` is ``before`` (None: decide everything again)."""
        if view.fenced:
            self._context = None  # fenced: every program is unloaded, nothing is kept
            return decide(view, me, now, policy)
        context = (me, policy)
        self._index_said(view)
        tags: set[Tag] | None = None
        if marks.everything or context != self._context or self._plan is None or before is None:
            self._context = context
        elif not self._relinked(view, marks.tags, before):
            tags = set(marks.tags) | self._came_due(now)
        if tags is None:
            self._rebuild(view)
            tags = tags_of(view) | set(self._groups)
        else:
            tags = {linked for t in tags for linked in self._linked.get(t, (t,))}
        assert self._plan is not None
        plan = stacks.Plan(self._plan.stacks, self._plan.yields_to)
        vp = Viewpoint(view, me, now, policy)
        present = tags_of(view)
        for tag in sorted(tags):
            actions = decide_tag(vp, plan, tag) if tag in present else []
            if actions:
                self._groups[tag] = actions
            else:
                self._groups.pop(tag, None)
            when = due(view, tag, now, policy, self._said.get(tag, ()))
            if when != float("inf"):
                self._when[tag] = when
                heapq.heappush(self._due, (when, tag))
            else:
                self._when.pop(tag, None)
        self.decided = len(tags)
        return [a for tag in sorted(self._groups) for a in self._groups[tag]]

    def _came_due(self, now: float) -> set[Tag]:
        out: set[Tag] = set()
        while self._due and self._due[0][0] <= now:
            when, tag = heapq.heappop(self._due)
            if self._when.get(tag) == when:
                del self._when[tag]
                out.add(tag)
        return out

    def _index_said(self, view: View) -> None:
        if view.said is self._said_of:
            return
        self._said_of = view.said
        self._said = {}
        for (tag, _kind, _text), at in view.said.items():
            self._said.setdefault(tag, []).append(at)

    def _relinked(self, view: View, tags: frozenset[Tag], before: Mapping[Tag, App]) -> bool:
        """Whether a change to ``tags`` may change the links kept (``stacks.Plan``): which
        tags are decided together, a stack's servers and order."""
        for tag in tags:
            old, new = before.get(tag), view.apps.get(tag)
            if old is not None and new is not None:
                if _links(old) != _links(new):
                    return True
                if tag in self._linked and old.servers() != new.servers():
                    return True  # a stack runs where all its members may (stacks.Stack)
            elif old is not None or new is not None:
                came_or_went = old or new
                assert came_or_went is not None
                if any(_links(came_or_went)) or tag.lower() in self._named:
                    return True
        return False

    def _rebuild(self, view: View) -> None:
        """The links of the whole view: stacks, who avoids whom, and the groups."""
        self._plan = stacks.Plan.of(view)
        self._groups.clear()
        self._due.clear()
        self._when.clear()
        by_key = {t.lower(): t for t in view.apps}
        parent: dict[Tag, Tag] = {}

        def root(t: Tag) -> Tag:
            while parent.get(t, t) != t:
                t = parent[t]
            return t

        named: set[str] = set()
        for tag, app in view.apps.items():
            for other in (*app.requires, *app.avoids):
                named.add(other.lower())
                found = by_key.get(other.lower())
                if found is not None:
                    parent.setdefault(tag, tag)
                    parent.setdefault(found, found)
                    parent[root(found)] = root(tag)
        members: dict[Tag, set[Tag]] = {}
        for tag in parent:
            members.setdefault(root(tag), set()).add(tag)
        self._linked = {t: frozenset(group) for group in members.values() for t in group}
        self._named = named  # ndsclustTag matches case-insensitively

"""The console's hub without a directory: one pending state per browser however many
changes, events in order, a browser that stops reading dropped, not buffered."""

from __future__ import annotations

import json
from typing import Any

from ndsclust.ldapstore.follow import EventSeen
from ndsclust.ldapstore.store import Snapshot
from ndsclust.model import Event, Tag
from ndsclust.web import hub as hub_mod
from ndsclust.web.hub import STATE, Hub


class FakeFollower:
    def __init__(self) -> None:
        self.new_events: list[EventSeen] = []
        self.ready = True

    def snapshot(self) -> Snapshot:
        return Snapshot(apps={}, servers={})

    def pulse_map(self) -> dict[str, Any]:
        return {}

    def event_list(self) -> list[Event]:
        return [e.event for e in self.new_events]


def seen(i: int) -> EventSeen:
    e = Event(id=str(i), time="20261202030000Z", kind="failover", tag=Tag("web"))
    return EventSeen("cluster", f"u{i}", e, f"csn{i}", True)


def drain(q: Any) -> list[Any]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_changes_coalesce_into_one_state_and_events_keep_their_order() -> None:
    f = FakeFollower()
    h = Hub(f, wall=lambda: 0.0)  # type: ignore[arg-type]
    sub = h.subscribe()
    assert drain(sub.queue) == [STATE]
    assert json.loads(h.latest(sub))["servers"] == []
    for i in range(3):
        f.new_events.append(seen(i))
        h._publish()
    items = drain(sub.queue)
    assert items[0][0] == "event" and json.loads(items[0][1])["id"] == "0"
    assert [json.loads(d)["id"] for n, d in items if n == "event"] == ["0", "1", "2"]
    assert items.count(STATE) == 1  # one pending state, whatever the number of changes
    assert f.new_events == []  # the hub keeps no history of its own


def test_a_browser_that_stops_reading_is_dropped(monkeypatch: Any) -> None:
    monkeypatch.setattr(hub_mod, "QUEUE_LIMIT", 4)
    f = FakeFollower()
    h = Hub(f, wall=lambda: 0.0)  # type: ignore[arg-type]
    sub = h.subscribe()
    for i in range(10):
        f.new_events.append(seen(i))
        h._publish()
    assert drain(sub.queue) == [None]  # its stream ends; the page reconnects afresh
    assert sub not in h._subs

"""The console's live view: one ``Follower`` (RFC 4533 watches, no polling) and the
browsers subscribed to it.

``Hub.run`` applies what the watches deliver and, after each burst, publishes the whole
state (``state.console_state``) and every event added to the audit trail since, to each
subscriber's queue as server-sent events. A queue holds at most one "send the latest
state" (the state itself is the hub's, one copy however many browsers lag) and a bounded
number of events: a browser that stops reading loses its place (its stream ends and its
page reconnects) instead of growing the console. Pulses alone (several a second) refresh
the state at most once a second.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ndsclust.cli.common import event_json
from ndsclust.errors import NdsclustError
from ndsclust.ldapstore.follow import Follower, PulseSeen
from ndsclust.logfmt import line as logline
from ndsclust.web.state import console_state

log = logging.getLogger("ndsclust.web")

QUEUE_LIMIT = 64
STATE = ("state", "")  # queued for: send the hub's latest state
PULSE_REFRESH = 1.0  # seconds between states sent for pulses alone
BURST = 0.1  # changes arriving this close together make one state


class Subscriber:
    """One browser's event stream: ("event", JSON text) items, ("state", "") for "send the
    hub's latest state", None when it must end."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, str] | None] = queue.Queue(QUEUE_LIMIT)
        self.state_pending = False

    def end(self) -> None:
        """Empty the queue and end the stream (the page reconnects and starts afresh)."""
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.offer(None)

    def offer(self, item: tuple[str, str] | None) -> bool:
        try:
            self.queue.put_nowait(item)
            return True
        except queue.Full:
            return False


class Hub:
    def __init__(self, follower: Follower, *, wall: Callable[[], float] = time.time) -> None:
        self.follower = follower
        self._wall = wall
        self._lock = threading.Lock()
        self._subs: set[Subscriber] = set()
        self.state: str = json.dumps({"servers": [], "applications": [], "events": []})
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.follower.start()
        self._thread = threading.Thread(target=self.run, name="web-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.follower.stop()
        with self._lock:
            subs, self._subs = self._subs, set()
        for s in subs:
            s.end()

    def subscribe(self) -> Subscriber:
        """A new stream; its first item is the current state."""
        s = Subscriber()
        with self._lock:
            s.state_pending = s.offer(STATE)
            self._subs.add(s)
        return s

    def latest(self, s: Subscriber) -> str:
        """The state to send ``s`` now that it dequeued STATE."""
        with self._lock:
            s.state_pending = False
            return self.state

    def unsubscribe(self, s: Subscriber) -> None:
        with self._lock:
            self._subs.discard(s)

    def run(self) -> None:
        sent_pulses = 0.0
        while not self._stop.is_set():
            try:
                updates = self.follower.updates(0.5)
            except NdsclustError as e:  # the watches reconnect by themselves
                log.warning(logline("web_follow_failed", error=str(e)))
                self._stop.wait(1.0)
                continue
            if not updates or not self.follower.ready:
                continue
            only_pulses = all(isinstance(u, PulseSeen) for u in updates)
            now = time.monotonic()
            if only_pulses and now - sent_pulses < PULSE_REFRESH:
                continue
            self._stop.wait(BURST)  # let the rest of a burst arrive: one state for it
            self.follower.updates(0)
            sent_pulses = now
            self._publish()

    def _publish(self) -> None:
        f = self.follower
        fresh = list(f.new_events)
        del f.new_events[: len(fresh)]  # the console keeps no history of its own
        data: dict[str, Any] = console_state(
            f.snapshot(), f.pulse_map(), f.event_list(), self._wall()
        )
        text = json.dumps(data, sort_keys=True)
        items = [("event", json.dumps(event_json(e.event), sort_keys=True)) for e in fresh]
        with self._lock:
            self.state = text
            self.ready.set()
            dropped = []
            for s in self._subs:
                ok = all(s.offer(item) for item in items)
                if ok and not s.state_pending:
                    ok = s.state_pending = s.offer(STATE)
                if not ok:
                    dropped.append(s)
            for s in dropped:
                self._subs.discard(s)
        for s in dropped:
            s.end()

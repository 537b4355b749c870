"""The recorder: events to ``ou=events`` and the operators' notifier, off the main loop.

Events follow the write that made them (docs/design.md section 3): nothing decides on
them arriving, so they are written by one thread in the order they were put, several at
a time when they come together, and a lost one is logged, never retried in the loop. A
mass takeover records one event per application, all of one kind and text: those share
entries (``Store.record_events``), a few adds for a thousand applications. The notify
command runs on the same thread with a timeout.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ndsclust.errors import NdsclustError
from ndsclust.model import ServerName, Tag
from ndsclust.sentinel.actions import EventKind
from ndsclust.sentinel.logline import log_event

NOTIFY_TIMEOUT = 10.0
NO_TAG = Tag("-")


@dataclass(frozen=True, slots=True)
class Record:
    """One event to write (``notify`` False) or to tell the operators (``notify`` True)."""

    kind: EventKind
    tag: Tag
    text: str
    notify: bool = False


class EventWriter(Protocol):
    """Where events go (``Store.record_events``)."""

    def record_events(
        self, events: Sequence[tuple[str, str | None, str]], *, server: str
    ) -> None: ...


class Recorder:
    """A queue of ``Record`` and the thread that writes them; ``put`` never blocks."""

    def __init__(
        self,
        me: ServerName,
        writer: EventWriter,
        notify_command: Callable[[], Sequence[str] | None],
        *,
        batch: int = 1000,
    ) -> None:
        self.me = me
        self._writer = writer
        self._notify_command = notify_command
        self._batch = batch
        self._queue: queue.SimpleQueue[Record | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def put(self, record: Record) -> None:
        self._queue.put(record)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="sentinel-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then end the thread."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Until ``stop``: take what is queued, write its events in one go, run notifies."""
        while True:
            first = self._queue.get()
            got = [first]
            while first is not None and len(got) < self._batch:
                try:
                    got.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = None in got
            records = [r for r in got if r is not None]
            self._write([r for r in records if not r.notify])
            for r in records:
                if r.notify:
                    self._notify(r)
            if done:
                return

    def _write(self, records: list[Record]) -> None:
        if not records:
            return
        events = [(r.kind.value, None if r.tag == NO_TAG else r.tag, r.text) for r in records]
        try:
            self._writer.record_events(events, server=self.me)
        except NdsclustError as e:
            for r in records:
                log_event(
                    logging.WARNING,
                    "event_not_recorded",
                    tag=r.tag,
                    server=self.me,
                    kind=r.kind.value,
                    error=str(e),
                )

    def _notify(self, rec: Record) -> None:
        cmd = self._notify_command()
        if not cmd:
            return
        env = {
            "PATH": os.defpath,
            "NDSCLUST_EVENT": rec.kind.value,
            "NDSCLUST_TAG": rec.tag,
            "NDSCLUST_SERVER": self.me,
            "NDSCLUST_TEXT": rec.text,
        }
        try:
            done = subprocess.run(
                list(cmd),
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=NOTIFY_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                log_event(
                    logging.WARNING,
                    "notify_failed",
                    tag=rec.tag,
                    server=self.me,
                    code=done.returncode,
                    stderr=done.stderr.decode(errors="replace").strip()[:200],
                )
        except (OSError, subprocess.TimeoutExpired) as e:
            log_event(logging.WARNING, "notify_failed", tag=rec.tag, server=self.me, error=str(e))

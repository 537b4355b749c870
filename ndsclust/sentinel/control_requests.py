"""The control socket's requests: what each op of ``ndsclust.control_protocol`` does on
the sentinel's side (``ndsclust.sentinel.control``), and the state they work on.

``hello`` ties a connection to the start it belongs to (its token, from NDSCLUST_TOKEN),
``wait`` holds a paused copy until this server hosts it (FIG. 7B), ``register`` writes the
program's entry (FIG. 6 step 604, ``control_registration.py``), ``get_marker`` and
``set_marker`` read and compare-and-swap its marker (claims 34-35) with the sentinel's own
identity. ``ControlServer`` dispatches each request line to one of ``Requests.HANDLERS``:
``hello``, ``ping`` and ``wait`` on its serving thread, the rest on its workers.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ndsclust.control_protocol import (
    MAX_LINE,
    ProtocolError,
    Registration,
    RegistrationRefused,
    hello_of,
    marker_swap_of,
)
from ndsclust.errors import StoreError, SwapConflict
from ndsclust.framing import LineFramer
from ndsclust.ldapstore.store import Store
from ndsclust.model import ServerName, Tag
from ndsclust.sentinel.control_registration import write_registration


class Refusal(Exception):
    """A request answered with the error ``code``; ``extra`` goes into the answer too."""

    def __init__(self, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


@dataclass(eq=False)
class Conn:
    """One client's connection, served by ``ControlServer``'s serving thread."""

    sock: socket.socket
    pid: int  # the client's, for the log (SO_PEERCRED)
    lines: LineFramer = field(default_factory=lambda: LineFramer(MAX_LINE))
    out: bytearray = field(default_factory=bytearray)
    tag: Tag | None = None
    admission: Admission | None = None
    greeted: bool = False
    in_flight: int = 0
    closing: bool = False  # close once what is queued has been sent
    eof: bool = False  # the client sent everything it will send
    events: int = selectors.EVENT_READ  # what the selector watches for
    complained: bool = False  # a bad request was logged at WARNING already


@dataclass(eq=False)
class Admission:
    """One start of one cluster-aware program, known by its token."""

    tag: Tag
    token: str
    granted: bool
    stop_reason: str | None = None
    ended: bool = False
    conns: set[Conn] = field(default_factory=set)
    waits: list[tuple[Conn, int]] = field(default_factory=list)


# A request handler: (server, connection, request) -> the answer's fields, or None when the
# answer is queued already or comes later.
Handler = Callable[["Requests", "Conn", dict[str, object]], dict[str, object] | None]


class Requests:
    """The request handlers of ``ControlServer``, which provides what is declared here."""

    server: ServerName
    store: Store
    _lock: threading.Lock
    _by_token: dict[str, Admission]

    def _queue(self, conn: Conn, message: Mapping[str, object]) -> None:
        raise NotImplementedError

    def _event(self, level: int, event: str, **fields: object) -> None:
        raise NotImplementedError

    def _hello(self, conn: Conn, msg: dict[str, object]) -> None:
        if conn.greeted:
            raise ProtocolError("hello was said already on this connection")
        tag, token = hello_of(msg)
        with self._lock:
            adm = self._by_token.get(token) if token is not None else None
            if token is not None and adm is None:
                raise Refusal(
                    "not-supervised",
                    f"this token names no running start on {self.server}: "
                    "the start it belonged to has ended",
                )
            if adm is not None and tag is not None and tag != adm.tag:
                raise ProtocolError(f"the token belongs to {adm.tag}, not {tag}")
            conn.greeted = True
            conn.tag = adm.tag if adm is not None else tag
            conn.admission = adm
            self._queue(
                conn,
                {
                    "id": msg["id"],
                    "ok": True,
                    "server": self.server,
                    "supervised": adm is not None,
                    "tag": conn.tag,
                },
            )
            if adm is not None:
                adm.conns.add(conn)
                if adm.stop_reason is not None:
                    # Asked to unload before it said hello: it hears so right after the answer.
                    self._queue(conn, {"event": "stop", "reason": adm.stop_reason})
        return None

    def _ping(self, conn: Conn, msg: dict[str, object]) -> dict[str, object]:
        return {}

    def _wait(self, conn: Conn, msg: dict[str, object]) -> dict[str, object] | None:
        with self._lock:
            adm = conn.admission
            if adm is None:
                raise Refusal(
                    "not-supervised",
                    "only a copy the sentinel started can be granted "
                    "the start; this one was started by hand",
                )
            if adm.ended or adm.stop_reason is not None:
                raise Refusal("stopping", adm.stop_reason or "the program has ended")
            if adm.granted:
                return {"granted": True}
            rid = msg["id"]
            assert isinstance(rid, int)  # checked by _line
            adm.waits.append((conn, rid))  # answered by grant() or request_stop()
        return None

    def _register(self, conn: Conn, msg: dict[str, object]) -> dict[str, object]:
        reg = Registration.from_wire(msg.get("app"))
        adm = conn.admission
        if adm is not None and reg.tag != adm.tag:
            raise RegistrationRefused(
                reg.tag, "ndsclustTag", f"the program started as {adm.tag} registers only {adm.tag}"
            )
        result, host = write_registration(self.store, reg)
        if result != "unchanged":
            self._event(logging.INFO, "aware_register", tag=reg.tag, pid=conn.pid, result=result)
            try:
                self.store.record_event(
                    "registration",
                    server=self.server,
                    tag=reg.tag,
                    text=f"registered by the program (pid {conn.pid} on {self.server}): {result}",
                )
            except StoreError as e:
                self._event(logging.WARNING, "event_not_recorded", tag=reg.tag, error=str(e))
        return {"result": result, "host": host}

    def _get_marker(self, conn: Conn, msg: dict[str, object]) -> dict[str, object]:
        if conn.tag is None:
            raise ProtocolError("no tag: name it in hello")
        return {"marker": self.store.app(conn.tag).marker}

    def _set_marker(self, conn: Conn, msg: dict[str, object]) -> dict[str, object]:
        expected, value = marker_swap_of(msg)
        with self._lock:
            adm = conn.admission
            if adm is None:
                raise Refusal(
                    "not-supervised", "only the copy the sentinel runs may set the marker"
                )
            if adm.ended or not adm.granted:
                raise Refusal(
                    "not-granted",
                    "the start has not been granted to this copy: a "
                    "paused copy does no work and writes no marker",
                )
            tag = adm.tag
        try:
            self.store.swap_marker(tag, expected, value)
        except SwapConflict:
            current = self.store.app(tag).marker
            raise Refusal(
                "conflict",
                f"the marker is {current!r}, not {expected!r}",
                expected=expected,
                current=current,
            ) from None
        return {}

    HANDLERS: Final[Mapping[str, tuple[bool, Handler]]] = {
        # op: (answered by the serving thread, handler); directory work goes to the workers.
        "hello": (True, _hello),
        "ping": (True, _ping),
        "wait": (True, _wait),
        "register": (False, _register),
        "get_marker": (False, _get_marker),
        "set_marker": (False, _set_marker),
    }

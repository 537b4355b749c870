"""``ndsclust load|unload|migrate|failback|cleanup TAG``, ``ndsclust maintenance SERVER on|off``.

Each verb is one write to the directory, so ``ldapmodify`` can do the same: the request
goes into the application's ndsclustRequest (``load``, ``unload``, ``failback``,
``cleanup``, ``migrate:<server>``), maintenance into the server's ndsclustServerState. The sentinels act
on it (``failback`` is the operator's approval of FIG. 7B process 864-866).

With ``--wait`` the command follows the RFC 4533 watch until the sentinels acted: the
request consumed and the application where it was asked to be, or a refusal recorded in
the audit trail, or the deadline. The judgement is pure (``judge_request``,
``judge_maintenance``) so every outcome is a unit test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ndsclust.cli import common
from ndsclust.errors import EntryInvalid, NoSuchEntry
from ndsclust.ldapstore import reads
from ndsclust.ldapstore.follow import Follower
from ndsclust.ldapstore.store import Snapshot, Store
from ndsclust.model import (
    App,
    AppState,
    Event,
    Request,
    RequestKind,
    ServerName,
    ServerState,
    Tag,
    check_server_name,
)
from ndsclust.sentinel.actions import EventKind

# Events by which a sentinel says that it will not or cannot do what was asked.
REFUSALS = frozenset(
    {EventKind.REQUEST_REJECTED, EventKind.FAILED, EventKind.ERROR, EventKind.MAINTENANCE_BLOCKED}
)
BROKEN = frozenset({AppState.FAILED, AppState.ERROR})


class Outcome(Enum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    text: str


# -- pure: has it happened? ----------------------------------------------------------------


def target_reached(app: App, request: Request) -> bool:
    """Is the application where the request asked it to be?"""
    running = app.state.state is AppState.RUNNING
    if request.kind is RequestKind.LOAD:
        return app.host is not None and running
    if request.kind is RequestKind.UNLOAD:
        return app.host is None and app.state.state is AppState.STOPPED
    if request.kind is RequestKind.MIGRATE:
        return app.host == request.target and running
    if request.kind is RequestKind.CLEANUP:
        return True  # consumed is done: the counts are cleared (a restart may follow)
    return app.host == app.primary and running


def describe(app: App) -> str:
    where = f"on {app.host}" if app.host else "unloaded"
    return f"{app.state} {where}" + (f", request {app.request} pending" if app.request else "")


def judge_request(
    before: App, request: Request, written_csn: str, snap: Snapshot, events: Sequence[Event]
) -> Verdict:
    """Where a request stands, from the watched snapshot and the events recorded since.

    ``written_csn`` is the entry's entryCSN read back right after the request was written:
    a copy older than that does not show the request yet, whatever it holds."""
    tag = before.tag
    app = snap.apps.get(tag)
    if app is None:
        bad = next((e for e in snap.invalid if e.dn.lower() == before.dn.lower()), None)
        if bad is not None:
            return Verdict(
                Outcome.FAILED,
                f"the entry became invalid and the sentinels ignore "
                f"it: {bad.attribute}: {bad.problem}",
            )
        return Verdict(Outcome.PENDING, "the entry is not in the watched directory")
    for e in events:
        if e.tag == tag and e.kind in REFUSALS:
            return Verdict(
                Outcome.FAILED,
                f"{e.server or 'a sentinel'} recorded {e.kind}: {e.text or '(no text)'}",
            )
    if app.csn < written_csn:
        return Verdict(Outcome.PENDING, "waiting for the directory to show the request")
    if app.request == request:
        return Verdict(Outcome.PENDING, f"request {request} not taken yet ({describe(app)})")
    if app.request is not None:
        return Verdict(Outcome.FAILED, f"another request replaced it: {app.request}")
    ignored = next(
        (e for e in events if e.tag == tag and e.kind == EventKind.REQUEST_IGNORED), None
    )
    if ignored is not None and request.kind in (RequestKind.FAILBACK, RequestKind.MIGRATE):
        # The operator's move was not made: where the application ends up by itself later
        # (an automatic failback) is not this request's doing.
        return Verdict(
            Outcome.FAILED,
            f"{ignored.server or 'a sentinel'} ignored the request: "
            f"{ignored.text or '(no text)'} (now {describe(app)})",
        )
    if target_reached(app, request):
        where = f"running on {app.host}" if app.host else "unloaded, stopped"
        return Verdict(Outcome.DONE, where)
    for e in events:
        if e.tag == tag and e.kind == EventKind.REQUEST_IGNORED:
            return Verdict(
                Outcome.FAILED,
                f"{e.server or 'a sentinel'} ignored the request: "
                f"{e.text or '(no text)'} (now {describe(app)})",
            )
    if app.state.state in BROKEN and app.state != before.state:
        return Verdict(
            Outcome.FAILED,
            f"the application is {app.state}" + (f" on {app.host}" if app.host else ""),
        )
    return Verdict(Outcome.PENDING, describe(app))


def judge_maintenance(
    server: ServerName,
    on: bool,
    moving: frozenset[Tag],
    written_csn: str,
    snap: Snapshot,
    events: Sequence[Event],
) -> Verdict:
    """Maintenance on: done when every application that ``server`` hosted runs elsewhere
    (or was unloaded). Off: done when the directory shows the server up."""
    s = snap.servers.get(server)
    if s is None:
        return Verdict(Outcome.PENDING, f"{server} is not in the watched directory")
    if s.csn < written_csn:
        return Verdict(Outcome.PENDING, "waiting for the directory to show the new state")
    wanted = ServerState.MAINTENANCE if on else ServerState.UP
    if s.state is not wanted:
        return Verdict(Outcome.FAILED, f"someone set {server} to {s.state.value} meanwhile")
    if not on:
        return Verdict(
            Outcome.DONE,
            f"{server} is up; applications whose primary it is "
            "come back by their auto-recover setting",
        )
    for e in events:
        if e.tag in moving and e.kind in REFUSALS:
            return Verdict(
                Outcome.FAILED,
                f"{e.tag}: {e.server or 'a sentinel'} recorded {e.kind}: {e.text or '(no text)'}",
            )
    waiting = []
    for tag in sorted(moving):
        app = snap.apps.get(tag)
        if app is None or app.host is None:
            continue
        if app.host == server or app.state.state is not AppState.RUNNING:
            waiting.append(f"{tag} {describe(app)}")
    if waiting:
        return Verdict(Outcome.PENDING, "moving: " + "; ".join(waiting))
    moved = ", ".join(
        f"{t}->{a.host}" for t in sorted(moving) if (a := snap.apps.get(t)) is not None and a.host
    )
    return Verdict(
        Outcome.DONE,
        f"{server} is in maintenance" + (f"; moved {moved}" if moved else "; it hosted nothing"),
    )


# -- shell -------------------------------------------------------------------------------


def _follow(
    f: Follower,
    judge: Callable[[Sequence[Event]], Verdict],
    written_csn: str,
    timeout: float,
    subject: str,
) -> int:
    """Wait for a final verdict; print the outcome. 0 done, 1 failed or timed out."""
    began = time.monotonic()
    deadline = began + timeout
    shown = ""
    while True:
        events = f.fresh_events(written_csn)
        verdict = judge(events)
        if verdict.outcome is Outcome.DONE:
            print(f"{subject}: {verdict.text} ({time.monotonic() - began:.1f}s)")
            return 0
        if verdict.outcome is Outcome.FAILED:
            print(f"ndsclust: {subject}: {verdict.text}", file=sys.stderr)
            return 1
        if sys.stdout.isatty() and verdict.text != shown:
            print(f"  {subject}: {verdict.text}", flush=True)
            shown = verdict.text
        left = deadline - time.monotonic()
        if left <= 0:
            print(
                f"ndsclust: {subject}: the sentinels did not act within {timeout:g}s: "
                f"{verdict.text}. Is a sentinel running? See 'ndsclust status' and "
                f"'ndsclust events'. The request stays in the directory until a sentinel "
                "takes it.",
                file=sys.stderr,
            )
            return 1
        f.wait_change(left)


def _valid_app(snap: Snapshot, st: Store, tag: str) -> App:
    app = snap.apps.get(Tag(tag))
    if app is not None:
        return app
    dn = st.app_dn(tag).lower()
    bad = next((e for e in snap.invalid if e.dn.lower() == dn), None)
    if bad is not None:
        raise EntryInvalid(
            bad.dn,
            bad.attribute,
            f"{bad.problem}; the sentinels ignore this "
            "entry until it is fixed ('ndsclust app edit')",
        )
    known = ", ".join(sorted(snap.apps)) or "none"
    raise NoSuchEntry(f"no application with tag {tag!r} under {st.apps_dn} (known: {known})")


def known_server(snap: Snapshot, name: str) -> ServerName:
    if name in snap.servers:
        return ServerName(name)
    hint = ""
    try:
        check_server_name(name)
    except ValueError as e:
        hint = f" ({e})"
    known = ", ".join(sorted(snap.servers)) or "none"
    raise NoSuchEntry(f"unknown server {name!r}{hint}; known servers: {known}")


Judge = Callable[[Snapshot, Sequence[Event], str], Verdict]


def _act(
    args: argparse.Namespace,
    st: Store,
    subject: str,
    write: Callable[[], str],
    audit: Callable[[], None],
    judge: Judge,
    written: str,
) -> int:
    """``write`` the operator's change (it returns the DN written), record it, and with
    --wait follow the directory until ``judge`` gives a final verdict on the snapshot, the
    events recorded since and the entryCSN the write left."""
    follower: Follower | None = None
    try:
        if common.want_wait(args):
            follower = Follower(st)
            follower.start()
            follower.wait_ready(args.connect_timeout)
        csn = reads.entry_csn(st, write())
        audit()
        if follower is None:
            print(written)
            return 0
        fol = follower
        return _follow(
            fol, lambda events: judge(fol.snapshot(), events, csn), csn, args.timeout, subject
        )
    finally:
        if follower is not None:
            follower.stop()


def request_verb(args: argparse.Namespace, make: Callable[[Snapshot], Request]) -> int:
    st = common.store(args)
    try:
        snap = st.snapshot()
        app = _valid_app(snap, st, args.tag)
        request = make(snap)
        if app.request is not None and app.request != request:
            print(f"{app.tag}: replacing the pending request {app.request}", file=sys.stderr)

        def write() -> str:
            st.set_request(app.tag, request)
            return app.dn

        return _act(
            args,
            st,
            app.tag,
            write,
            lambda: common.audit(
                st, f"request_{request.kind.value}", tag=app.tag, text=f"request={request}"
            ),
            lambda snap, events, csn: judge_request(app, request, csn, snap, events),
            f"{app.tag}: request {request} written; 'ndsclust status --watch' shows "
            "when the sentinels act",
        )
    finally:
        st.close()


def cmd_load(args: argparse.Namespace) -> int:
    return request_verb(args, lambda snap: Request(RequestKind.LOAD))


def cmd_unload(args: argparse.Namespace) -> int:
    return request_verb(args, lambda snap: Request(RequestKind.UNLOAD))


def cmd_failback(args: argparse.Namespace) -> int:
    return request_verb(args, lambda snap: Request(RequestKind.FAILBACK))


def cmd_cleanup(args: argparse.Namespace) -> int:
    return request_verb(args, lambda snap: Request(RequestKind.CLEANUP))


def migrate_request(snap: Snapshot, tag: str, server: str) -> Request:
    """``migrate:<server>`` for a known server; warns when the server lacks a resource the
    application needs (the sentinels then refuse, FIG. 7A: sufficient resources)."""
    name = known_server(snap, server)
    app = snap.apps.get(Tag(tag))
    if app is not None:
        missing = sorted(app.resources - snap.servers[name].resources)
        if missing:
            print(
                f"ndsclust: warning: {name} does not publish {', '.join(missing)}, which "
                f"{tag} needs: its sentinel will refuse unless it offers them",
                file=sys.stderr,
            )
    return Request(RequestKind.MIGRATE, name)


def cmd_migrate(args: argparse.Namespace) -> int:
    return request_verb(args, lambda snap: migrate_request(snap, args.tag, args.server))


def cmd_maintenance(args: argparse.Namespace) -> int:
    on = args.mode == "on"
    st = common.store(args)
    try:
        snap = st.snapshot()
        name = known_server(snap, args.server)
        moving = frozenset(a.tag for a in snap.apps.values() if a.host == name)

        def write() -> str:
            st.set_server_state(name, ServerState.MAINTENANCE if on else ServerState.UP)
            return st.server_dn(name)

        return _act(
            args,
            st,
            name,
            write,
            lambda: common.audit(
                st,
                "maintenance_on" if on else "maintenance_off",
                server=name,
                text=f"server={name}",
            ),
            lambda snap, events, csn: judge_maintenance(name, on, moving, csn, snap, events),
            f"{name}: maintenance {args.mode} written"
            + (f"; the sentinels move {', '.join(sorted(moving))} away" if on and moving else ""),
        )
    finally:
        st.close()


def register(sub: Any) -> None:
    verbs = (
        (
            "load",
            cmd_load,
            "start an unloaded application",
            "Ask the sentinels to load the application: its primary takes it when alive, else "
            "the first live backup with every resource it needs. Writes ndsclustRequest: load.",
        ),
        (
            "unload",
            cmd_unload,
            "stop an application and leave it unloaded",
            "Ask the sentinels to stop the application; it stays unloaded (no host) until "
            "someone loads it. Writes ndsclustRequest: unload.",
        ),
        (
            "failback",
            cmd_failback,
            "approve the return to the primary (awaiting-failback)",
            "Approve failback (FIG. 7B): the backup unloads the application and its primary "
            "takes it. Needed when auto-recover is off. Writes ndsclustRequest: failback.",
        ),
        (
            "cleanup",
            cmd_cleanup,
            "forget the failure counts; start again what was given up",
            "Like pcs resource cleanup: the sentinels forget the application's program "
            "failures (restarts in place, the servers it kept failing on, flap damping); "
            "one given up as failed(...) or error(...) starts again on its host, and a "
            "failback held by those failures may go ahead. Writes ndsclustRequest: cleanup.",
        ),
    )
    tag = ("tag", {"help": "the application's tag"})
    for name, handler, short, long in verbs:
        _verb(sub, name, handler, short, long, [tag])
    _verb(
        sub,
        "migrate",
        cmd_migrate,
        "move an application to a named server",
        "Ask the sentinels to move the application to SERVER: the host unloads it, then "
        "SERVER loads it. SERVER must be in ou=servers. Writes ndsclustRequest: migrate:SERVER.",
        [tag, ("server", {"help": "the server to move it to"})],
    )
    _verb(
        sub,
        "maintenance",
        cmd_maintenance,
        "take a server out of service, or back",
        "on: the sentinels move every application off SERVER and none moves onto it. off: "
        "SERVER takes part again. Writes ndsclustServerState (maintenance or up).",
        [("server", {"help": "the server's name"}), ("mode", {"choices": ("on", "off")})],
        timeout=60.0,
    )


def _verb(
    sub: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    short: str,
    long: str,
    positionals: Sequence[tuple[str, dict[str, Any]]],
    timeout: float = 30.0,
) -> None:
    p = sub.add_parser(name, help=short, description=long)
    for arg, options in positionals:
        p.add_argument(arg, **options)
    common.add_wait_options(p, default_timeout=timeout)
    p.set_defaults(handler=handler)

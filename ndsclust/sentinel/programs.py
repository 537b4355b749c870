"""The local programs as the shell drives them: the supervisor (and its lease guard) and,
for cluster-aware programs, the control socket, behind one lock.

``start`` loads a program or resumes its paused copy (FIG. 7B), ``unload`` begins a stop,
``poll`` collects what ended, ``check_health`` runs the health commands that are due. The
keeper renews the lease and fences through the same object (``renew_leases``,
``stop_all``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from ndsclust.config import Programs as ProgramsConfig
from ndsclust.config import Supervision
from ndsclust.errors import SupervisorError
from ndsclust.model import App, AppType, ServerName, Tag
from ndsclust.sentinel import address
from ndsclust.sentinel.control import ControlServer
from ndsclust.sentinel.logline import log_event
from ndsclust.sentinel.procs import ProcInfo, ProcState
from ndsclust.sentinel.supervisor import Supervisor


class LocalPrograms:
    """This server's programs; thread-safe."""

    def __init__(
        self,
        me: ServerName,
        supervisor: Supervisor,
        control: ControlServer | None,
        *,
        programs: Callable[[], ProgramsConfig],
        supervision: Callable[[], Supervision],
        stop_grace: float,
    ) -> None:
        self.me = me
        self.supervisor = supervisor
        self.control = control
        self._programs = programs
        self._supervision = supervision
        self._stop_grace = stop_grace
        self._lock = threading.RLock()
        self._health_due: dict[Tag, float] = {}

    def table(self) -> Mapping[Tag, ProcInfo]:
        with self._lock:
            return dict(self.supervisor.table())

    def poll(self) -> list[ProcInfo]:
        """The programs that ended since the last call (the supervisor logged each end once,
        ``program_exited``)."""
        with self._lock:
            ended = list(self.supervisor.poll())
            for info in ended:
                address.released(info.tag)  # stacks: gone before the core sees it stopped
                if self.control:
                    self.control.ended(info.tag)
                if info.stop_requested:
                    # An unload that finished is no failure: a later load is a fresh start,
                    # not a restart that counts against claim 57's budget.
                    self.supervisor.forget(info.tag)
        return ended

    def renew_leases(self) -> None:
        with self._lock:
            self.supervisor.renew_leases()

    def stop_all(self, grace: float) -> None:
        with self._lock:
            self.supervisor.stop_all(grace)

    def close(self) -> None:
        with self._lock:
            self.supervisor.stop_all(0.0)
            self.supervisor.close()

    def unload(self, tag: Tag, reason: str) -> None:
        if self.control:
            # A cluster-aware program hears it on its socket (and, like any, by SIGTERM).
            self.control.request_stop(tag, reason)
        with self._lock:
            self.supervisor.stop(tag, self._stop_grace)
        log_event(logging.INFO, "unload", tag=tag, server=self.me, reason=reason)

    def start(self, app: App, proc: ProcInfo | None, *, paused: bool) -> None:
        tag = app.tag
        cfg = self._programs()
        with self._lock:
            if proc is not None and proc.paused and not paused:
                self.supervisor.resume(tag)
                if self.control:
                    # FIG. 7B: the host names this server; the paused copy, loaded and
                    # blocked in wait_until_host, continues now.
                    self.control.grant(tag)
                log_event(logging.INFO, "resume", tag=tag, server=self.me)
                return
            refusal = refusal_of(app, cfg, self.me, has_control=self.control is not None)
            if refusal is not None:
                # Not an error of the sentinel's: a program that cannot start here. The row
                # shows it exited (refused), so the core hands it on or shows error(reason).
                self.supervisor.refuse(tag, refusal)
                return
            env = dict(cfg.env)
            aware = app.type is AppType.AWARE
            if aware and self.control is not None:
                # A cluster-aware program loads at once, paused or not; a paused one waits in
                # wait_until_host until grant() (claims 17-24: paused in the program itself).
                env["NDSCLUST_TOKEN"] = self.control.admit(tag, granted=not paused)
            argv, unload, user = app.command, app.unload_command, cfg.user
            if app.addresses:
                # Stacks: the address holder adds the service addresses around the program
                # and runs it as the configured user (ndsclust/sentinel/address.py).
                argv, unload = address.wrap(tag, app.addresses, argv, unload, user)
                user = None
            try:
                self.supervisor.start(
                    tag,
                    argv,
                    paused=paused,
                    gated=aware,
                    user=user,
                    cwd=cfg.cwd,
                    env=env,
                    unload_argv=unload,
                )
            except SupervisorError:
                if self.control:
                    self.control.ended(tag)
                raise

    def check_health(
        self, apps: Mapping[Tag, App], procs: Mapping[Tag, ProcInfo], now: float
    ) -> None:
        """Start the health commands that are due for the programs running here."""
        sv = self._supervision()
        for tag, proc in procs.items():
            app = apps.get(tag)
            if (
                app is None
                or app.health_command is None
                or app.host != self.me
                or proc.state is not ProcState.RUNNING
            ):
                continue
            if now < self._health_due.get(tag, 0.0):
                continue
            self._health_due[tag] = now + sv.health_interval
            argv = app.health_command
            if app.addresses:  # stacks: run as the program's user, not the holder's
                argv = address.health(argv, self._programs().user)
            with self._lock:
                self.supervisor.check_health(tag, argv, sv.health_timeout)


def refusal_of(app: App, cfg: ProgramsConfig, me: ServerName, *, has_control: bool) -> str | None:
    """Why this server will not start ``app``'s program and what would let it, or None.
    The decision core adds the release (``ndsclust cleanup``) when it gives up."""
    program = app.command[0]
    if cfg.allowed_commands and program not in cfg.allowed_commands:
        return (
            f"{program} is not in programs.allowed_commands of server {me}: add it there "
            "or fix ndsclustCommand"
        )
    if app.type is AppType.AWARE and not has_control:
        return (
            f"{app.tag} is cluster-aware and server {me} has no control socket: set "
            "control_socket in its sentinel configuration"
        )
    return None

"""``doctor``'s fencing check (pure): the health of every fence device the sentinel
configuration names, and the fence records that hold takeovers back (docs/design.md
section 4, "Fencing other servers"). What it is given is read by
``ndsclust.cli.fence_cmd.doctor_findings``: each device's ``action=monitor`` answer, every
fence record, the servers of the directory."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ndsclust.doctor.findings import Finding, Level
from ndsclust.fencing.agent import Result
from ndsclust.fencing.config import Fencing
from ndsclust.fencing.record import FenceState, Phase
from ndsclust.model import ServerName

CHECK = "fencing"


def check_fencing(
    fencing: Fencing | None,
    monitors: Mapping[tuple[ServerName, int], Result],
    records: Mapping[str, FenceState | None],
    servers: Collection[ServerName],
    me: ServerName | None = None,
    secret_modes: Mapping[str, int | None] | None = None,
) -> list[Finding]:
    """``monitors[(server, level)]``: that device's answer to ``action=monitor`` (levels
    count from 1); ``records``: each fence record's state (None: unreadable);
    ``secret_modes``: the permission bits of each secret file (None: not stat'able)."""
    out: list[Finding] = []
    for path, mode in sorted((secret_modes or {}).items()):
        if mode is not None and mode & 0o077:
            out.append(
                Finding(
                    CHECK,
                    Level.WARNING,
                    path,
                    f"a fence secret file is readable by others (mode {mode:04o})",
                    f"chmod 0600 {path}",
                )
            )
    for (server, level), r in sorted(monitors.items()):
        subject = f"{server} level {level}"
        if r.ok:
            out.append(Finding(CHECK, Level.OK, subject, f"{r.summary()}: the device answers"))
        else:
            out.append(
                Finding(
                    CHECK,
                    Level.PROBLEM,
                    subject,
                    f"{r.summary()}: the device does not answer",
                    f"check the fence device's address, credentials and the network path to "
                    f"it; a takeover from {server} starts nothing until one of its levels works",
                )
            )
    if fencing is not None and fencing.required:
        for server in sorted(servers):
            if server != me and not fencing.levels(server):
                out.append(
                    Finding(
                        CHECK,
                        Level.WARNING,
                        server,
                        "fencing.required is set and no fence device is configured for it: "
                        "a takeover from it waits for an operator",
                        f"add its levels to fencing.servers.{server}, or be ready to run "
                        f"ndsclust fence --confirm-off {server}",
                    )
                )
    for name, st in sorted(records.items()):
        if st is None:
            out.append(
                Finding(
                    CHECK,
                    Level.PROBLEM,
                    name,
                    "its fence record is unreadable: it counts as owed",
                    f"ndsclust fence {name}, or once it is off: ndsclust fence --confirm-off "
                    f"{name}",
                )
            )
        elif st.phase in (Phase.OWED, Phase.FAILED):
            out.append(
                Finding(
                    CHECK,
                    Level.PROBLEM,
                    name,
                    f"a fence is {st.phase.value} (by {st.by}, {st.attempts} attempt(s)): "
                    "nothing it may still run starts anywhere",
                    f"ndsclust fence --list shows why; ndsclust fence {name}, or once it "
                    f"is off: ndsclust fence --confirm-off {name}",
                )
            )
        elif st.phase is Phase.FENCING:
            out.append(Finding(CHECK, Level.WARNING, name, f"{st.by} is fencing it now"))
    return out

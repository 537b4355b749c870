"""Live: nothing stays down because of bookkeeping, and every hold says why.

Real sentinels and programs in the lab. A server is given a broken program environment by
restarting its sentinel on an edited configuration (``reconfigure``): a working directory
that is removed once the sentinel runs (a directory the guide names that no step
created) or an allow-list without the program."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.model import AppState, ServerName
from tests.e2e.test_ldapmodify import ldapmodify

LabFactory = Callable[..., LabCluster]
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


def reconfigure(c: LabCluster, name: ServerName, **programs: Any) -> None:
    """Restart ``name``'s sentinel (SIGTERM, then start) with ``programs`` settings changed,
    and wait until it follows the directory again."""
    server = c.servers[name]
    c.stop_sentinel(name)
    cfg = c.sentinel_config(server)
    cfg["programs"].update(programs)
    server.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    ready = f"event=directory_ready server={name}".encode()
    before = server.log_path.read_bytes().count(ready)
    c.start_sentinel(name)
    wait_until(
        lambda: server.log_path.read_bytes().count(ready) > before,
        timeout=60,
        what=f"{name}'s sentinel following the directory again",
    )


def modify(c: LabCluster, tag: str, attribute: str, *values: str) -> None:
    lines = "".join(f"{attribute}: {v}\n" for v in values)
    ldapmodify(
        c,
        f"dn: ndsclustTag={tag},ou=applications,ou=ndsclust,{c.directory.suffix}\n"
        f"changetype: modify\nreplace: {attribute}\n{lines}",
    )


def raw_state(c: LabCluster, tag: str) -> str:
    """ndsclustState as the directory holds it, even when the entry is invalid."""
    found = c.store().app_entry(tag)
    assert found is not None
    attrs = {k.lower(): v for k, v in found[2].items()}
    values = attrs.get("ndscluststate") or [""]
    raw = values[0]
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def events(c: LabCluster, tag: str, kind: str) -> list[Any]:
    return [e for e in c.store().events(tag=tag) if e.kind == kind]


def test_blocker1_a_program_that_cannot_start_tries_each_server_then_cleanup_brings_it_home(
    lab: LabFactory,
) -> None:
    c = lab(3)
    work = c.servers[A].dir / "work"
    work.mkdir()
    reconfigure(c, A, cwd=str(work))
    reconfigure(c, B, allowed_commands=["/bin/true"])
    work.rmdir()  # the guide's programs.cwd that no step created
    c.add_app("web", A, [B, C])
    c.add_app("solo", B, [])
    # alpha cannot start it (4 tries: claim 57), beta refuses it (no retry), gamma runs it.
    c.wait_running("web", C, timeout=90)
    handoffs = events(c, "web", "handoff")
    assert [(e.server, e.text.split(":")[0]) for e in handoffs] == [
        (A, "handoff to beta"),
        (B, "handoff to gamma"),
    ], [e.text for e in handoffs]
    assert "could not start: working directory" in handoffs[0].text
    assert "refused: " in handoffs[1].text and "programs.allowed_commands" in handoffs[1].text
    assert not events(c, "web", "flap_damped")
    # It kept failing on the primary: the failback is held, and the state says so.
    wait_until(
        lambda: "failback held" in c.app("web").state.reason,
        timeout=30,
        what="web shows running(failback held ...)",
    )
    assert c.app("web").state.state is AppState.RUNNING
    assert "ndsclust cleanup web" in c.app("web").state.reason
    wait_until(lambda: events(c, "web", "failback_held"), timeout=20, what="failback_held event")
    # A program refused where it alone may run is error(reason), not loading.
    wait_until(
        lambda: c.app("solo").state.state is AppState.ERROR,
        timeout=30,
        what=f"solo in error (now {c.app('solo').state})",
    )
    assert "programs.allowed_commands" in c.app("solo").state.reason
    # The operator creates the directory and cleans up, with ldapmodify: home to alpha.
    work.mkdir()
    modify(c, "web", "ndsclustRequest", "cleanup")
    c.wait_running("web", A, timeout=60)
    wait_until(
        lambda: c.app("web").state.state is AppState.RUNNING and c.app("web").host == A,
        timeout=20,
        what="web running on alpha in the directory",
    )
    assert c.app("web").request is None
    wait_until(lambda: events(c, "web", "cleanup"), timeout=20, what="the cleanup event")


def test_blocker2_after_start_up_handoffs_host_failures_never_keep_it_down(
    lab: LabFactory,
) -> None:
    # Start-up hand-offs (alpha's programs.cwd missing), fixed and cleaned up, then four
    # SIGKILLs of the host within the flap window: the third move used to leave the
    # auto-recover application failed(flapping ...) on the dead host, and nothing
    # documented cleared it.
    c = lab(3)
    work = c.servers[A].dir / "work"
    work.mkdir()
    reconfigure(c, A, cwd=str(work))
    work.rmdir()
    c.add_app("web", A, [B, C], auto_recover=True)
    c.wait_running("web", B, timeout=60)
    assert [e.server for e in events(c, "web", "handoff")] == [A]
    work.mkdir()
    modify(c, "web", "ndsclustRequest", "cleanup")
    c.wait_running("web", A, timeout=60)
    for _ in range(4):
        c.kill_server(A)
        c.wait_running("web", B, timeout=40)
        c.restart_server(A)
        c.wait_running("web", A, timeout=60)
    assert not events(c, "web", "flap_damped")
    assert len(events(c, "web", "failover")) >= 4
    wait_until(
        lambda: c.app("web").state.state is AppState.RUNNING,
        timeout=20,
        what="web running in the directory",
    )


def test_point10_an_invalid_edit_keeps_the_program_running_and_says_so(
    lab: LabFactory,
) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    starts = len([ln for ln in c.ledger_lines() if " web start " in ln])
    command = " ".join(c.sample_command("web"))
    modify(c, "web", "ndsclustCommand", "sample --serve")  # a relative command
    wait_until(
        lambda: raw_state(c, "web").startswith("error(invalid edit: ndsclustCommand"),
        timeout=30,
        what=f"the error shown on the entry (now {raw_state(c, 'web')})",
    )
    wait_until(lambda: events(c, "web", "error"), timeout=20, what="an error event for web")
    modify(c, "web", "ndsclustBackupServer", "beta", "delta")  # an unknown backup
    modify(c, "web", "ndsclustCommand", command)
    wait_until(
        lambda: raw_state(c, "web").startswith("error(invalid edit: ndsclustBackupServer"),
        timeout=30,
        what=f"the second error shown (now {raw_state(c, 'web')})",
    )
    assert c.running_on("web") == {A}
    modify(c, "web", "ndsclustBackupServer", "beta", "gamma")
    wait_until(
        lambda: c.app("web").state.state is AppState.RUNNING,
        timeout=30,
        what="web running again once its entry is valid",
    )
    assert c.running_on("web") == {A}
    assert len([ln for ln in c.ledger_lines() if " web start " in ln]) == starts
    # An entry every sentinel ignores from the start is said, once, by one server.
    ldapmodify(
        c,
        f"dn: ndsclustTag=typo,ou=applications,ou=ndsclust,{c.directory.suffix}\n"
        "changetype: add\nobjectClass: ndsclustApplication\nndsclustTag: typo\n"
        "ndsclustType: capable\nndsclustCommand: myapp\nndsclustPrimaryServer: alpha\n",
    )
    wait_until(
        lambda: len(events(c, "typo", "invalid_entry")) == 1,
        timeout=30,
        what="one invalid_entry event for typo",
    )

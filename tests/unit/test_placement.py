"""Placement outside the decision core: a program refused by the allow-list, a working
directory that does not exist, the cleanup request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ndsclust import config
from ndsclust.cli import main
from ndsclust.cli.request_cmd import Outcome, judge_request
from ndsclust.cli.status_cmd import state_cell
from ndsclust.config import Programs
from ndsclust.errors import ConfigError
from ndsclust.ldapstore.store import Snapshot
from ndsclust.model import (
    App,
    AppState,
    AppType,
    Request,
    RequestKind,
    Server,
    ServerName,
    StateValue,
    Tag,
)
from ndsclust.sentinel.decide import decide
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.procs import ProcState
from ndsclust.sentinel.programs import refusal_of
from ndsclust.sentinel.supervisor import Supervisor
from ndsclust.sentinel.view import View

A, B = ServerName("alpha"), ServerName("beta")
WEB = Tag("web")


def web(**over: Any) -> App:
    fields: dict[str, Any] = {
        "tag": WEB,
        "type": AppType.CAPABLE,
        "command": ("/usr/bin/web", "--serve"),
        "primary": A,
        "backups": (B,),
        "host": A,
        "state": StateValue(AppState.LOADING),
        "dn": "ndsclustTag=web,ou=applications,ou=t,dc=x",
    }
    fields.update(over)
    return App(**fields)


def test_allow_list_refusal_says_what_releases_it() -> None:
    cfg = Programs(allowed_commands=("/usr/bin/other",))
    why = refusal_of(web(), cfg, A, has_control=True)
    assert why is not None
    assert "/usr/bin/web is not in programs.allowed_commands of server alpha" in why
    assert why.endswith("add it there or fix ndsclustCommand")
    assert (
        refusal_of(web(), Programs(allowed_commands=("/usr/bin/web",)), A, has_control=True) is None
    )
    assert refusal_of(web(), Programs(), A, has_control=True) is None
    aware = web(type=AppType.AWARE)
    assert "no control socket" in (refusal_of(aware, Programs(), A, has_control=False) or "")


def test_a_refused_start_is_a_row_that_exited_not_one_still_loading() -> None:
    # A refusal used to raise and leave no row: the core saw nothing running,
    # loaded again, and the entry showed loading forever.
    clock = iter([10.0, 20.0])
    sup = Supervisor(A, lease_timeout=1.0, start_guard=False, clock=lambda: next(clock))
    info = sup.refuse(WEB, "not allowed")
    assert info.state is ProcState.EXITED and info.failed and info.refused
    assert info.reason == "refused: not allowed"
    assert [p.tag for p in sup.poll()] == [WEB]
    again = sup.refuse(WEB, "not allowed")
    assert again.restarts == (20.0,)
    # The core does not restart it in place (trying again cannot help): it hands it on.
    view = View(
        apps={WEB: web()},
        servers={A: Server(A), B: Server(B)},
        liveness=Liveness(me=A, configured=frozenset({"lan"}), seen={B: frozenset({"lan"})}),
        procs={WEB: info},
    )
    out = decide(view, A, 100.0)
    assert type(out[0]).__name__ == "Release" and "refused: not allowed" in str(out[0])
    sup.close()


def test_blocker1_a_missing_program_directory_is_a_configuration_error(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    key.write_bytes(b"k" * 32)
    data: dict[str, Any] = {
        "server": "alpha",
        "directory": {"uris": ["ldaps://127.0.0.1:3890"], "suffix": "dc=example,dc=com"},
        "channels": {"lan": {"addresses": ["127.0.0.1:7946"], "key_file": str(key)}},
        "timeouts": {"failover": 0.8, "fence": 0.5, "lease": 0.5},
        "programs": {"cwd": str(tmp_path / "var-lib-ndsclust")},
    }
    with pytest.raises(ConfigError) as err:
        config.parse(data)
    text = str(err.value)
    assert f"programs.cwd: {tmp_path}/var-lib-ndsclust is not a directory on this server" in text
    assert "install -d" in text
    data["programs"]["cwd"] = "relative"
    with pytest.raises(ConfigError, match=r"programs\.cwd: 'relative' is not an absolute path"):
        config.parse(data)
    (tmp_path / "var-lib-ndsclust").mkdir()
    data["programs"]["cwd"] = str(tmp_path / "var-lib-ndsclust")
    assert config.parse(data).programs.cwd == str(tmp_path / "var-lib-ndsclust")


def test_cleanup_is_a_request_ldapmodify_can_write_and_done_once_consumed() -> None:
    cleanup = Request.parse("cleanup")
    assert cleanup.kind is RequestKind.CLEANUP and str(cleanup) == "cleanup"
    given_up = web(state=StateValue(AppState.FAILED, "given up"), csn="2")
    snap = Snapshot({WEB: web(state=given_up.state, request=cleanup, csn="3")}, {}, ())
    assert judge_request(given_up, cleanup, "3", snap, []).outcome is Outcome.PENDING
    snap = Snapshot({WEB: web(state=StateValue(AppState.LOADING), csn="4")}, {}, ())
    assert judge_request(given_up, cleanup, "3", snap, []).outcome is Outcome.DONE


def test_blocker1_doctor_config_reports_the_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Blocker 1 found ``ndsclust doctor --config`` reporting 0 problems for this file.
    key = tmp_path / "cluster.key"
    key.write_bytes(b"k" * 32)
    path = tmp_path / "sentinel.yaml"
    path.write_text(
        "server: alpha\n"
        "directory: {uris: ['ldaps://127.0.0.1:3890'], suffix: 'dc=example,dc=com'}\n"
        f"channels: {{lan: {{addresses: ['127.0.0.1:7946'], key_file: {key}}}}}\n"
        "timeouts: {failover: 0.8, fence: 0.5, lease: 0.5}\n"
        f"programs: {{cwd: {tmp_path}/missing}}\n"
    )
    assert main(["--config", str(path), "doctor"]) == 2
    err = capsys.readouterr().err
    assert f"programs.cwd: {tmp_path}/missing is not a directory on this server" in err


def test_status_says_how_to_release_a_migrate_pin() -> None:
    row = {"tag": "web", "state": "running(migrate)", "host": "beta", "primary": "alpha"}
    assert state_cell(row) == "running(migrate): stays; back with ndsclust failback web"
    assert state_cell({**row, "host": "alpha"}) == "running(migrate)"
    held = "running(failback held: the program kept failing on alpha; ndsclust cleanup web)"
    assert state_cell({**row, "state": held}) == held

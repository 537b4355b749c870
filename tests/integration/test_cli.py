"""The operator CLI against the real 3-provider test directory (never a mock).

Most commands run in-process through ``ndsclust.cli.main`` (fast); the ones whose process
behaviour matters (exit code 3, a live ``--watch``/``--follow`` stream, interactive
prompts on a terminal) run as ``python -m ndsclust`` subprocesses. Each test works under
its own cluster base (``--base``), and every refusal is checked by reading the directory
afterwards: bad input writes nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import pytest

from ndsclust.cli import main
from ndsclust.lab.directory import DirectoryCluster, wait_until
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.store import Store
from ndsclust.model import (
    App,
    AppState,
    AppType,
    Request,
    RequestKind,
    Server,
    ServerName,
    ServerState,
    StateValue,
    Tag,
)

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
PROC_TIMEOUT = 30


@dataclass
class Cli:
    """One test's cluster base, its global options, and a store to check the directory."""

    store: Store
    options: list[str]
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            rc = main([*self.options, *argv])
        except SystemExit as e:  # argparse: usage errors and --help
            rc = int(e.code or 0)
        out, err = self.capsys.readouterr()
        return rc, out, err

    def json(self, *argv: str) -> Any:
        rc, out, err = self(*argv, "--json")
        assert rc == 0, err
        return json.loads(out)

    def spawn(self, *argv: str, stdin: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "ndsclust", *self.options, *argv],
            text=True,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def raw(self, dn: str) -> dict[str, list[bytes]]:
        found = self.store.search(dn, "(objectClass=*)", scope=ldap3.BASE, attributes=["*"])
        return found[0][1] if found else {}


@pytest.fixture
def cli(
    directory: DirectoryCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cli]:
    base = f"ou=c{uuid.uuid4().hex[:8]},{directory.suffix}"
    pw = tmp_path / "pw"
    pw.write_text(directory.admin_password)
    creds = directory.admin_credentials()
    st = Store(
        Providers(directory.uris, creds, timeout=2),
        directory.suffix,
        base=base,
        pulse_base=directory.pulse_suffix,
    )
    st.ensure_base()
    st.add_server(Server(A, ("127.0.0.1:7101",), frozenset({"san1"})))
    st.add_server(Server(B, ("127.0.0.1:7102",)))
    st.add_server(Server(C, ("127.0.0.1:7103",), frozenset({"san1"})))
    options = [opt for uri in directory.uris for opt in ("--uri", uri)]
    # The bare directory cluster speaks plain LDAP, which the CLI refuses unless allowed.
    options += [
        "--allow-plain-ldap",
        "-D",
        directory.admin_dn,
        "-y",
        str(pw),
        "--suffix",
        directory.suffix,
        "--pulse-suffix",
        directory.pulse_suffix,
        "--base",
        base,
    ]
    try:
        yield Cli(st, options, capsys)
    finally:
        st.close()


def add_web(cli: Cli, host: ServerName | None = A, request: Request | None = None) -> App:
    app = App(
        Tag("web"),
        AppType.CAPABLE,
        ("/bin/sleep", "1000"),
        A,
        (B, C),
        host=host,
        resources=frozenset({"san1"}),
        state=StateValue(AppState.RUNNING),
        request=request,
    )
    cli.store.add_app(app)
    return cli.store.app("web")


class Sentinel(threading.Thread):
    """Plays a sentinel in the background: ``act`` runs once; ``finish`` re-raises its error."""

    def __init__(self, act: Callable[[], None]) -> None:
        super().__init__(name="fake-sentinel")
        self.act = act
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.act()
        except BaseException as e:  # reported by finish() in the test's thread
            self.error = e

    def finish(self) -> None:
        self.join(15)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error


def on_request(cli: Cli, tag: str, request: Request, act: Callable[[Store, App], None]) -> Sentinel:
    """A sentinel that waits for ``request`` on ``tag``, then does ``act``."""

    def run() -> None:
        wait_until(
            lambda: cli.store.app(tag).request == request,
            timeout=10,
            what=f"request {request} on {tag}",
        )
        act(cli.store, cli.store.app(tag))

    return Sentinel(run)


# -- servers -------------------------------------------------------------------------------


def test_servers_list_add_remove(cli: Cli) -> None:
    add_web(cli)
    rc, out, err = cli(
        "servers",
        "add",
        "delta",
        "--address",
        "127.0.0.1:7104",
        "--address",
        "127.0.0.2:7104",
        "--resource",
        "san2",
    )
    assert rc == 0, err
    listed = {s["name"]: s for s in cli.json("servers", "list")}
    assert set(listed) == {"alpha", "beta", "delta", "gamma"}
    assert listed["delta"]["addresses"] == ["127.0.0.1:7104", "127.0.0.2:7104"]
    assert listed["delta"]["resources"] == ["san2"] and listed["delta"]["entry_state"] == "up"
    # no sentinel runs on delta: nobody hears it and it publishes no pulse
    assert listed["delta"]["state"] == "down"
    assert listed["alpha"]["hosting"] == ["web"] and listed["beta"]["backup_for"] == ["web"]

    rc, _, err = cli("servers", "add", "delta")
    assert rc == 1 and "already exists" in err
    rc, _, err = cli("servers", "add", "epsilon", "--address", "10.0.0.300:1")
    assert rc == 2 and "ndsclustAddress (--address): '10.0.0.300:1' is not an address" in err
    assert cli.raw(cli.store.server_dn("epsilon")) == {}

    rc, _, err = cli("servers", "remove", "beta")
    assert rc == 1 and "still named by" in err and "ndsclustBackupServer" in err
    assert cli.raw(cli.store.server_dn("beta"))
    rc, _, err = cli("servers", "remove", "zeta")
    assert rc == 1 and "no server 'zeta'" in err
    rc, out, err = cli("servers", "remove", "delta")
    assert rc == 0 and out.strip() == "delta: removed"
    assert cli.raw(cli.store.server_dn("delta")) == {}


# -- app add / show / edit / remove --------------------------------------------------------


def test_app_add_show_edit_remove(cli: Cli) -> None:
    rc, out, err = cli(
        "app",
        "add",
        "--tag",
        "web",
        "--command",
        "/bin/sleep 1000",
        "--primary",
        "alpha",
        "--backup",
        "beta",
        "--backup",
        "gamma",
        "--resource",
        "san1",
        "--no-auto-recover",
    )
    assert rc == 0, err
    assert out.strip() == "web: added, loading on alpha"
    app = cli.store.app("web")
    assert app.host == A and app.state.state is AppState.LOADING
    assert app.backups == (B, C) and app.resources == {"san1"} and not app.auto_recover

    shown = cli.json("app", "show", "web")
    assert shown == {
        "tag": "web",
        "type": "capable",
        "host": "alpha",
        "primary": "alpha",
        "backups": ["beta", "gamma"],
        "state": "loading",
        "request": None,
        "auto_recover": False,
        "resources": ["san1"],
        "command": "/bin/sleep 1000",
        "unload_command": None,
        "health_command": None,
        "marker": None,
        "dn": app.dn,
        "requires": [],
        "avoids": [],
        "service_addresses": [],
        "last_event": shown["last_event"],
    }
    assert shown["last_event"]["kind"] == "app_add"

    rc, out, err = cli(
        "app",
        "edit",
        "web",
        "--set",
        "backups=gamma,beta",
        "--set",
        "ndsclustAutoRecover=yes",
        "--set",
        "health-command=/bin/true",
    )
    assert rc == 0, err
    assert "web: backups: beta,gamma -> gamma,beta" in out
    app = cli.store.app("web")
    assert app.backups == (C, B) and app.auto_recover and app.health_command == ("/bin/true",)

    rc, _, err = cli("app", "remove", "web")
    assert rc == 1 and "hosted on alpha: unload it first" in err
    assert cli.store.app("web").tag == "web"
    rc, out, _ = cli("app", "remove", "web", "--force")
    assert rc == 0 and out.strip() == "web: removed"
    assert cli.raw(cli.store.app_dn("web")) == {}

    rc, out, err = cli(
        "app", "add", "--tag", "batch", "--command", "/bin/true", "--primary", "beta", "--no-load"
    )
    assert rc == 0 and "not loaded" in out, err
    idle = cli.store.app("batch")
    assert idle.host is None and idle.state.state is AppState.STOPPED
    rc, out, _ = cli("app", "remove", "batch")
    assert rc == 0


def test_bad_app_input_writes_nothing(cli: Cli) -> None:
    rc, _, err = cli(
        "app",
        "add",
        "--tag",
        "web",
        "--command",
        "sleep 1000",
        "--primary",
        "alpha",
        "--backup",
        "Beta",
    )
    assert rc == 2
    assert "ndsclustCommand (--command): program 'sleep' is not an absolute path" in err
    assert "ndsclustBackupServer (--backup): 'Beta' is not a server name" in err
    rc, _, err = cli("app", "add", "--tag", "web", "--command", "/bin/true", "--primary", "zeta")
    assert rc == 1 and "ndsclustPrimaryServer (--primary): names unknown server 'zeta'" in err
    assert "known servers: alpha, beta, gamma" in err
    assert cli.raw(cli.store.app_dn("web")) == {}

    before = add_web(cli)
    rc, _, err = cli("app", "add", "--tag", "web", "--command", "/bin/true", "--primary", "beta")
    assert rc == 1 and "'web' already exists" in err
    rc, _, err = cli("app", "edit", "web", "--set", "backups=beta,zeta")
    assert rc == 1 and "unknown server 'zeta'" in err
    rc, _, err = cli("app", "edit", "web", "--set", "type=server", "--set", "colour=red")
    assert rc == 2 and "'server' is not an application type" in err and "'colour'" in err
    rc, _, err = cli("app", "edit", "web", "--set", "primary=beta")
    assert rc == 2 and "names the primary server 'beta'" in err
    rc, _, err = cli("app", "show", "nope")
    assert rc == 1 and "no application with tag 'nope'" in err
    assert cli.store.app("web") == before  # same values, same entryCSN


def test_interactive_add_prompts_for_every_attribute(cli: Cli) -> None:
    """FIG. 6 step 604: on a terminal the operator is asked for each attribute value."""
    master, slave = os.openpty()
    try:
        proc = cli.spawn("app", "add", stdin=slave)
    finally:
        os.close(slave)
    try:
        # tag, type, command (first one invalid), unload, health, primary, backups,
        # resources, auto-recover, start now?, add?
        answers = [
            "web",
            "",
            "sleep 1",
            "/bin/sleep 1000",
            "",
            "",
            "alpha",
            "gamma,beta",
            "san1",
            "no",
            "y",
            "y",
        ]
        os.write(master, ("\n".join(answers) + "\n").encode())
        out, err = proc.communicate(timeout=PROC_TIMEOUT)
    finally:
        proc.kill()
        proc.communicate()
        os.close(master)
    assert proc.returncode == 0, err
    assert "Primary server (normally runs it) (one of alpha, beta, gamma)" in out
    assert "ndsclustCommand: program 'sleep' is not an absolute path" in out
    assert out.rstrip().endswith("web: added, loading on alpha")
    app = cli.store.app("web")
    assert app.backups == (C, B) and app.command == ("/bin/sleep", "1000")
    assert not app.auto_recover and app.resources == {"san1"}


# -- status --------------------------------------------------------------------------------


def test_status_json_text_and_invalid_entries(cli: Cli) -> None:
    add_web(cli)
    cli.store.write_pulse(A, 7)
    cli.store.add(
        cli.store.app_dn("broken"),
        {
            "objectClass": ["top", "ndsclustApplication"],
            "ndsclustTag": ["broken"],
            "ndsclustType": ["capable"],
            "ndsclustCommand": ["relative/path"],
            "ndsclustPrimaryServer": ["alpha"],
        },
    )
    data = cli.json("status")
    assert isinstance(data, dict) and set(data) == {"servers", "applications", "invalid", "pause"}
    servers = {s["name"]: s for s in data["servers"]}
    assert servers["alpha"]["pulse"]["counter"] >= 7 and servers["alpha"]["pulse_fresh"]
    assert servers["alpha"]["seen"] == ["directory"] and servers["alpha"]["hosting"] == ["web"]
    [web] = data["applications"]
    assert (web["tag"], web["host"], web["primary"], web["backups"], web["state"]) == (
        "web",
        "alpha",
        "alpha",
        ["beta", "gamma"],
        "running",
    )
    [bad] = data["invalid"]
    assert bad["dn"] == cli.store.app_dn("broken") and bad["attribute"] == "ndsclustCommand"
    assert "not an absolute path" in bad["problem"]

    rc, out, _ = cli("status")
    lines = out.splitlines()
    assert rc == 0 and lines[0] == "server\tstate\tseen\tpulse_age\thosting\treason"
    assert lines[1].startswith("alpha\tup\tdirectory\t")
    assert "tag\ttype\thost\tprimary\tbackups\tstate\trequest\tlast_event\tstack" in lines
    assert "web\tcapable\talpha\talpha\tbeta,gamma\trunning\t-\t-\t-" in lines


def test_status_watch_follows_changes(cli: Cli) -> None:
    add_web(cli)
    proc = cli.spawn("status", "--watch", "--json", "--count", "2", "--timeout", "20")
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["applications"][0]["state"] == "running"
        cli.store.swap_host(Tag("web"), A, B, state=StateValue(AppState.LOADING))
        second = json.loads(proc.stdout.readline())
        assert proc.wait(PROC_TIMEOUT) == 0
    finally:
        proc.kill()
        proc.communicate()
    web = second["applications"][0]
    assert (web["host"], web["state"]) == ("beta", "loading")


# -- request verbs -------------------------------------------------------------------------


def test_requests_are_written_without_wait(cli: Cli) -> None:
    add_web(cli)
    for argv, want in (
        (["unload", "web"], "unload"),
        (["load", "web"], "load"),
        (["failback", "web"], "failback"),
        (["cleanup", "web"], "cleanup"),
        (["migrate", "web", "gamma"], "migrate:gamma"),
    ):
        rc, out, err = cli(*argv, "--no-wait")
        assert rc == 0, err
        assert out.startswith(f"web: request {want} written")
        assert cli.raw(cli.store.app_dn("web"))["ndsclustRequest"] == [want.encode()]
    rc, _, err = cli("migrate", "web", "zeta", "--no-wait")
    assert rc == 1 and "unknown server 'zeta'; known servers: alpha, beta, gamma" in err
    rc, _, err = cli("load", "nope", "--no-wait")
    assert rc == 1 and "no application with tag 'nope'" in err
    assert cli.store.app("web").request == Request(RequestKind.MIGRATE, C)
    kinds = [e.kind for e in cli.store.events(tag="web")]
    assert kinds == [
        "request_unload",
        "request_load",
        "request_failback",
        "request_cleanup",
        "request_migrate",
    ]


def test_wait_times_out_when_no_sentinel_acts(cli: Cli) -> None:
    add_web(cli)
    rc, _, err = cli("migrate", "web", "beta", "--wait", "--timeout", "0.5")
    assert rc == 1
    assert "the sentinels did not act within 0.5s" in err and "migrate:beta" in err


def test_wait_reports_success_when_the_sentinel_acts(cli: Cli) -> None:
    add_web(cli)
    request = Request(RequestKind.MIGRATE, C)

    def migrate(st: Store, app: App) -> None:
        st.consume_request("web", request)
        st.swap_host(Tag("web"), A, C, state=StateValue(AppState.RUNNING))

    sentinel = on_request(cli, "web", request, migrate)
    rc, out, err = cli("migrate", "web", "gamma", "--wait", "--timeout", "20")
    sentinel.finish()
    assert rc == 0, err
    assert out.startswith("web: running on gamma (")


def test_wait_reports_the_sentinels_refusal(cli: Cli) -> None:
    add_web(cli)
    request = Request(RequestKind.MIGRATE, B)

    def refuse(st: Store, app: App) -> None:
        st.record_event(
            "request_rejected", server="beta", tag="web", text="beta lacks resource san1"
        )
        st.consume_request("web", request)

    sentinel = on_request(cli, "web", request, refuse)
    rc, _, err = cli("migrate", "web", "beta", "--wait", "--timeout", "20")
    sentinel.finish()
    assert rc == 1
    assert "beta does not publish san1" in err  # warned before writing
    assert "beta recorded request_rejected: beta lacks resource san1" in err


def test_maintenance_on_waits_for_the_move_then_off(cli: Cli) -> None:
    add_web(cli)

    def move() -> None:
        wait_until(
            lambda: cli.store.servers()[0][A].state is ServerState.MAINTENANCE,
            timeout=10,
            what="alpha in maintenance",
        )
        cli.store.swap_host(Tag("web"), A, B, state=StateValue(AppState.RUNNING))

    sentinel = Sentinel(move)
    rc, out, err = cli("maintenance", "alpha", "on", "--wait", "--timeout", "20")
    sentinel.finish()
    assert rc == 0, err
    assert out.startswith("alpha: alpha is in maintenance; moved web->beta")
    rc, out, err = cli("maintenance", "alpha", "off", "--no-wait")
    assert rc == 0 and cli.store.servers()[0][A].state is ServerState.UP
    rc, _, err = cli("maintenance", "zeta", "on", "--no-wait")
    assert rc == 1 and "unknown server 'zeta'" in err
    rc, _, err = cli("maintenance", "alpha", "sideways")
    assert rc == 2 and "invalid choice" in err


# -- events --------------------------------------------------------------------------------


def test_events_list_filter_and_limit(cli: Cli) -> None:
    add_web(cli)
    cli.store.record_event("failover", server="beta", tag="web", text="alpha died")
    cli.store.record_event("fenced", server="gamma")
    events = cli.json("events")
    assert isinstance(events, list) and [e["kind"] for e in events] == ["failover", "fenced"]
    assert set(events[0]) == {"id", "time", "kind", "server", "tag", "text"}
    assert events[0]["server"] == "beta" and events[0]["text"] == "alpha died"
    assert [e["kind"] for e in cli.json("events", "--tag", "web")] == ["failover"]
    assert [e["kind"] for e in cli.json("events", "--limit", "1")] == ["fenced"]


def test_events_follow_prints_new_events(cli: Cli) -> None:
    proc = cli.spawn("events", "--follow", "--tag", "web", "--count", "1", "--timeout", "20")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "time\tkind\tserver\ttag\ttext\n"  # following now
        cli.store.record_event("fenced", server="gamma")  # another tag: not shown
        cli.store.record_event("failover", server="beta", tag="web", text="alpha died")
        out, err = proc.communicate(timeout=PROC_TIMEOUT)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 0, err
    [line] = out.splitlines()
    assert line.split("\t")[1:] == ["failover", "beta", "web", "alpha died"]


# -- doctor --------------------------------------------------------------------------------


def test_doctor_healthy_then_invalid_entry(cli: Cli) -> None:
    add_web(cli)
    for n, name in enumerate((A, B, C)):
        cli.store.write_pulse(name, n + 1)
    rc, out, _err = cli("doctor", "--json")
    report = json.loads(out)
    assert rc == 0, report
    by_check: dict[str, list[dict[str, str]]] = {}
    for f in report["findings"]:
        assert set(f) == {"check", "level", "subject", "message", "fix"}
        by_check.setdefault(f["check"], []).append(f)
    assert {f["level"] for f in by_check["pulse"]} == {"ok"}
    assert {f["level"] for f in by_check["replication"]} == {"ok"}
    assert {f["level"] for f in by_check["convergence"]} == {"ok"}
    # The test's bind is no cn=config manager: a warning, and the version from the subschema.
    # A bind that cannot read cn=config gets the version from the subschema, no warning.
    assert not any(f["level"] == "warning" for f in by_check["schema"])
    assert any(f["level"] == "ok" and "(subschema)" in f["message"] for f in by_check["schema"])
    assert report["problems"] == 0

    cli.store.add(
        cli.store.app_dn("db"),
        {
            "objectClass": ["top", "ndsclustApplication"],
            "ndsclustTag": ["db"],
            "ndsclustType": ["sometimes"],
            "ndsclustCommand": ["/bin/true"],
            "ndsclustPrimaryServer": ["alpha"],
        },
    )
    rc, out, _ = cli("doctor")
    assert rc == 1
    line = next(ln for ln in out.splitlines() if ln.startswith("problem\tentry\t"))
    assert cli.store.app_dn("db") in line and "ndsclustType: 'sometimes'" in line
    assert "replace: ndsclustType" in line
    assert out.splitlines()[-1].startswith("doctor: 1 problem,")


# -- process-level behaviour ---------------------------------------------------------------


def test_unreachable_provider_exits_3_and_writes_nothing(
    cli: Cli, directory: DirectoryCluster
) -> None:
    add_web(cli)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        options = [o for o in cli.options if not o.startswith("ldap://") and o != "--uri"]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ndsclust",
                "--uri",
                f"ldap://127.0.0.1:{port}",
                "--connect-timeout",
                "0.5",
                *options,
                "unload",
                "web",
                "--no-wait",
            ],
            capture_output=True,
            text=True,
            timeout=PROC_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    assert proc.returncode == 3, proc.stderr
    assert "no provider" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr
    assert cli.store.app("web").request is None


def test_every_verb_has_help(cli: Cli) -> None:
    verbs = [
        ["status"],
        ["servers"],
        ["servers", "add"],
        ["servers", "remove"],
        ["app", "add"],
        ["app", "show"],
        ["app", "edit"],
        ["app", "remove"],
        ["load"],
        ["unload"],
        ["migrate"],
        ["failback"],
        ["maintenance"],
        ["events"],
        ["doctor"],
    ]
    for verb in verbs:
        rc, out, _ = cli(*verb, "--help")
        assert rc == 0 and out.startswith("usage: ndsclust"), verb
        assert len(out.splitlines()) > 4, verb


def test_pause_and_resume_write_one_attribute_on_the_cluster_base(cli: Cli) -> None:
    rc, out, err = cli("pause", "--for", "15m", "--reason", "upgrading slapd")
    assert rc == 0, err
    [value] = cli.raw(cli.store.base)["ndsclustPause"]
    until, reason = value.decode().split(" ", 1)
    assert reason == "upgrading slapd" and until.endswith("Z") and len(until) == 15
    rc, out, _ = cli("status")
    assert out.splitlines()[0].startswith("PAUSED until ") and "upgrading slapd" in out
    assert cli.json("status")["pause"]["reason"] == "upgrading slapd"
    assert [e.kind for e in cli.store.events()][-1:] == ["pause"]
    rc, out, _ = cli("resume")
    assert rc == 0 and "ndsclustPause" not in cli.raw(cli.store.base)
    assert cli.json("status")["pause"] is None
    assert cli("resume")[2].strip() == "not paused"
    # What ldapmodify would write: no expiry.
    cli.store.modify(cli.store.base, {"ndsclustPause": [(ldap3.MODIFY_REPLACE, ["- by hand"])]})
    assert cli("status")[1].startswith("PAUSED until 'ndsclust resume': by hand")
    assert cli("pause", "--for", "soon")[0] == 2

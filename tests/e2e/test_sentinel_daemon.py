"""The sentinel as a service: systemd readiness, SIGTERM hand-off, SIGHUP reload, bad
configuration, and no false failover under heavy CPU load."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.model import AppState, ServerName

LabFactory = Callable[..., LabCluster]
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


def test_notify_readiness_and_sigterm_hands_programs_to_the_backup(
    lab: LabFactory, tmp_path: Path
) -> None:
    c = lab(2)
    c.add_app("web", B, [A])
    c.wait_running("web", B)
    c.stop_sentinel(B)  # SIGTERM: beta hands web to alpha
    c.wait_running("web", A)
    assert c.app("web").host == A
    # Start beta's sentinel again by hand, as systemd would, with a notify socket.
    sock_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(sock_path)
    notify.settimeout(20)
    srv = c.servers[B]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ndsclust", "sentinel", "run", "--config", str(srv.config_path)],
        env={**os.environ, "NOTIFY_SOCKET": sock_path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert notify.recv(100) == b"READY=1"
        # web failed back to its primary beta (auto-recover) once beta was back.
        c.wait_running("web", B, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(100) == b"STOPPING=1"
        assert proc.wait(timeout=30) == 0
        c.wait_running("web", A, timeout=30)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "event=sentinel_stopping server=beta" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        notify.close()


def test_sighup_reloads_and_reports_what_needs_a_restart(lab: LabFactory) -> None:
    c = lab(2)
    srv = c.servers[A]
    # Signal handlers are installed before the sentinel starts its watches.
    wait_until(
        lambda: "event=directory_ready server=alpha" in c.log_tail("alpha"),
        timeout=20,
        what="alpha's sentinel ready",
    )
    cfg = yaml.safe_load(srv.config_path.read_text())
    cfg["resources"] = ["san9"]
    cfg["timeouts"]["failover"] = 5.0
    srv.config_path.write_text(yaml.safe_dump(cfg))
    assert srv.pid is not None
    os.kill(srv.pid, signal.SIGHUP)
    wait_until(
        lambda: (
            "event=reloaded server=alpha needs_restart=" in c.log_tail("alpha")
            and "timeouts" in c.log_tail("alpha")
        ),
        timeout=10,
        what="reload logged",
    )


def test_bad_configuration_exits_2_naming_every_key(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text(
        "server: Alpha\ndirectory: {uris: [http://x], suffix: dc=x}\n"
        "channels: {lan: {addresses: ['10.0.0.300:1']}}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "ndsclust", "sentinel", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    for needle in (
        "server: 'Alpha' is not a server name",
        "directory.uris[0]",
        "channels.lan.addresses[0]",
        "channels.lan.key_file: is missing",
    ):
        assert needle in out.stderr, out.stderr


def test_no_false_failover_under_heavy_cpu_load(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            assert c.running_on("web") == {A}
            time.sleep(0.5)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert c.app("web").host == A and c.app("web").state.state is AppState.RUNNING
    assert not [e for e in c.store().events(tag="web") if e.kind in ("failover", "fenced")]


def test_notify_command_hears_of_every_failover(lab: LabFactory, tmp_path: Path) -> None:
    c = lab(2)
    c.add_app("web", A, [B])
    c.wait_running("web", A)
    heard = tmp_path / "notified"
    for srv in c.servers.values():
        wait_until(
            lambda: "event=directory_ready" in c.log_tail(srv.name),
            timeout=20,
            what=f"{srv.name} ready",
        )
        cfg = yaml.safe_load(srv.config_path.read_text())
        cfg["notify"] = {
            "command": [
                "/bin/sh",
                "-c",
                f'echo "$NDSCLUST_EVENT $NDSCLUST_TAG $NDSCLUST_SERVER" >> {heard}',
            ]
        }
        srv.config_path.write_text(yaml.safe_dump(cfg))
        assert srv.pid is not None
        os.kill(srv.pid, signal.SIGHUP)
        wait_until(lambda: "event=reloaded" in c.log_tail(srv.name), timeout=10, what="reloaded")
    c.kill_server(A)
    c.wait_running("web", B)
    wait_until(
        lambda: heard.exists() and "failover web beta" in heard.read_text(),
        timeout=10,
        what="the notify command ran for the failover",
    )

"""A console for a lab cluster (``ndsclust lab up``, the browser test): ``ndsclust web`` as
a process of its own, reading the lab's directory as the lab's admin, on a free loopback
port. Its URL, pid and log are what ``lab.json`` records under ``console``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.provider import die_with, free_ports, wait_until


@dataclass
class LabConsole:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_console(lab: LabCluster, *, die_with_parent: bool = True) -> LabConsole:
    """Start the console of ``lab``; returns once it listens."""
    d = lab.directory
    base = lab.base_dir
    url_file, log_path = base / "console.url", base / "console.log"
    url_file.unlink(missing_ok=True)
    port = free_ports(["127.0.0.1"])[0]
    argv = [sys.executable, "-m", "ndsclust"]
    for uri in d.uris:
        argv += ["--uri", uri]
    argv += ["--suffix", d.suffix, "--pulse-suffix", d.pulse_suffix, "--bind-dn", d.admin_dn]
    argv += ["--password-file", str(base / "admin.pw")]
    if d.ca_file:
        argv += ["--ca-file", d.ca_file]
    argv += ["web", "--listen", f"127.0.0.1:{port}", "--url-file", str(url_file)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=str(base),
            env={k: v for k, v in os.environ.items() if not k.startswith("NDSCLUST_")},
            preexec_fn=die_with(os.getpid()) if die_with_parent else None,
            start_new_session=True,
        )
    console = LabConsole(process, "", log_path)
    try:
        wait_until(
            lambda: url_file.exists() or process.poll() is not None,
            timeout=30,
            what="the console to listen",
        )
        if process.poll() is not None:
            raise RuntimeError(f"the console exited: {log_path.read_text()[-2000:]}")
    except BaseException:
        console.stop()
        raise
    console.url = url_file.read_text().strip()
    lab.state_extra["console"] = {"url": console.url, "pid": process.pid, "log": str(log_path)}
    lab.save_state()
    return console

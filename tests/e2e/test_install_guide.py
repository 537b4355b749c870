"""deploy/INSTALL.md as written: its labelled command blocks, read from the file, build three
servers (network namespaces, each with its own provider and sentinel, the example
configuration's timings), then the cluster is operated and broken as an operator would.

Checks: the first application runs; SIGKILL of a server moves its applications and the
auto-recover one comes back when the server returns; ``servers list --json`` shows the dead
server ``down``; a migrate sticks and runs; ``ndsclust doctor`` (the guide's command) exits 0
with nothing to fix, and so does ``ndsclust --uri ldapi:/// -Y doctor``, which checks every
provider.

The blocks run as INSTALL.md says ("How to read the commands"): ``sh each`` on every server
in turn, ``sh once`` on alpha, ``sh safe`` in a scratch directory of this test (the CA's
machine), ``sh operator`` as alice on alpha, ``sh check`` line by line. These substitutions,
and only these, stand between the guide and a real installation:

1. A server is a network namespace (``tools/netns.py``) with a mount namespace of its own per
   command: a private copy of /etc, and private /var/lib, /run, /root, /opt and
   /usr/local/bin bind-mounted over the machine's, so the guide's paths are used unchanged.
   ``ldapN.example.com`` resolve (its /etc/hosts) to the servers' dir addresses, and
   ``HEARTBEAT`` is the server's lan address.
2. Step 1's ``apt-get``, ``python3 -m venv`` and ``pip install`` lines are not run: the
   packages are installed and /opt/ndsclust is this checkout's virtualenv; /path/to/ndsclust
   is this checkout.
3. No systemd: ``systemctl stop slapd`` stops the server's slapd; ``systemctl start slapd``
   runs slapd as Debian's init script does (``slapd -h "$SLAPD_SERVICES" -u openldap -g
   openldap -F /etc/ldap/slapd.d`` with /etc/default/slapd); ``systemctl daemon-reload`` does
   nothing; ``systemctl enable --now ndsclust-sentinel`` runs the unit file's ExecStart in
   the background (with its RuntimeDirectory and Environment); journalctl is not run.
4. Copies between machines: what ``copy=`` names, the CA's files to /root/tls/ as step 2
   says, and alice's password file to her ``~/.ndsclust.pw`` (/root on alpha).
5. The ``# edit:`` line of step 7: server, local_uri, bind_dn and channels.lan.addresses
   are set for the server; channels.disk, channels.witness, fencing, http and notify are
   removed (no shared disk, witness, power switch, scraper or mail here). Every other setting, the timings included, is the
   example's.
6. /usr/local/bin/billing-server is ``ndsclust/lab/sample_app.py``, writing a ledger.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.netns import IP, NetLab

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "deploy" / "INSTALL.md"
UNIT = REPO / "deploy" / "ndsclust-sentinel.service"
SERVERS = ("alpha", "beta", "gamma")
PROVIDERS = {s: f"ldap{i + 1}.example.com" for i, s in enumerate(SERVERS)}
BASE = "ou=ndsclust,dc=example,dc=com"
# Private per server, bind-mounted over the machine's (substitution 1).
PRIVATE = {"/var/lib": "varlib", "/run": "run", "/root": "root", "/opt": "opt"}
PRIVATE_BIN = "usrlocalbin"
STEP = 180.0  # seconds one block may take on a loaded machine
OUTCOME = 240.0  # seconds a failover, failback or migrate may take here
STICK = 10.0  # seconds a migrated application must stay where it was put
SKIPPED = ("apt-get install", "python3 -m venv", "/opt/ndsclust/bin/pip install")
PRELUDE = """
ndsclust_stop_slapd() {
  [ -s /run/slapd/slapd.pid ] || return 0
  pid=$(cat /run/slapd/slapd.pid); kill "$pid" 2>/dev/null || return 0
  n=0; while kill -0 "$pid" 2>/dev/null && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done
}
ndsclust_start_slapd() {
  . /etc/default/slapd
  slapd -h "$SLAPD_SERVICES" -u "${SLAPD_USER:-openldap}" -g "${SLAPD_GROUP:-openldap}" \\
    -F /etc/ldap/slapd.d
}
"""
BILLING = """#!/bin/sh
[ "$1" = --shutdown ] && exit 0
exec /usr/bin/python3 {app} --ledger {ledger} --tag billing --server {server} --tick 0.5
"""


def interpreter_under_root() -> list[tuple[Path, Path]]:
    """The Python installation the virtualenv runs on, when it is under /root: (where it
    is, its path below /root)."""
    base = Path(sys.base_prefix).resolve()
    if not base.is_relative_to("/root"):
        return []
    top = Path("/root") / base.relative_to("/root").parts[0]
    return [(top, top.relative_to("/root"))]


@dataclass(frozen=True)
class Block:
    lang: str
    label: str  # each, once, safe, operator, check; "" for examples
    options: dict[str, str]
    text: str


def guide_blocks() -> list[Block]:
    """Every fenced block of INSTALL.md with its language and label."""
    out = []
    for m in re.finditer(r"^```(\w+)([^\n]*)\n(.*?)^```$", GUIDE.read_text(), re.M | re.S):
        words = m.group(2).split()
        label = words[0] if words and "=" not in words[0] else ""
        options = dict(w.split("=", 1) for w in words if "=" in w)
        out.append(Block(m.group(1), label, options, m.group(3)))
    return out


def substituted(text: str) -> str:
    """A block with substitutions 2 and 3 applied (the others are done around it)."""
    lines = []
    for line in text.replace("\\\n", " ").splitlines():
        stripped = line.strip()
        if stripped.startswith(SKIPPED) or stripped.startswith("journalctl"):
            continue
        line = line.replace("/path/to/ndsclust", str(REPO))
        line = line.replace("systemctl stop slapd", "ndsclust_stop_slapd")
        line = line.replace("systemctl start slapd", "ndsclust_start_slapd")
        line = line.replace("systemctl daemon-reload", ":")
        lines.append(line)
    return "\n".join(lines) + "\n"


class Site:
    """The three servers: their namespaces, private files and sentinels."""

    def __init__(self, net: NetLab, root: Path) -> None:
        self.net = net
        self.root = root
        self.ledger = root / "ledger"
        self.safe = root / "ca-machine"
        self.sentinels: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = {s: root / f"sentinel-{s}.log" for s in SERVERS}

    # -- the servers' files

    def dir(self, server: str) -> Path:
        return self.root / server

    def path(self, server: str, path: str) -> Path:
        """Where ``path`` of ``server`` lives on this machine."""
        for mount, sub in [("/etc", "etc"), ("/usr/local/bin", PRIVATE_BIN), *PRIVATE.items()]:
            if path == mount or path.startswith(mount + "/"):
                return self.dir(server) / sub / path[len(mount) + 1 :]
        raise AssertionError(f"{path} is not private to a server")

    def prepare(self) -> None:
        self.ledger.touch()
        self.ledger.chmod(0o666)
        self.safe.mkdir()
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{self.net.address(s, 'dir')} {PROVIDERS[s]}\n" for s in SERVERS
        )
        ol = pwd.getpwnam("openldap")
        for s in SERVERS:
            d = self.dir(s)
            shutil.copytree("/etc", d / "etc", symlinks=True, ignore_dangling_symlinks=True)
            (d / "etc" / "hosts").write_text(hosts)
            for sub in PRIVATE.values():
                (d / sub).mkdir(parents=True)
            (d / "root").chmod(0o700)
            for _, rel in interpreter_under_root():
                (d / "root" / rel).mkdir(parents=True)
            for sub in ("varlib/ldap", "run/slapd"):
                (d / sub).mkdir()
                os.chown(d / sub, ol.pw_uid, ol.pw_gid)
            venv = d / "opt" / "ndsclust"
            venv.mkdir()
            for name in ("bin", "lib", "lib64", "include", "pyvenv.cfg"):
                if (REPO / ".venv" / name).exists():
                    (venv / name).symlink_to(REPO / ".venv" / name)
            bin_dir = d / PRIVATE_BIN
            bin_dir.mkdir()
            billing = bin_dir / "billing-server"
            billing.write_text(
                BILLING.format(
                    app=REPO / "ndsclust" / "lab" / "sample_app.py", ledger=self.ledger, server=s
                )
            )
            billing.chmod(0o755)

    def copy(self, src: str, server: str) -> None:
        """``src`` of alpha to the same path of ``server``, modes and owners kept."""
        a, b = self.path("alpha", src), self.path(server, src)
        if a.is_dir():
            shutil.copytree(a, b, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(a, b)
        for p in [b, *(b.rglob("*") if b.is_dir() else [])]:
            q = a / p.relative_to(b) if a.is_dir() else a
            st = q.stat()
            os.chown(p, st.st_uid, st.st_gid)

    # -- running in a server

    def env(self, server: str) -> dict[str, str]:
        i = SERVERS.index(server)
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "SERVER": server,
            "SERVER_ID": str(i + 1),
            "PROVIDER": PROVIDERS[server],
            "HEARTBEAT": f"{self.net.address(server, 'lan')}:7946",
        }

    def wrap(self, server: str, argv: list[str]) -> list[str]:
        d = self.dir(server)
        mounts = [("etc", "/etc"), (PRIVATE_BIN, "/usr/local/bin")] + [
            (sub, mount) for mount, sub in PRIVATE.items()
        ]
        # The virtualenv's interpreter may live under /root (pyenv): it stays visible.
        keep = [
            f"mount --bind {shlex.quote(str(real))} {shlex.quote(str(d / 'root' / rel))}; "
            for real, rel in interpreter_under_root()
        ]
        script = (
            "set -e; "
            + "".join(keep)
            + "".join(
                f"mount --rbind {shlex.quote(str(d / sub))} {mount}; " for sub, mount in mounts
            )
        )
        script += 'cd /root; exec "$@"'
        return [
            *self.net.exec_prefix(server),
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
            "sh",
            *argv,
        ]

    def sh(self, server: str, text: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.wrap(server, ["/bin/bash", "-e", "-c", PRELUDE + text]),
            env=self.env(server),
            capture_output=True,
            text=True,
            timeout=STEP,
            check=False,
        )
        if check:
            assert done.returncode == 0, (
                f"on {server}, exit {done.returncode}:\n{text}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def start_sentinel(self, server: str) -> None:
        """``systemctl enable --now ndsclust-sentinel``: the unit's ExecStart (substitution 3)."""
        unit = UNIT.read_text()
        start = re.search(r"^ExecStart=(.*)$", unit, re.M)
        assert start is not None
        env = dict(self.env(server))
        for m in re.finditer(r"^Environment=(\w+)=(\S*)$", unit, re.M):
            env[m.group(1)] = m.group(2)
        runtime = re.search(r"^RuntimeDirectory=(\S+)$", unit, re.M)
        prep = f"mkdir -p -m 0755 /run/{runtime.group(1)} && " if runtime else ""
        log = self.logs[server].open("ab")
        try:
            self.sentinels[server] = subprocess.Popen(
                self.wrap(
                    server,
                    ["/bin/sh", "-c", prep + 'exec "$@"', "sh", *shlex.split(start.group(1))],
                ),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def kill(self, server: str) -> None:
        """SIGKILL everything the server runs: its slapd, sentinel and programs."""
        ns = self.net.namespace(server)
        for _ in range(50):
            pids = subprocess.run(
                [IP, "netns", "pids", ns], capture_output=True, text=True, timeout=30, check=False
            ).stdout.split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        p = self.sentinels.pop(server, None)
        if p is not None:
            p.wait(timeout=30)

    def tail(self, server: str, n: int = 40) -> str:
        try:
            return "\n".join(self.logs[server].read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- what the CLI says, as root on a server

    def json(self, server: str, command: str) -> Any:
        done = self.sh(server, f"ndsclust {command} --json", check=False)
        if done.returncode != 0:
            return None
        return json.loads(done.stdout)

    def app(self, server: str, tag: str = "billing") -> dict[str, Any] | None:
        data = self.json(server, "status")
        if data is None:
            return None
        return next((a for a in data["applications"] if a["tag"] == tag), None)

    def wait(self, what: str, test: Callable[[], bool], timeout: float = OUTCOME) -> None:
        deadline = time.monotonic() + timeout
        while not test():
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {s}\n{self.tail(s)}" for s in SERVERS)
                raise AssertionError(f"not within {timeout:g}s: {what}\n{logs}")
            time.sleep(0.5)

    def running_on(self, host: str, reader: str) -> Callable[[], bool]:
        def test() -> bool:
            a = self.app(reader)
            return a is not None and a["host"] == host and a["state"].startswith("running")

        return test


def run_block(site: Site, block: Block) -> None:
    """One labelled block, where the guide says it runs."""
    if block.label == "safe":
        done = subprocess.run(
            ["/bin/bash", "-e", "-c", block.text],
            cwd=site.safe,
            capture_output=True,
            text=True,
            timeout=STEP,
            check=False,
        )
        assert done.returncode == 0, f"{block.text}\n{done.stderr}"
        for s in SERVERS:  # step 2: ca.crt everywhere, each provider's own pair
            tls = site.path(s, "/root/tls")
            tls.mkdir(mode=0o700)
            shutil.copy2(site.safe / "ca.crt", tls / "ca.crt")
            for ext in ("crt", "key"):
                shutil.copy2(site.safe / f"{PROVIDERS[s]}.{ext}", tls / f"{PROVIDERS[s]}.{ext}")
        return
    if block.label == "once":
        site.sh("alpha", substituted(block.text))
        for src in filter(None, block.options.get("copy", "").split(",")):
            for s in SERVERS[1:]:
                site.copy(src, s)
        if "alice.pw" in block.text:  # substitution 4: alice's ~/.ndsclust.pw
            pw = site.path("alpha", "/root/.ndsclust.pw")
            shutil.copy2(site.path("alpha", "/root/alice.pw"), pw)
        return
    if block.label == "operator":
        site.sh("alpha", substituted(block.text))
        return
    if block.label == "check":
        for line in substituted(block.text).splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                site.sh("alpha", line)
        return
    assert block.label == "each", block
    for s in SERVERS:
        text = substituted(block.text)
        before, edit, after = text.partition("\n# edit:")
        site.sh(s, before)
        if edit:
            edit_sentinel_config(site, s)
            after = after.split("\n", 1)[1] if "\n" in after else ""
            after = "\n".join(ln for ln in after.splitlines() if not ln.startswith("#   "))
            starts = "systemctl enable --now ndsclust-sentinel" in after
            site.sh(s, after.replace("systemctl enable --now ndsclust-sentinel", ":"))
            if starts:
                site.start_sentinel(s)


def edit_sentinel_config(site: Site, server: str) -> None:
    """Substitution 5: what step 7's ``# edit:`` line asks of an operator."""
    path = site.path(server, "/etc/ndsclust/sentinel.yaml")
    cfg = yaml.safe_load(path.read_text())
    env = site.env(server)
    cfg["server"] = server
    cfg["directory"]["local_uri"] = f"ldap://{env['PROVIDER']}"
    cfg["directory"]["bind_dn"] = f"cn={server},ou=servers,{BASE}"
    cfg["channels"]["lan"]["addresses"] = [env["HEARTBEAT"]]
    for gone in ("disk", "witness"):
        cfg["channels"].pop(gone, None)
    cfg.pop("notify", None)
    cfg.pop("fencing", None)
    cfg.pop("http", None)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)


@pytest.fixture
def site() -> Iterator[Site]:
    root = Path(tempfile.mkdtemp(prefix="ndsclust-guide-", dir="/tmp"))
    root.chmod(0o755)  # the programs' user reads the ledger's directory
    net = NetLab(SERVERS)
    s = Site(net, root)
    try:
        net.start()
        s.prepare()
        yield s
    finally:
        for server in SERVERS:
            try:
                s.kill(server)
            except Exception:  # the namespaces go below whatever happened here
                pass
        net.teardown()
        shutil.rmtree(root, ignore_errors=True)


def test_the_install_guide_builds_a_cluster_that_survives_a_dead_server(site: Site) -> None:
    blocks = [b for b in guide_blocks() if b.label and b.lang == "sh"]
    migrate = next(b for b in blocks if b.label == "operator" and "migrate" in b.text)
    doctor_check = next(b for b in blocks if b.label == "check" and "ndsclust doctor" in b.text)
    first_app = next(b for b in guide_blocks() if b.lang == "ldif" and b.label == "billing.ldif")
    assert [b.label for b in blocks].count("each") >= 6, "the guide lost its labels"
    for block in blocks:
        if block is migrate:
            break
        if block.label == "operator":
            site.path("alpha", "/root/billing.ldif").write_text(first_app.text)
        if block is doctor_check:
            site.wait("billing runs on alpha", site.running_on("alpha", "gamma"))
            check_doctor(site)
        run_block(site, block)
    assert "start" in site.ledger.read_text(), "the first application never started"

    # SIGKILL of alpha: billing moves to its first backup, and alpha is shown down.
    site.kill("alpha")
    site.wait("billing runs on beta after alpha died", site.running_on("beta", "gamma"))
    servers = site.json("beta", "servers list") or []
    rows = servers if isinstance(servers, list) else servers.get("servers", [])
    alpha_state = next((r["state"] for r in rows if r["name"] == "alpha"), None)

    # alpha returns (its slapd and sentinel start as the guide starts them): billing, auto
    # recover TRUE, comes back to its primary.
    site.sh("alpha", substituted("systemctl start slapd"))
    site.start_sentinel("alpha")
    site.wait("billing is back on alpha", site.running_on("alpha", "gamma"))

    # The guide's migrate: it runs on gamma, and stays there.
    run_block(site, migrate)
    site.wait("billing runs on gamma", site.running_on("gamma", "beta"), timeout=30)
    time.sleep(STICK)
    assert site.running_on("gamma", "beta")(), "the migrated application did not stay"

    check_doctor(site)
    # Written for the liveness work (server state from the sentinels): it passes once
    # servers list reports a server dead on every channel as down.
    assert alpha_state == "down", f"servers list showed the dead alpha as {alpha_state!r}"


def check_doctor(site: Site) -> None:
    """The guide's full check exits 0 with nothing to fix; over ldapi it covers every
    provider."""

    def clean() -> bool:
        done = site.sh("alpha", "ndsclust doctor", check=False)
        return done.returncode == 0 and "doctor: 0 problems, 0 warnings" in done.stdout

    site.wait("ndsclust doctor is clean", clean, timeout=60)
    done = site.sh("alpha", "ndsclust --uri ldapi:/// -Y doctor --json", check=False)
    report = json.loads(done.stdout)
    bad = [f for f in report["findings"] if f["level"] in ("problem", "warning")]
    assert done.returncode == 0 and not bad, bad
    subjects = {f["subject"] for f in report["findings"] if f["check"] == "schema"}
    assert {"ldapi:///", "ldap://ldap2.example.com", "ldap://ldap3.example.com"} <= subjects

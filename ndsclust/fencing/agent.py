"""Running a fence agent, as the fence-agents package defines the calling convention.

An agent is an executable that reads its options from standard input, one ``key=value``
per line (``action=off``, ``ip=10.0.0.11``, ``password=...``), and exits 0 when the
action succeeded. ``action=metadata`` prints an XML description of its parameters;
``action=monitor`` checks that the fence device answers; ``action=status`` that the
port is on (exit 0) or off (exit 2). Options travel on standard input only, so a secret
never appears on a command line (``/proc/<pid>/cmdline`` is world-readable) nor in the
environment.

``run`` is the shell: one subprocess in a session of its own, killed with its whole
process group at the timeout, its output captured and bounded. ``required_options``
reads the metadata (pure).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

# What an agent may print that is kept (each of stdout and stderr): enough for an XML
# description or an error, bounded so a chatty agent cannot fill the sentinel's memory.
OUTPUT_LIMIT = 64 * 1024
# How much of the output a state or an event quotes.
QUOTE_LIMIT = 300
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True, slots=True)
class Result:
    """One call of an agent. ``code`` None: it did not finish (timeout, or it could not be
    run, ``error`` saying why)."""

    agent: str
    action: str
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    def summary(self) -> str:
        """One line for a state, an event or an operator: the agent, how it ended, and
        what it said (stderr first: that is where agents explain a failure)."""
        name = os.path.basename(self.agent)
        if self.code is None:
            how = self.error or "did not finish"
        else:
            how = f"exit {self.code}"
        said = " ".join((self.stderr.strip() + " " + self.stdout.strip()).split())
        if len(said) > QUOTE_LIMIT:
            said = said[: QUOTE_LIMIT - 3] + "..."
        return f"{name} action={self.action}: {how}" + (f": {said}" if said else "")


def stdin_lines(action: str, options: Mapping[str, str]) -> bytes:
    """The agent's standard input: ``action=...`` then every option, one per line."""
    lines = [f"action={action}"] + [f"{k}={v}" for k, v in options.items() if k != "action"]
    return ("\n".join(lines) + "\n").encode()


def run(agent: str, action: str, options: Mapping[str, str], timeout: float) -> Result:
    """Run ``agent`` with ``action`` and ``options`` on its standard input; never raises for
    what the agent does (an agent that cannot be started is a Result with ``error``)."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [agent],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(ENV),
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        return Result(agent, action, None, "", "", 0.0, f"cannot run: {e.strerror or e}")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(stdin_lines(action, options))
        proc.stdin.close()
    except OSError:
        pass  # an agent that does not read its input still gets to answer
    fds = {proc.stdout.fileno(): 0, proc.stderr.fileno(): 1}
    out = [bytearray(), bytearray()]
    deadline = started + timeout
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = out[fds[key.fd]]
                if len(buf) < OUTPUT_LIMIT:
                    buf += chunk[: OUTPUT_LIMIT - len(buf)]
    code: int | None = None
    if not timed_out:
        try:
            code = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True  # it closed its output but goes on running
    if timed_out:
        _kill_group(proc)
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return Result(
        agent,
        action,
        code,
        out[0].decode(errors="replace"),
        out[1].decode(errors="replace"),
        time.monotonic() - started,
        f"no answer within {timeout:g}s (killed)" if timed_out else "",
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    required: bool
    deprecated: bool
    obsoletes: str | None


def parameters(metadata: str) -> tuple[Parameter, ...]:
    """The parameters an agent's ``action=metadata`` describes; ValueError when the text
    is not the XML the convention defines."""
    import xml.etree.ElementTree as ET  # only where fencing is configured

    try:
        root = ET.fromstring(metadata.strip())
    except ET.ParseError as e:
        raise ValueError(f"metadata is not XML: {e}") from None
    if root.tag != "resource-agent":
        raise ValueError(f"metadata root is <{root.tag}>, not <resource-agent>")
    out = []
    for p in root.iter("parameter"):
        name = p.get("name")
        if not name:
            continue
        out.append(
            Parameter(
                name,
                p.get("required") == "1",
                p.get("deprecated") == "1",
                p.get("obsoletes") or None,
            )
        )
    return tuple(out)


def missing_options(params: tuple[Parameter, ...], given: set[str]) -> list[str]:
    """The required parameters that ``given`` (option names) leaves out. ``action`` is ours
    to set; a deprecated name is satisfied by the name that obsoletes it and the other way
    round (``username`` for ``login``), so each requirement is named once, by its new name."""
    replaced = {p.obsoletes for p in params if p.obsoletes}
    missing = []
    for p in params:
        if not p.required or p.name == "action":
            continue
        if p.deprecated and p.name in replaced:
            continue
        if p.name in given or (p.obsoletes and p.obsoletes in given):
            continue
        missing.append(p.name)
    return missing

"""A cluster-aware program on real sentinels (claims 17-24, 29-35, 45-50; FIGS. 6, 7A, 7B):
it registers itself, resumes from its marker after a failover, and after a failback from
its paused primary copy the items form one gap-free, duplicate-free sequence. The
program's output doubles as a ledger: no instant has two active copies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

from ndsclust.control_protocol import MAX_LINE, decode, encode
from ndsclust.framing import LineFramer
from ndsclust.lab import aware_counter
from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.ledger import double_runs, lives
from ndsclust.model import AppState, AppType, Request, RequestKind, ServerName, Tag

LabFactory = Callable[..., LabCluster]

A, B = ServerName("alpha"), ServerName("beta")
T = Tag("count")
# The program registers itself through alpha's sentinel, which creates its entry: under the
# shipped ACLs only an operator may, so alpha's identity is one here.
REGISTRAR = {"operator_servers": (A,)}


def by_hand(
    c: LabCluster, tag: str = T, server: ServerName = A
) -> subprocess.CompletedProcess[str]:
    """Start the example once by hand on ``server``, as an operator would (FIG. 6)."""
    sock = c.servers[server].dir / "control.sock"
    wait_until(sock.exists, timeout=20, what=f"control socket of {server}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NDSCLUST_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            aware_counter.MODULE,
            "--output",
            str(c.ledger),
            "--tag",
            tag,
            "--primary",
            A,
            "--backups",
            B,
            "--socket",
            str(sock),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def items(c: LabCluster) -> list[aware_counter.Item]:
    return aware_counter.items(c.ledger_lines(), T)


def items_of(c: LabCluster, server: str, pid: int | None = None) -> list[int]:
    return [i.n for i in items(c) if i.server == server and (pid is None or i.pid == pid)]


def waiting_pids(c: LabCluster, server: str) -> list[int]:
    return [
        int(p[1])
        for p in (ln.split() for ln in c.ledger_lines())
        if len(p) == 5 and p[0] == server and p[2] == T and p[3] == "waiting"
    ]


def test_fig6_example_registers_itself_and_bad_input_is_contained(lab: LabFactory) -> None:
    c = lab(2, **REGISTRAR)
    first = by_hand(c)
    assert first.returncode == 0, first.stderr
    assert "registration created, hosted by alpha" in first.stdout
    app = c.app(T)
    assert app.type is AppType.AWARE and (app.primary, app.backups, app.host) == (A, (B,), A)
    assert "--socket" not in app.command
    wait_until(lambda: len(items_of(c, A)) >= 5, timeout=30, what="items processed on alpha")
    assert items_of(c, A)[:5] == [1, 2, 3, 4, 5]
    wait_until(lambda: int(c.app(T).marker or 0) >= 5, timeout=10, what="marker advances")
    again = by_hand(c)
    assert again.returncode == 0 and "registration unchanged" in again.stdout

    # A tag that belongs to a cluster-capable application: refused, nothing written.
    c.add_app("web", A, [B])
    web = c.app("web")
    taken = by_hand(c, tag="web")
    assert taken.returncode == 1 and "ndsclustType" in taken.stderr and "capable" in taken.stderr
    after = c.app("web")
    assert (after.type, after.command, after.backups) == (web.type, web.command, web.backups)

    # Garbage on the socket is answered; the sentinel and the program carry on.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(c.servers[A].dir / "control.sock"))
    try:
        s.sendall(
            b"\x00\x01garbage\n"
            + encode({"id": 1, "op": "hello", "protocol": 1, "tag": T, "token": "forged"})
        )
        buf, got = LineFramer(MAX_LINE), list[dict[str, object]]()
        while len(got) < 2:
            got += [decode(line) for line in buf.feed(s.recv(65536))]
    finally:
        s.close()
    assert [r["error"] for r in got] == ["bad-request", "not-supervised"]
    n = len(items_of(c, A))
    wait_until(lambda: len(items_of(c, A)) >= n + 5, timeout=10, what="still counting on alpha")
    nums = [i.n for i in items(c)]
    assert nums == list(range(1, len(nums) + 1))


def test_failover_resumes_at_the_marker_and_failback_continues_from_the_paused_copy(
    lab: LabFactory,
) -> None:
    c = lab(2, **REGISTRAR)
    assert by_hand(c).returncode == 0
    # Failback waits for the operator here, so that the paused copy is in place first.
    c.store().replace_app_attrs(T, {"ndsclustAutoRecover": ["FALSE"]})
    wait_until(lambda: len(items_of(c, A)) >= 10, timeout=30, what="items on alpha")

    # FIG. 7A: alpha dies; beta's copy continues from the marker alpha stored.
    c.kill_server(A)
    wait_until(lambda: len(items_of(c, B)) >= 10, timeout=30, what="items on beta")
    last_a = items_of(c, A)[-1]
    resumed_b = aware_counter.resumes(c.ledger_lines(), T)[-1]
    assert resumed_b.server == B
    assert items_of(c, B)[0] == resumed_b.n + 1
    # Process-then-mark: the kill may have fallen between an item and its marker (or
    # taken an acknowledged, unreplicated marker write with it): a repeat, never a gap.
    assert last_a - 2 <= resumed_b.n <= last_a

    # FIG. 6 step 612 / FIG. 7B: alpha returns; its copy is loaded paused and does nothing.
    c.restart_server(A)
    wait_until(lambda: waiting_pids(c, A)[1:], timeout=30, what="a paused copy on alpha")
    paused_pid = waiting_pids(c, A)[-1]
    wait_until(
        lambda: c.app(T).state.state is AppState.AWAITING_FAILBACK,
        timeout=30,
        what="awaiting-failback",
    )
    assert items_of(c, A, paused_pid) == []
    n_b = len(items_of(c, B))
    wait_until(lambda: len(items_of(c, B)) >= n_b + 3, timeout=10, what="beta still counting")
    assert items_of(c, A, paused_pid) == []

    # The operator approves: beta unloads after its item in hand, the host swaps, and the
    # copy already loaded on alpha continues where beta stopped.
    c.store().set_request(T, Request(RequestKind.FAILBACK))
    wait_until(
        lambda: len(items_of(c, A, paused_pid)) >= 5,
        timeout=30,
        what="the paused copy counting on alpha",
    )
    last_b = items_of(c, B)[-1]
    resumed_a = aware_counter.resumes(c.ledger_lines(), T)[-1]
    assert (resumed_a.server, resumed_a.pid, resumed_a.n) == (A, paused_pid, last_b)
    assert items_of(c, A, paused_pid)[0] == last_b + 1
    assert c.app(T).host == A
    assert f"program_exited tag={T} server=beta pid=" in c.log_tail(B, 400)
    assert all(
        " code=0 " in ln
        for ln in c.log_tail(B, 400).splitlines()
        if f"program_exited tag={T} " in ln
    ), "the unloaded copy exits 0"

    # One sequence: no gap anywhere; repeats only at the kill, none at the clean hand-over.
    nums = [i.n for i in items(c)]
    assert sorted(set(nums)) == list(range(1, max(nums) + 1))
    repeated = {n for n, k in Counter(nums).items() if k > 1}
    assert repeated <= set(range(resumed_b.n + 1, last_a + 1)), repeated
    # No instant with two active copies (items count as ticks: a killed copy's life ends
    # at its last item).
    assert double_runs(lives(aware_counter.ledger_lines(c.ledger_lines()))) == []

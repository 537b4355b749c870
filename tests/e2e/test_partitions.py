"""Partitions, fencing and healing with servers as network namespaces (issue: partitions).

Every server is a namespace with its own slapd provider, sentinel and programs, a lan link
(heartbeats) and a dir link (directory) to two bridges; the disk-pulse file is shared.
``tools.faults.harness`` injects the faults. The ``lab`` fixture checks every ledger for
double runs after the test, whatever the test asserted, and stops everything (namespaces
included) even when the test fails.

While the shared storage is reachable, the disk channel keeps both sides of a network
partition informed and nothing fails over (the patent's reason for the drive pulse); the
tests that need a server cut off on every channel therefore also cut its disk path
(``Faults.disk_cut``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import LabTimeout, wait_until
from ndsclust.ledger import Life, lives
from ndsclust.model import AppState, ServerName
from tools.faults.checker import check_directory
from tools.faults.harness import Faults, hold, live_copies, provider_store, wait_log

NsLab = Callable[..., tuple[LabCluster, Faults]]

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


def copies(c: LabCluster, tag: str) -> list[Life]:
    return [life for life in lives(c.ledger_lines()) if life.tag == tag]


def starts_after(c: LabCluster, tag: str, t: float) -> list[str]:
    return [f"{life.server}/{life.pid}" for life in copies(c, tag) if life.start >= t]


def assert_handed_over(c: LabCluster, tag: str, old: str, new: str) -> None:
    """Every copy on ``old`` ended before the first copy on ``new`` began."""
    on_new = [life.start for life in copies(c, tag) if life.server == new]
    on_old = [life.end for life in copies(c, tag) if life.server == old]
    assert on_new and on_old
    assert max(on_old) <= min(on_new), (
        f"{tag}: the copy on {old} lived until {max(on_old):.3f}, the one on {new} "
        f"started at {min(on_new):.3f}"
    )


def test_lan_cut_with_directory_and_disk_alive_fails_nothing_over(nslab: NsLab) -> None:
    """Patent 806/808: only the heartbeat ring is cut (the host's lan link is down); the
    directory pulse and the drive pulse still show the host working, so for 10 s nobody
    takes over and the host does not fence itself."""
    c, f = nslab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    t = time.monotonic()
    f.link_down(A, ["lan"])
    hold(
        lambda: c.running_on("web") == {A} and not starts_after(c, "web", t),
        10.0,
        "web running on alpha only",
    )
    assert c.app("web").host == A
    assert "event=fenced" not in c.log_tail(A, 200)


def test_slow_lan_is_not_a_dead_lan(nslab: NsLab) -> None:
    """The host's heartbeats take a second or more each way (a relay holds every frame,
    beyond the failover timeout), then its directory and disk channels are cut: its
    heartbeats still arrive, late but steadily, so its peers keep hearing it and nothing
    fails over; nor does the host fence itself, hearing them too. (The delay is set while
    the other channels still speak: the first second of a new delay is silence.)"""
    c, f = nslab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    t = time.monotonic()
    f.delay(A, 1.0, jitter=0.2)
    hold(lambda: c.running_on("web") == {A}, 2.0, "web running on alpha")
    f.disk_cut(A)
    f.link_down(A, ["dir"])
    hold(
        lambda: c.running_on("web") == {A} and not starts_after(c, "web", t),
        5.0,
        "web running on alpha only",
    )
    assert "event=fenced" not in c.log_tail(A, 200)


def test_symmetric_partition_host_fences_and_backup_takes_over(nslab: NsLab) -> None:
    """The host is cut from both others on every channel (both links on a bridge of its
    own, its disk path lost). Alone it is no majority: it stops its program within the fence
    timeout, and only after the failover timeout does the first backup run it."""
    c, f = nslab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    f.disk_cut(A)
    mark = c.servers[A].log_path.stat().st_size
    f.partition([[B, C], [A]])
    wait_log(c, A, "event=fenced", timeout=10, after=mark)
    c.wait_running("web", B, timeout=20)
    assert_handed_over(c, "web", A, B)
    assert c.app("web").host == B


def test_symmetric_partition_heals_to_one_copy(nslab: NsLab) -> None:
    """After the partition above heals, the fenced host rejoins: exactly one copy runs (on
    the primary again, by failback) and no two copies ever overlapped."""
    c, f = nslab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    f.disk_cut(A)
    f.partition([[B, C], [A]])
    c.wait_running("web", B, timeout=20)
    f.heal()
    f.settle()
    c.wait_running("web", A, timeout=30)
    hold(lambda: len(live_copies(c, "web")) == 1, 2.0, "exactly one copy of web")
    assert not check_directory(c.directory)


def test_one_way_partition_host_unheard(nslab: NsLab) -> None:
    """Everything the host sends is lost (a tc filter on the others' ingress) while it
    still hears everyone, and its disk path is gone. Its peers hear nothing from it and
    take over; the host must have stopped its copy first. After the heal one copy runs."""
    c, f = nslab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    f.disk_cut(A)
    f.one_way([A], [B, C])
    c.wait_running("web", B, timeout=20)
    assert_handed_over(c, "web", A, B)
    f.heal()
    f.settle()
    c.wait_running("web", A, timeout=30)
    assert not check_directory(c.directory)


def test_partition_heals_after_both_sides_claimed(nslab: NsLab) -> None:
    """FIGS. 4E-4H: two providers each hold a different host for one application, each
    acted on; after the heal every provider and sentinel converge on the more current entry
    and the losing copy is unloaded with a ``double_claim`` event.

    With majority fencing a cut-off minority never claims, so the two claims come from two
    moments, each with a majority, on two halves of a split directory:

    1. the dir network splits: alpha's provider on its own, beta's and gamma's together;
       the lan ring is whole, so the three servers still see each other;
    2. gamma (primary and host) dies: its sentinel killed (its lease guard kills the
       program), its links down; alpha, first backup, swaps the host to itself on the only
       provider it reaches, its own, and runs the program; beta's provider still says gamma;
    3. alpha dies too, the same way; its provider, holding that claim, is cut off with it;
       beta alone fences;
    4. gamma comes back on beta's side: its provider names it host, and after a
       simultaneous failure the host runs the program once its provider has caught up with
       the peers it reaches (FIG. 6); beta and gamma are a majority;
    5. the network heals, alpha's sentinel stays down: replication brings alpha's newer
       claim to every provider. Gamma, running a copy the directory now gives to alpha,
       unloads it (``double_claim``), then takes the application over from the dead alpha.
       Alpha's copy died in step 3, so no two copies ever overlap.

    The servers die with their providers left running, cut off: a provider SIGKILLed and
    restarted in the middle of replication is the restart weakness of docs/platform.md
    fact 10 (an entry left diverged for good while every contextCSN agrees), which the
    fault suite and doctor's convergence check cover, not this test."""
    c, f = nslab(3)
    c.add_app("web", C, [A, B], auto_recover=False)
    c.wait_running("web", C)
    # The story starts from a directory that agrees: gamma's own writes (running) have
    # reached every provider before the split.
    wait_until(
        lambda: c.app("web").state.state is AppState.RUNNING,
        timeout=10,
        what="web running on gamma in the directory",
    )
    f.settle()
    f.partition([[B, C], [A]], nets=["dir"])
    f.kill_sentinel(C)
    f.link_down(C)
    c.wait_running("web", A, timeout=20)
    with closing(provider_store(c, A)) as a, closing(provider_store(c, B)) as b:
        assert a.app("web").host == A
        assert b.app("web").host == C
    f.kill_sentinel(A)
    f.link_down(A)
    f.net.link_up(C)
    c.start_sentinel(C)
    c.wait_running("web", C, timeout=30)
    f.net.heal()
    try:
        wait_until(
            lambda: any(
                e.kind == "double_claim" and e.server == C for e in c.store().events(tag="web")
            ),
            timeout=30,
            what="a double_claim event from gamma",
        )
    except LabTimeout as e:
        raise AssertionError(f"{e}; {directory_view(c, 'web')}") from None
    # The takeover from the dead alpha comes once gamma's start-up grace has passed; only
    # then may heal() restart alpha's sentinel, which would otherwise find itself host.
    wait_until(
        lambda: c.app("web").host == C, timeout=30, what="gamma took web over from the dead alpha"
    )
    c.wait_running("web", C, timeout=30)
    f.heal()
    f.settle()
    wait_until(lambda: c.app("web").host == C, timeout=10, what="host gamma everywhere")
    hold(lambda: set(live_copies(c, "web")) == {C}, 2.0, "one copy of web, on gamma")
    assert not check_directory(c.directory)


def test_operator_edits_on_both_sides_of_a_partition_converge(nslab: NsLab) -> None:
    """Invariant 3: an operator edits one application on alpha's provider and on beta's
    while the directory is split. Different attributes are both kept (delta-syncrepl
    merges them, docs/platform.md fact 6); on the same attribute the later write wins;
    every provider ends with the same values."""
    c, f = nslab(3)
    c.add_app("cfg", A, [B, C], host=False)
    f.partition([[B, C], [A]], nets=["dir"])
    with closing(provider_store(c, A)) as a, closing(provider_store(c, B)) as b:
        a.replace_app_attrs(
            "cfg", {"ndsclustAutoRecover": ["FALSE"], "description": ["set at alpha"]}
        )
        b.replace_app_attrs("cfg", {"ndsclustResource": ["disk1"], "description": ["set at beta"]})
        assert a.app("cfg").auto_recover is False
        assert b.app("cfg").auto_recover is True
    f.heal()
    f.settle()
    dn = c.store().app_dn("cfg")
    expected = {
        dn: {
            "ndsclustAutoRecover": ["FALSE"],
            "ndsclustResource": ["disk1"],
            "description": ["set at beta"],
        }
    }
    assert check_directory(c.directory, expected=expected) == []
    # doctor names the value that was lost, from the providers' accesslogs.
    report = doctor_report(c)
    [lost] = [
        f for f in report["findings"] if f["check"] == "overwrite" and f["level"] == "warning"
    ]
    assert lost["subject"].lower() == dn.lower()
    assert lost["message"].startswith("description: 'set at alpha' written via serverID")
    assert "overwritten by 'set at beta'" in lost["message"]


def directory_view(c: LabCluster, tag: str) -> str:
    """What each provider says of ``tag``, and where replication stands: for a failure."""
    parts = []
    for name in c.names:
        try:
            with closing(provider_store(c, name)) as s:
                app = s.app(tag)
            parts.append(f"{name}'s provider: host={app.host} state={app.state}")
        except Exception as e:  # a failure report must not fail itself
            parts.append(f"{name}'s provider: {e}")
    try:
        parts.append(f"contextCSN={c.directory.contextcsns()}")
        parts.append(f"syncrepl={c.directory.replication_state()}")
    except Exception as e:
        parts.append(f"replication state unreadable: {e}")
    return "; ".join(parts)


def doctor_report(c: LabCluster) -> Any:
    d = c.directory
    pw = d.base_dir / "doctor.pw"
    pw.write_text(d.admin_password)
    pw.chmod(0o600)
    argv = [opt for uri in d.uris for opt in ("--uri", uri)]
    argv += [
        "-D",
        d.admin_dn,
        "-y",
        str(pw),
        "--suffix",
        d.suffix,
        "--pulse-suffix",
        d.pulse_suffix,
        "--ca-file",
        str(d.ca_file),
        "doctor",
        "--json",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "ndsclust", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_clock_step_silences_only_the_lan_channel(nslab: NsLab) -> None:
    """The host's wall clock steps 120 s ahead, beyond the heartbeats' 30 s timestamp
    window: its heartbeats are refused and it refuses theirs, and with the directory and
    disk channels alive nothing happens. Cut those two as well and its peers find it dead
    although its lan link is up, which shows the lan channel really went silent."""
    c, f = nslab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    t = time.monotonic()
    f.clock_step(A, 120.0)
    hold(
        lambda: c.running_on("web") == {A} and not starts_after(c, "web", t),
        5.0,
        "web running on alpha only",
    )
    f.disk_cut(A)
    f.link_down(A, ["dir"])
    c.wait_running("web", B, timeout=20)
    assert_handed_over(c, "web", A, B)

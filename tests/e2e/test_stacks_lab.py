"""Service stacks end to end (docs/design.md section 3, "Stacks"): servers as network
namespaces with a client namespace on the same lan bridge, the lab's stack example
(``ndsclust/lab/stack.py``: a service address on ``svc-db``, the TCP service ``svc-web``
requiring it). The ``lab`` fixture checks every ledger for double runs and removes every
namespace, process and file, whatever the test asserted."""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.lab.stack import add_service, add_stack, lan_service_address
from ndsclust.ledger import Life, lives
from ndsclust.model import Request, ServerName
from tools.bench_address import PORT, TAG, Prober, holders, with_client
from tools.faults.harness import Faults
from tools.netns import NetLab

NsLab = Callable[..., tuple[LabCluster, Faults]]
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")
DB, WEB = "svc-db", "svc-web"
STALE_AFTER = 10.0  # seconds: sooner than a reachable neighbour entry is ever re-probed


def stack_lab(nslab: NsLab, *, stack: bool = True) -> tuple[LabCluster, Faults, NetLab, str]:
    """The stack example (``stack``) or the TCP service alone holding the address."""
    c, f = nslab(3, network=with_client)
    assert isinstance(c.net, NetLab)
    address = lan_service_address(c)
    if stack:
        add_stack(c, address, PORT, A, [B, C])
    else:
        add_service(c, address, PORT, A, [B, C], tag=TAG)
    c.wait_running(WEB if stack else TAG, A, timeout=60)
    wait_until(lambda: holders(c, address) == [A], timeout=30, what="the address on alpha")
    return c, f, c.net, address


def copies(c: LabCluster, tag: str, server: str) -> list[Life]:
    return [x for x in lives(c.ledger_lines()) if x.tag == tag and x.server == server]


def assert_start_order(c: LabCluster, server: str) -> None:
    db, web = copies(c, DB, server), copies(c, WEB, server)
    assert db and web
    assert db[-1].start < web[-1].start, "svc-web started before svc-db"


def holds(c: LabCluster, name: str, address: str) -> bool:
    assert c.net is not None
    out = subprocess.run(
        [*c.net.exec_prefix(name), "ip", "-br", "addr", "show"], capture_output=True, text=True
    ).stdout.split()
    return any(w.split("/")[0] == address.split("/")[0] for w in out)


def mac_of(net: NetLab, name: str) -> str:
    out = subprocess.run(
        [*net.exec_prefix(name), "ip", "-j", "link", "show", "lan0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out)[0]["address"])


def client_neighbour(net: NetLab, address: str) -> str | None:
    out = subprocess.run(
        [*net.exec_prefix("client"), "ip", "-j", "neigh", "show", address.split("/")[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = json.loads(out or "[]")
    return str(rows[0].get("lladdr")) if rows and rows[0].get("lladdr") else None


def test_stack_starts_and_stops_in_order_and_moves_as_one(nslab: NsLab) -> None:
    c, _, _, address = stack_lab(nslab)
    assert_start_order(c, A)
    # A migrate written on the dependent moves the whole set.
    c.store().set_request(WEB, Request.parse("migrate:beta"))
    c.wait_running(WEB, B, timeout=60)
    c.wait_running(DB, B, timeout=60)
    wait_until(lambda: holders(c, address) == [B], timeout=30, what="the address on beta only")
    (db_a,), (web_a,) = copies(c, DB, A), copies(c, WEB, A)
    assert web_a.end is not None and db_a.end is not None
    assert web_a.end <= db_a.end, "svc-db stopped on alpha before svc-web"
    assert db_a.end <= copies(c, DB, B)[0].start, "the set ran on two servers at once"
    assert_start_order(c, B)
    assert c.app(DB).host == B and c.app(WEB).host == B


def test_client_is_answered_at_the_address_by_the_new_host_after_sigkill(nslab: NsLab) -> None:
    c, _, net, address = stack_lab(nslab, stack=False)
    with Prober(net, address, PORT) as probe:
        wait_until(lambda: probe.last() == A, timeout=30, what="alpha answering the client")
        assert client_neighbour(net, address) == mac_of(net, A)
        t0 = c.kill_server(A)
        wait_until(
            lambda: probe.first_after(t0, lambda who: who not in ("-", A)) is not None,
            timeout=30,
            what="another server answering at the service address",
        )
        t1 = probe.first_after(t0, lambda who: who not in ("-", A))
        assert t1 is not None
        new = c.app(TAG).host
        assert new in (B, C) and probe.last() == new
        # The neighbour entry names the new host: its announcement replaced it, long
        # before the old entry could have gone stale and been probed again (reachable for
        # 15-45 s, base_reachable_time 30 s, then 5 s before the first probe). How soon
        # is measured by tools/bench_address.py against timeouts.failover + 0.5 s.
        assert client_neighbour(net, address) == mac_of(net, new)
        assert t1 - t0 < STALE_AFTER, f"answered again only after {t1 - t0:.3f} s"


def add_address(net: NetLab, name: str, address: str) -> None:
    done = subprocess.run(
        [*net.exec_prefix(name), "ip", "addr", "add", address, "dev", "lan0"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"{name}: ip addr add {address}: {done.stderr.strip()}"


def test_a_backup_without_the_network_is_skipped_and_the_next_takes_over(nslab: NsLab) -> None:
    c, _ = nslab(3, network=with_client)
    net = c.net
    assert isinstance(net, NetLab)
    # A second network on the lan bridge that alpha, gamma and the client are on, and
    # beta is not: the lan's /24 in the other half of 198.18.0.0/15, only on this bridge.
    lan = net.subnet("lan").network_address.packed
    other = ipaddress.ip_network(f"198.{37 - lan[1]}.{lan[2]}.0/24")
    for name in (A, C, "client"):
        host = int(net.address(name, "lan").split(".")[-1])
        add_address(net, name, f"{other.network_address + host}/24")
    need = f"net:{other}"

    def published() -> bool:
        pulses = c.store().pulses()
        nets = {s: pulses[s].networks if s in pulses else None for s in (A, B, C)}
        return all(n is not None for n in nets.values()) and (
            need in (nets[A] or ()) and need in (nets[C] or ()) and need not in (nets[B] or ())
        )

    wait_until(published, timeout=30, what=f"every sentinel publishing whether it has {need}")
    address = f"{other.network_address + 100}/24"
    add_service(c, address, PORT, A, [B, C], tag=TAG)
    c.wait_running(TAG, A, timeout=60)
    with Prober(net, address, PORT) as probe:
        wait_until(lambda: probe.last() == A, timeout=30, what="alpha answering the client")
        c.kill_server(A)
        # beta comes first in the order but lacks the network: gamma takes it over.
        wait_until(lambda: c.app(TAG).host == C, timeout=60, what="gamma taking it over")
        wait_until(lambda: holders(c, address) == [C], timeout=30, what="the address on gamma")
        wait_until(lambda: probe.last() == C, timeout=30, what="gamma answering the client")
    assert copies(c, TAG, B) == [], "beta ran it without the address's network"
    texts = [(e.kind, e.server, e.text) for e in c.store().events(tag=TAG)]
    assert ("resource_missing", C, f"skipped beta lacks {need}") in texts, texts


def test_after_isolation_and_heal_exactly_one_server_holds_the_address(nslab: NsLab) -> None:
    c, f, net, address = stack_lab(nslab)
    f.isolate(A)
    wait_until(lambda: not holds(c, A, address), timeout=30, what="alpha fenced, address gone")
    wait_until(
        lambda: len(holders(c, address)) == 1 and holders(c, address)[0] in (B, C),
        timeout=60,
        what="the address taken over",
    )
    f.heal()
    f.settle(timeout=60)
    with Prober(net, address, PORT) as probe:
        # Alpha (the primary) is back: the stack may fail back, but never two holders.
        end = time.monotonic() + 10
        while time.monotonic() < end:
            assert len(holders(c, address)) <= 1, holders(c, address)
            time.sleep(0.1)
        wait_until(lambda: len(holders(c, address)) == 1, timeout=30, what="one holder")
        (holder,) = holders(c, address)
        assert c.app(DB).host == holder and c.app(WEB).host == holder
        wait_until(lambda: probe.last() == holder, timeout=30, what=f"{holder} answering")
        # A client that cached the other side's hardware address during the partition is
        # corrected by the holder's announcement (every 2 s while it holds the address),
        # long before its entry could go stale and be probed again (STALE_AFTER).
        wrong = mac_of(net, next(s for s in (A, B, C) if s != holder))
        right = mac_of(net, holder)
        ip = address.split("/")[0]
        subprocess.run(
            [*net.exec_prefix("client"), "ip", "neigh", "replace", ip, "lladdr", wrong]
            + ["dev", "lan0", "nud", "reachable"],
            check=True,
            capture_output=True,
        )
        t0 = time.monotonic()  # an announcement may correct it at once: no check between
        wait_until(
            lambda: client_neighbour(net, address) == right,
            timeout=STALE_AFTER,
            what=f"{holder}'s announcement correcting the client's neighbour entry",
        )
        assert time.monotonic() - t0 < STALE_AFTER
        wait_until(lambda: probe.last() == holder, timeout=30, what=f"{holder} answering again")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_no_address_left_on_a_server_whose_sentinel_died_or_froze(
    nslab: NsLab, sig: signal.Signals
) -> None:
    c, f, _, address = stack_lab(nslab, stack=False)
    t0 = time.monotonic()
    if sig == signal.SIGKILL:
        f.kill_sentinel(A)
    else:
        f.pause_sentinel(A)  # the lease lapses: the guard kills the group
    gone = None
    deadline = t0 + 30
    while time.monotonic() < deadline:
        if not holds(c, A, address):
            gone = time.monotonic()
            break
    assert gone is not None, "the address stayed on alpha"
    wait_until(lambda: holders(c, address) in ([B], [C]), timeout=60, what="the address taken over")
    new = holders(c, address)[0]
    wait_until(lambda: copies(c, TAG, new), timeout=30, what=f"{TAG} started on {new}")
    first = copies(c, TAG, new)[0].start
    assert gone <= first, f"alpha held the address until {gone:.3f}, {new} started {first:.3f}"
    f.heal()  # alpha's sentinel back (continued or started again)
    # Its old copy left with the lease; the set may fail back to it by itself (soon after
    # the heal, however long the heal took), so the one holder is whichever hosts it.
    wait_until(
        lambda: holders(c, address) == [c.app(TAG).host],
        timeout=30,
        what="the address on its host alone",
    )

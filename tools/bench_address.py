#!/usr/bin/env python3
"""Service address failover, measured from a client's side (docs/design.md section 6).

A lab of three servers as network namespaces plus a client namespace on the same lan
bridge runs a small TCP service holding a service address (``ndsclust/lab/stack.py``,
``add_service``). The client connects to the service
address every ``PROBE_EVERY`` seconds (each attempt gives up after ``PROBE_TIMEOUT``) and
notes which server answered. Each trial SIGKILLs the host server (sentinel, guard,
programs and slapd at once, its links down) and measures, on CLOCK_MONOTONIC (shared by
every namespace), from the kill to the first answer from another server at the same
address: the client's neighbour cache still names the dead host's hardware address, so
the answer comes through the new host's gratuitous ARP. The server is then restarted and
the stack fails back by itself before the next trial.

The ledger of every trial is checked for double runs. The last line is exactly
``address_failover: p50_ms=<n> p99_ms=<n> max_ms=<n> started_p50_ms=<n>
failover_timeout_ms=<n> trials=<n> double_runs=<n>`` (``started``: the new copy's first
ledger line, which the answer cannot precede: what the address itself adds is the rest).

    tools/bench_address.py [--trials 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.lab.stack import add_service, lan_service_address
from ndsclust.ledger import double_runs, lives
from ndsclust.model import ServerName
from tools.bench_failover import allow_flapping, percentile
from tools.netns import NetLab

CLIENT = "client"
TAG = "svc"
PORT = 7070
PROBE_EVERY = 0.01
PROBE_TIMEOUT = 0.05
FAILOVER = 0.8  # the sentinel's default timeouts.failover

_PROBE = """
import socket, sys, time
host, port, every, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
while True:
    t = time.monotonic()
    s = socket.socket()
    s.settimeout(limit)
    try:
        s.connect((host, port))
        who = s.recv(128).decode().split()[0]
    except (OSError, IndexError):
        who = "-"
    finally:
        s.close()
    print(f"{t:.6f} {who}", flush=True)
    time.sleep(max(0.0, t + every - time.monotonic()))
"""


def with_client(names: Sequence[str]) -> NetLab:
    """The lab's network with one more namespace, the client, on the same bridges."""
    return NetLab([*names, CLIENT])


class Prober:
    """A client in its own namespace that keeps connecting to ``address``:``port``."""

    def __init__(self, net: NetLab, address: str, port: int) -> None:
        self.answers: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [
                *net.exec_prefix(CLIENT),
                sys.executable,
                "-S",
                "-c",
                _PROBE,
                address.split("/")[0],
                str(port),
                str(PROBE_EVERY),
                str(PROBE_TIMEOUT),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t, who = line.split()
            with self._lock:
                self.answers.append((float(t), who))

    def first_after(self, t: float, accept: Callable[[str], bool]) -> float | None:
        with self._lock:
            return next((at for at, who in self.answers if at >= t and accept(who)), None)

    def last(self) -> str | None:
        with self._lock:
            return self.answers[-1][1] if self.answers else None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._reader.join(timeout=5)

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def holders(lab: LabCluster, address: str) -> list[str]:
    """The servers whose lan interface holds ``address`` now."""
    assert lab.net is not None
    ip = address.split("/")[0]
    out: list[str] = []
    for name in lab.names:
        shown = subprocess.run(
            [*lab.net.exec_prefix(name), "ip", "-br", "addr", "show"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if any(word.split("/")[0] == ip for word in shown):
            out.append(name)
    return out


def failover_trial(
    lab: LabCluster, probe: Prober, host: ServerName, timeout: float
) -> tuple[float, float]:
    """Kill ``host``; seconds until another server answers at the address, and until the
    new copy of the service wrote its start line (its own start time included)."""
    wait_until(lambda: probe.last() == host, timeout=timeout, what=f"{host} answering")
    t0 = lab.kill_server(host)
    wait_until(
        lambda: probe.first_after(t0, lambda who: who not in ("-", host)) is not None,
        timeout=timeout,
        what="another server answering at the service address",
    )
    t1 = probe.first_after(t0, lambda who: who not in ("-", host))
    started = lab.first_start_after(TAG, t0)
    assert t1 is not None and started is not None
    return t1 - t0, started - t0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args(argv)
    gaps: list[float] = []
    starts: list[float] = []
    with LabCluster(3, network=with_client) as lab:
        assert isinstance(lab.net, NetLab)
        allow_flapping(lab)  # every trial fails the same application over again
        address = lan_service_address(lab)
        add_service(lab, address, PORT, "alpha", ["beta", "gamma"], tag=TAG)
        primary = ServerName("alpha")
        lab.wait_running(TAG, primary, timeout=a.timeout)
        with Prober(lab.net, address, PORT) as probe:
            for i in range(a.trials):
                gap, started = failover_trial(lab, probe, primary, a.timeout)
                gaps.append(gap)
                starts.append(started)
                print(
                    f"trial {i + 1}: answered after {gap * 1000:.0f} ms "
                    f"(service started after {started * 1000:.0f} ms)",
                    flush=True,
                )
                lab.restart_server(primary)
                lab.wait_running(TAG, primary, timeout=a.timeout)
        doubles = double_runs(lives(lab.ledger_lines()))
    gaps.sort()
    p50 = statistics.median(gaps)
    p99 = percentile(gaps, 99)
    print(
        f"address_failover: p50_ms={p50 * 1000:.0f} p99_ms={p99 * 1000:.0f} "
        f"max_ms={gaps[-1] * 1000:.0f} started_p50_ms={statistics.median(starts) * 1000:.0f} "
        f"failover_timeout_ms={FAILOVER * 1000:.0f} "
        f"trials={len(gaps)} double_runs={len(doubles)}"
    )
    return 1 if doubles else 0


if __name__ == "__main__":
    sys.exit(main())

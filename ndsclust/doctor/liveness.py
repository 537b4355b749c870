"""Doctor's liveness check: every server's state from the sentinels' reports
(``ndsclust.liveness``), with the fix that fits the state. A server heard on the disk or
the directory but not on the lan has a network problem, not a sentinel problem: its
sentinel runs, since something carries its pulse; the fix names the network.
"""

from __future__ import annotations

from collections.abc import Mapping

from ndsclust.doctor.findings import Finding, Level, PulseReading
from ndsclust.liveness import Judgement, Status, judge_by_pulse
from ndsclust.model import Server, ServerName, ServerState


def judge_readings(
    servers: Mapping[ServerName, Server],
    pulses: Mapping[ServerName, PulseReading],
    now: float,
    max_age: float,
) -> dict[ServerName, Judgement]:
    """Every server judged from the pulse readings: alive when its pulse is fresh."""
    return judge_by_pulse(
        {n: s.state for n, s in servers.items()},
        {n: p.stamp for n, p in pulses.items()},
        {n: p.report for n, p in pulses.items()},
        now,
        max_age,
    )


def network_fix(server: Server) -> str:
    where = ", ".join(server.addresses) or "its heartbeat addresses"
    return (
        f"the network of {server.name} is at fault, not its sentinel: check its lan "
        f"interfaces, cabling, routes and firewall (UDP to {where}) on {server.name} and "
        "its switch: ip -s link; ip route; ping its peers"
    )


def check_liveness(
    servers: Mapping[ServerName, Server],
    pulses: Mapping[ServerName, PulseReading],
    now: float,
    max_age: float,
) -> list[Finding]:
    """One finding per server: isolated (the network), down (the server or its sentinel),
    or up. Nothing when no sentinel publishes a liveness report (an older version)."""
    if not any(p.report is not None for p in pulses.values()):
        return []
    out = []
    for name, j in judge_readings(servers, pulses, now, max_age).items():
        s = servers[name]
        if j.alive is Status.ISOLATED:
            out.append(
                Finding(
                    "liveness",
                    Level.PROBLEM,
                    name,
                    f"{name} is isolated: {j.reason}; its sentinel runs",
                    network_fix(s),
                )
            )
        elif j.alive is Status.DOWN:
            quiet = Level.INFO if s.state is ServerState.DOWN else Level.PROBLEM
            fix = (
                f"start it again on {name}: systemctl start ndsclust-sentinel"
                if "stopped" in j.reason
                else f"check that {name} runs, then its sentinel: systemctl status "
                "ndsclust-sentinel; journalctl -u ndsclust-sentinel"
            )
            out.append(Finding("liveness", quiet, name, f"{name} is down: {j.reason}", fix))
        else:
            out.append(
                Finding("liveness", Level.OK, name, f"{name} is {j.state.value}: {j.reason}")
            )
    return out

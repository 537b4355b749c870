"""The failure detector: from what each liveness channel heard, which peers are alive.

A peer is dead only when every configured channel has been silent past that channel's
timeout; one live channel is enough to keep it alive. This is the patent's rule (FIG. 8,
process 806 then 808; claims 11-13): a momentary LAN failure must not fail anything over
while the drive pulse or the directory pulse still shows the peer working.

Pure: the caller passes the channels' observations and the monotonic clock reading.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from ndsclust.errors import ConfigError
from ndsclust.model import ServerName


@dataclass(frozen=True)
class Liveness:
    """What this server knows about its peers at one instant.

    ``seen`` maps every peer to the channels that currently see it (heard within that
    channel's timeout); an empty set means every channel is silent. ``grace`` holds the
    peers never heard on any channel while this sentinel is still inside its startup grace:
    they count as alive but no channel vouches for them. ``me`` is always alive.
    A server that is neither ``me`` nor a peer is unknown, and unknown is not alive.
    ``since`` maps the peers some channel hears now to the monotonic time from which they
    have been heard without a break (``heard_since`` carries it from cycle to cycle); a
    peer it leaves out has not been heard for any time that counts.
    """

    me: ServerName
    configured: frozenset[str]
    seen: Mapping[ServerName, frozenset[str]] = field(default_factory=dict, hash=False)
    grace: frozenset[ServerName] = frozenset()
    since: Mapping[ServerName, float] = field(default_factory=dict, hash=False)

    def alive(self, server: ServerName) -> bool:
        if server == self.me or server in self.grace:
            return True
        return bool(self.seen.get(server))

    def channels(self, server: ServerName) -> frozenset[str]:
        """The channels that currently hear ``server`` (empty for ``me`` and unknown servers)."""
        return self.seen.get(server, frozenset())

    def silent(self, server: ServerName) -> frozenset[str]:
        """The configured channels that do not hear ``server``: what a failover log line names."""
        return self.configured - self.channels(server)

    def dead(self) -> frozenset[ServerName]:
        return frozenset(s for s, chans in self.seen.items() if not chans and s not in self.grace)

    def visible(self) -> frozenset[ServerName]:
        """Peers some channel hears now; peers alive only by startup grace are not included."""
        return frozenset(s for s, chans in self.seen.items() if chans)

    def heard_for(self, server: ServerName, now: float) -> float:
        """How long, at ``now``, some channel has heard ``server`` without a break: 0 for a
        peer no channel hears now or with no ``since``, unbounded for ``me``."""
        if server == self.me:
            return math.inf
        first = self.since.get(server)
        if first is None or not self.seen.get(server):
            return 0.0
        return now - first

    def heard_over(self, server: ServerName, now: float, hold: float) -> bool:
        """Whether some channel has heard ``server`` without a break for ``hold`` at ``now``."""
        return self.heard_for(server, now) >= hold - EPSILON

    def settled(self, now: float, hold: float) -> frozenset[ServerName]:
        """The peers heard without a break for at least ``hold`` at ``now``."""
        return frozenset(s for s in self.since if self.heard_over(s, now, hold))


class Detector:
    """Combines channel observations into a ``Liveness`` (FIG. 8, 806 -> 808).

    ``timeouts`` names the channels that observe peers (lan, directory, disk) and how long
    each may stay silent; the witness observes no peer and takes no part here. ``started``
    is the monotonic time this sentinel started: a peer no channel has heard since then is
    alive until ``startup_grace`` has elapsed, so a freshly started sentinel does not find
    the whole cluster dead before its channels had a chance to hear anyone.
    """

    def __init__(
        self,
        timeouts: Mapping[str, float],
        me: ServerName,
        started: float,
        startup_grace: float,
    ) -> None:
        problems: list[str] = []
        if not timeouts:
            problems.append("channels: at least one liveness channel must be configured")
        for name, timeout in timeouts.items():
            if not timeout > 0:
                problems.append(
                    f"channels.{name}.timeout: {timeout} must be a positive number of seconds"
                )
        if startup_grace < 0:
            problems.append(f"timeouts.startup_grace: {startup_grace} must not be negative")
        if problems:
            raise ConfigError("detector", problems)
        self._timeouts = dict(timeouts)
        self._configured = frozenset(timeouts)
        self._me = me
        self._grace_until = started + startup_grace

    def liveness(
        self,
        observations: Mapping[str, Mapping[ServerName, float]],
        now: float,
        peers: Collection[ServerName],
        blind: Collection[str] = (),
    ) -> Liveness:
        """``observations[channel][peer]`` is the monotonic time ``channel`` last heard ``peer``.

        Channels missing from ``observations`` heard nobody; channels not configured are ignored.
        ``blind`` channels fail at this server's end (its shared-disk path lost, its socket
        gone): their silence says nothing about the peers, so they count as hearing every
        peer. A peer is then dead only by the channels that work here; a server whose disk
        path is cut does not take a peer that the others still hear on the disk for dead.
        (Fencing asks the opposite question and never passes ``blind``.)
        """
        seen: dict[ServerName, frozenset[str]] = {}
        grace: set[ServerName] = set()
        in_grace = now < self._grace_until
        for peer in peers:
            if peer == self._me:
                continue
            ever_heard = False
            current: set[str] = set()
            for channel, timeout in self._timeouts.items():
                if channel in blind:
                    current.add(channel)
                    continue
                last = observations.get(channel, {}).get(peer)
                if last is None:
                    continue
                ever_heard = True
                if now - last <= timeout:
                    current.add(channel)
            seen[peer] = frozenset(current)
            if in_grace and not ever_heard:
                grace.add(peer)
        return Liveness(me=self._me, configured=self._configured, seen=seen, grace=frozenset(grace))


# Times closer than this are equal: a simulated clock adds up steps in floating point.
EPSILON = 1e-9


def heard_since(liveness: Liveness, before: Mapping[ServerName, float], now: float) -> Liveness:
    """``liveness`` with ``since`` filled in, from ``before``, the ``since`` of the previous
    cycle's result: a peer some channel hears now keeps the time it was first heard again,
    or takes ``now`` when it was not heard in the previous cycle; a peer no channel hears
    drops out, so its next return counts from then. The shell calls this once per cycle
    and keeps the result's ``since``; a peer first heard between two cycles counts from the
    cycle that saw it, a little later than it was heard, never earlier.

    What it is for (FIG. 8): a server that starts, or rejoins after a fence or a stall,
    holds its starts for one failover timeout (``View.starts_held``). Its peers hear it
    again when that hold begins (a started sentinel sends nothing before its hold is
    running; a rejoining one begins its hold in the cycle in which it finds it was away or
    cut off, within about a loop interval of being heard again), so a peer heard for one
    failover timeout is past its hold, and a hand-over to it waits for that
    (``failback.target_held``).
    """
    since = {p: before.get(p, now) for p in liveness.visible()}
    return replace(liveness, since=since)


def isolated(liveness: Liveness, witness_reachable: bool | None, n_servers: int) -> bool:
    """True when this server must fence itself: it is the one cut off (docs/design.md section 4).

    With three or more servers the majority decides: fewer than a majority visible, counting
    this server, means the others may be failing our applications over, whatever the witness
    says (a witness reachable from both sides of a partition must not let both run).
    With two servers there is no majority to ask: this server is cut off when it hears its
    peer on no channel and cannot reach the witness either (claims 12, 43: "my peer died"
    versus "I am cut off"). ``witness_reachable`` is None when no witness is configured;
    a two-server cluster then never fences, because a dead peer and a cut-off self look the
    same (``ndsclust doctor`` warns about such a deployment). Peers alive only by startup
    grace are not visible: nothing has been heard from them yet.
    """
    if n_servers <= 1:
        return False
    visible = 1 + len(liveness.visible())
    if n_servers >= 3:
        return visible < n_servers // 2 + 1
    return visible == 1 and witness_reachable is False


def must_fence(liveness: Liveness, witness_reachable: bool | None, n_servers: int) -> bool:
    """Whether this server stops its programs now: it is ``isolated``, and no peer is still
    waiting to be heard for the first time after this sentinel started. A peer never heard
    yet, within the start-up grace, is no lost peer (nobody has been heard at start-up);
    but peers heard and then lost count at once, grace or not: they find this server dead
    after their failover timeout, however recently it started."""
    return not liveness.grace and isolated(liveness, witness_reachable, n_servers)

"""``build_sentinel(config)``: every connection, watch, channel and the supervisor of one
server's sentinel, made from its configuration and handed to ``loop.Sentinel``, which
wires the small named parts of the shell (executor, keeper, recorder, replication check,
rejoin runner) from them. Tests build a ``Parts`` of their own with fakes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ndsclust.config import Config
from ndsclust.fencing.fencer import Gate
from ndsclust.ldapstore.cache import ClusterCache
from ndsclust.ldapstore.connection import Providers
from ndsclust.ldapstore.store import APP_ATTRS, DEFAULT_OP_DEADLINE, Store
from ndsclust.ldapstore.watch import Watch
from ndsclust.sentinel.actions import KEPT_MOVES
from ndsclust.sentinel.antientropy import Sweeper, build_sweeper
from ndsclust.sentinel.channels import Channel
from ndsclust.sentinel.channels.directory import DirectoryChannel
from ndsclust.sentinel.channels.disk import DiskChannel
from ndsclust.sentinel.channels.lan import LanChannel
from ndsclust.sentinel.channels.witness import WitnessChannel
from ndsclust.sentinel.control import ControlServer
from ndsclust.sentinel.loop import Sentinel
from ndsclust.sentinel.serverwatch import REPORT_ATTRS
from ndsclust.sentinel.supervisor import Supervisor


class StoreFactory(Protocol):
    def __call__(
        self,
        providers: Providers | None = None,
        op_deadline: float = DEFAULT_OP_DEADLINE,
        name: str = "write",
    ) -> Store: ...


@dataclass
class Parts:
    """The I/O a sentinel is made of; ``store_for`` makes one more connection to the write
    provider (one per executor thread, the control socket's, the pulse writer's)."""

    cfg: Config
    providers: Providers  # the write provider list
    read_providers: Providers  # reads and watches: this server's own provider first
    store_for: StoreFactory
    cache: ClusterCache
    watch: Watch
    pulse_watch: Watch
    supervisor: Supervisor
    control: ControlServer | None = None
    channels: dict[str, Channel] = field(default_factory=dict)
    lan: LanChannel | None = None
    directory_channel: DirectoryChannel | None = None
    witness: WitnessChannel | None = None
    pulse_store: Store | None = None  # the pulse writer's own connection
    sweeper: Sweeper | None = None  # anti-entropy, on the one sentinel that sweeps


def build_channels(cfg: Config, parts: Parts) -> None:
    """The liveness channels the configuration asks for (docs/design.md section 4)."""
    me = cfg.server
    if cfg.lan:
        parts.lan = LanChannel(
            me=me,
            cluster=cfg.cluster,
            bind=list(cfg.lan.addresses),
            keys=dict(cfg.lan.keys),
            send_key_id=cfg.lan.send_key,
            interval=cfg.lan.interval,
            timeout=cfg.lan.timeout,
        )
        parts.channels["lan"] = parts.lan
    if cfg.directory_channel:
        parts.directory_channel = DirectoryChannel(me=me, timeout=cfg.directory_channel.timeout)
        parts.channels["directory"] = parts.directory_channel
    if cfg.disk:
        parts.channels["disk"] = DiskChannel(
            me=me,
            cluster=cfg.cluster,
            path=cfg.disk.path,
            servers=list(cfg.disk.servers),
            interval=cfg.disk.interval,
            timeout=cfg.disk.timeout,
            direct=cfg.disk.direct,
            sync=cfg.disk.sync,
        )
    if cfg.witness:
        parts.witness = WitnessChannel(
            address=cfg.witness.address,
            interval=cfg.witness.interval,
            timeout=cfg.witness.timeout,
        )


def build_parts(cfg: Config) -> Parts:
    d = cfg.directory
    write_providers = Providers(d.uris, d.credentials, servers=d.provider_servers)

    def store_for(
        providers: Providers | None = None,
        op_deadline: float = DEFAULT_OP_DEADLINE,
        name: str = "write",
    ) -> Store:
        return Store(
            providers or write_providers,
            d.suffix,
            base=d.base,
            pulse_base=d.pulse_suffix,
            op_deadline=op_deadline,
            event_limit=cfg.event_limit,
            name=name,
        )

    # Reads and watches prefer this server's own provider when it is configured.
    read_uris = list(d.uris)
    if d.local_uri:
        read_uris = [d.local_uri] + [u for u in d.uris if u != d.local_uri]
    read_providers = Providers(read_uris, d.credentials)
    control = None
    if cfg.control_socket:
        # The cluster-aware API (ndsclust.aware) talks to this server through the control
        # socket; its own connection keeps programs' marker writes out of the loop's way.
        control = ControlServer(
            cfg.control_socket,
            cfg.server,
            store_for(write_providers.sharing(timeout=2.0), name="control"),
            user=cfg.programs.user,
        )
    parts = Parts(
        cfg=cfg,
        providers=write_providers,
        read_providers=read_providers,
        store_for=store_for,
        cache=ClusterCache(move_kinds=frozenset(k.value for k in KEPT_MOVES)),
        watch=Watch(read_providers, d.base, attributes=APP_ATTRS, name="cluster"),
        pulse_watch=Watch(
            read_providers,
            d.pulse_suffix,
            filter="(objectClass=ndsclustPulseEntry)",
            attributes=("cn", "ndsclustPulse", *REPORT_ATTRS),
            name="pulse",
        ),
        supervisor=Supervisor(
            cfg.server,
            logger=logging.getLogger("ndsclust.programs"),
            control_socket=cfg.control_socket,
            lease_timeout=cfg.timeouts.lease,
        ),
        control=control,
    )
    build_channels(cfg, parts)
    parts.sweeper = build_sweeper(cfg)
    # The pulse carries the liveness report too, so it is written with or without the
    # directory channel (slowly without it: pulse.SLOW_INTERVAL).
    # It follows the channels' liveness as the write session does, so a cut-off provider
    # costs the pulses no socket timeout once its server is found dead.
    parts.pulse_store = store_for(write_providers.sharing(timeout=1.0), 2.0, name="pulse")
    return parts


def build_sentinel(
    cfg: Config,
    *,
    clock: Callable[[], float] = time.monotonic,
    ready: Callable[[], None] | None = None,
) -> Sentinel:
    """One server's sentinel, ready to ``run()``."""
    parts = build_parts(cfg)
    sentinel = Sentinel(parts, clock=clock, ready=ready)
    if cfg.fencing is not None:
        # Fence other servers before a takeover starts anything (docs/design.md section 4).
        fence_store = parts.store_for()
        sentinel.executor.fence_gate = Gate(
            cfg.server,
            cfg.fencing,
            store=lambda: fence_store,
            heard_now=sentinel.executor.heard_now,
            records=sentinel.recorder,
        )
    return sentinel

"""The lab's stack example: a service address and two programs that move as one.

``add_stack`` registers, on a running ``LabCluster``:

- ``<name>-db``: a sample program (``sample_app.py``) holding the service address
  (``ndsclustServiceAddress``): the address is added before it starts and removed after it
  stops;
- ``<name>-web``: a small TCP service (``echo_service.py``) that requires ``<name>-db``
  (``ndsclustRequires``) and answers ``<server> <tag>`` on ``port`` of every address of its
  server, the service address included.

Start order is address, db, web; stop order web, db, address; a failover, migrate,
failback or maintenance move of either moves both (docs/design.md section 3, "Stacks").
The equivalent LDIF for a real cluster is in README, "Service stacks".

``add_service`` registers the TCP service alone, holding the address itself: what a client
of the address needs and nothing more (``tools/bench_address.py`` times its failover).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable
from pathlib import Path

from ndsclust.lab.cluster import LabCluster
from ndsclust.model import App, AppState, AppType, ServerName, StateValue, Tag

ECHO_SERVICE = Path(__file__).with_name("echo_service.py")
SERVICE_HOST = 100  # the service address's host part on the lab's lan /24


def lan_service_address(lab: LabCluster, host: int = SERVICE_HOST) -> str:
    """``ip/24`` on the lan bridge of a lab whose servers are namespaces (``tools.netns``)."""
    subnet = getattr(lab.net, "subnet", None)
    if subnet is None:
        raise ValueError("the stack example needs a lab with network=NetLab")
    net: ipaddress.IPv4Network = subnet("lan")
    return f"{net.network_address + host}/{net.prefixlen}"


def add_stack(
    lab: LabCluster,
    address: str,
    port: int,
    primary: str,
    backups: Iterable[str],
    *,
    name: str = "svc",
    auto_recover: bool = True,
) -> tuple[App, App]:
    """Register the two applications, loaded on ``primary``; returns (db, web)."""
    servers = _placement(primary, backups, auto_recover)
    db = App(
        tag=Tag(f"{name}-db"),
        type=AppType.CAPABLE,
        command=lab.sample_command(f"{name}-db"),
        addresses=(address,),
        **servers,  # type: ignore[arg-type]
    )
    web = App(
        tag=Tag(f"{name}-web"),
        type=AppType.CAPABLE,
        command=echo_command(lab, f"{name}-web", port),
        requires=(db.tag,),
        **servers,  # type: ignore[arg-type]
    )
    store = lab.store()
    store.add_app(db)
    store.add_app(web)
    return db, web


def add_service(
    lab: LabCluster,
    address: str,
    port: int,
    primary: str,
    backups: Iterable[str],
    *,
    tag: str = "svc",
    auto_recover: bool = True,
) -> App:
    """Register the TCP service holding the service address itself, loaded on ``primary``."""
    app = App(
        tag=Tag(tag),
        type=AppType.CAPABLE,
        command=echo_command(lab, tag, port),
        addresses=(address,),
        **_placement(primary, backups, auto_recover),  # type: ignore[arg-type]
    )
    lab.store().add_app(app)
    return app


def echo_command(lab: LabCluster, tag: str, port: int) -> tuple[str, ...]:
    return (
        sys.executable,
        "-S",
        str(ECHO_SERVICE),
        "--ledger",
        str(lab.ledger),
        "--tag",
        tag,
        "--port",
        str(port),
    )


def _placement(primary: str, backups: Iterable[str], auto_recover: bool) -> dict[str, object]:
    return {
        "primary": ServerName(primary),
        "backups": tuple(ServerName(b) for b in backups),
        "host": ServerName(primary),
        "auto_recover": auto_recover,
        "state": StateValue(AppState.LOADING),
    }

"""``ndsclust web --listen ADDR:PORT``: the live console (``ndsclust.web``).

It reads the cluster with the directory options every command takes (any identity that
may read it) and follows it through the RFC 4533 watch, pushing every change to the
browsers; an operator signs in on the page with a directory identity of their own, with
which every action is written. Loopback by default; another address needs TLS
(``--tls-cert``/``--tls-key``) or ``--plain``, since the page carries operators'
passwords. Runs until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import ssl
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from ndsclust.cli import common
from ndsclust.errors import ConfigError
from ndsclust.ldapstore.follow import Follower

DEFAULT_LISTEN = "127.0.0.1:8470"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "web",
        help="a live console in the browser",
        description="Serve the live console: servers, applications and events as the "
        "directory shows them, updated as they change; operators sign in with their "
        "directory identity to migrate, load, unload, fail back, clean up and set "
        "maintenance.",
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="ADDR:PORT",
        help=f"where to serve the console (default {DEFAULT_LISTEN}; port 0: any free one)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    p.add_argument(
        "--plain",
        action="store_true",
        help="serve plain HTTP on an address other than loopback (passwords in the clear)",
    )
    p.add_argument("--url-file", metavar="FILE", help="write the console's URL to FILE")
    p.set_defaults(handler=cmd_web)


def listen_address(text: str, tls: bool, plain: bool) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
        number = int(port)
        if not sep or not 0 <= number < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError("--listen", [f"{text!r} is not ADDR:PORT, e.g. 127.0.0.1:8470"]) from None
    if not ip.is_loopback and not tls and not plain:
        raise ConfigError(
            "--listen",
            [f"{text} is not loopback: give --tls-cert and --tls-key, or --plain"],
        )
    return host, number


def cmd_web(args: argparse.Namespace) -> int:
    # Imported here: ndsclust.web uses the CLI's shared helpers (status_data), and the
    # other commands need none of it.
    from ndsclust.web.hub import Hub
    from ndsclust.web.server import Console, ConsoleServer, make_store_for

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert", ["HTTPS needs both --tls-cert and --tls-key"])
    address = listen_address(args.listen, bool(args.tls_cert), args.plain)
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError("--tls-cert", [f"{args.tls_cert}: {e}"]) from None
    st = common.store(args)
    hub = Hub(Follower(st, pulses=True, name="web"))
    store_for = make_store_for(
        list(st.providers.uris), st.suffix, st.base, st.pulse_base or "", args.connect_timeout
    )
    try:
        server = ConsoleServer(address, Console(hub, store_for, common.credentials(args)), tls=tls)
    except OSError as e:
        st.close()
        raise ConfigError("--listen", [f"{args.listen}: {e.strerror}"]) from None
    hub.start()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    print(f"web: console at {server.url}", flush=True)
    if args.url_file:
        Path(args.url_file).write_text(server.url + "\n")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
        server.server_close()
        st.close()
    print("web: stopped", file=sys.stderr)
    return 0

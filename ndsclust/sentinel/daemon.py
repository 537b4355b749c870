"""Running the sentinel as a service: logging, signals, systemd readiness, --daemon.

``ndsclust sentinel run --config FILE`` runs in the foreground (systemd ``Type=notify``:
READY=1 is sent once the directory view is complete); ``--daemon`` detaches through
python-daemon with a pid file. SIGTERM and SIGINT stop the sentinel cleanly: it unloads its
programs and hands them to their backups before exiting (a planned stop should not leave
applications down for a failover timeout). SIGHUP reloads the configuration: resources,
supervision, notify and log level take effect at once; a change of server name, directory
or channels is reported and needs a restart.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from types import FrameType

from ndsclust import config
from ndsclust.errors import ConfigError
from ndsclust.sentinel.build import build_sentinel
from ndsclust.sentinel.logline import log_event

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
RESTART_KEYS = (
    "server",
    "cluster",
    "directory",
    "lan",
    "disk",
    "witness",
    "directory_channel",
    "timeouts",
    "control_socket",
    "programs",
    "http",
)


def sd_notify(state: str) -> bool:
    """Send ``state`` to systemd's notify socket when there is one (sd_notify(3))."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(address)
            s.sendall(state.encode())
        except OSError as e:
            logging.getLogger("ndsclust.sentinel").warning("event=sd_notify_failed error=%s", e)
            return False
    return True


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level.upper())


def run(path: str, *, daemonize: bool = False, pidfile: str | None = None) -> int:
    """Load the configuration (exit 2 on any problem) and run the sentinel until stopped."""
    try:
        cfg = config.load(path)
    except ConfigError as e:
        print(f"ndsclust: {e}", file=sys.stderr)
        return 2
    if daemonize:
        import daemon
        import daemon.pidfile

        context = daemon.DaemonContext(
            pidfile=daemon.pidfile.TimeoutPIDLockFile(pidfile) if pidfile else None,
            stderr=sys.stderr,
            umask=0o022,
            working_directory="/",
        )
        with context:
            return _run(cfg, path)
    return _run(cfg, path)


def _run(cfg: config.Config, path: str) -> int:
    setup_logging(cfg.log_level)

    def ready() -> None:
        sd_notify("READY=1")

    sentinel = build_sentinel(cfg, ready=ready)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        sd_notify("STOPPING=1")
        sentinel.stop()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        try:
            new = config.load(path)
        except ConfigError as e:
            log_event(
                logging.ERROR, "reload_refused", server=cfg.server, error=str(e).replace("\n", "; ")
            )
            return
        changed = [k for k in RESTART_KEYS if getattr(new, k) != getattr(sentinel.cfg, k)]
        sentinel.reload(new)
        logging.getLogger().setLevel(new.log_level.upper())
        log_event(
            logging.INFO, "reloaded", server=cfg.server, needs_restart=",".join(changed) or "-"
        )

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    return sentinel.run()

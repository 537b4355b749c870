"""The sentinel's log lines: one line per event, ``event=... tag=... server=...``
(docs/style.md section 7)."""

from __future__ import annotations

import logging

from ndsclust import logfmt

log = logging.getLogger("ndsclust.sentinel")


def log_event(level: int, event: str, **fields: object) -> None:
    """One line per event: ``event=failover tag=web server=beta from=alpha``."""
    log.log(level, logfmt.encode(event, fields))

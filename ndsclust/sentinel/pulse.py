"""The pulse writer: advances this server's directory pulse (claim 44) through a
connection of its own, so a slow provider never delays the main loop and vice versa."""

from __future__ import annotations

import logging
import threading

from ndsclust.errors import NdsclustError
from ndsclust.ldapstore.store import Store
from ndsclust.model import ServerName
from ndsclust.sentinel.channels.directory import DirectoryChannel

log = logging.getLogger("ndsclust.sentinel")


def write_pulses(
    me: ServerName,
    store: Store,
    channel: DirectoryChannel,
    interval: float,
    stop: threading.Event,
) -> None:
    """Until ``stop``: one pulse every ``interval``; a failed one is logged at debug level
    (the peers see the pulse stop, which is what the channel is for)."""
    try:
        while not stop.wait(interval):
            try:
                store.write_pulse(me, channel.next_pulse())
            except NdsclustError as e:
                log.debug("event=pulse_failed server=%s error=%s", me, e)
    finally:
        store.close()

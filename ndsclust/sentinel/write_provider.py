"""Which provider the sentinel writes through, following what the channels hear."""

from __future__ import annotations

import logging

from ndsclust.ldapstore.connection import Providers
from ndsclust.model import ServerName
from ndsclust.sentinel.detector import Liveness
from ndsclust.sentinel.logline import log_event


class WriteProvider:
    """The provider list told each cycle which providers' servers are dead or heard."""

    def __init__(self, me: ServerName, providers: Providers) -> None:
        self.me = me
        self.providers = providers
        self.index = providers.order()[0]

    @property
    def uri(self) -> str:
        return self.providers.uris[self.index]

    def follow(self, liveness: Liveness) -> None:
        """Tell the provider list which providers' servers the channels find dead or hear,
        so the next write skips a dead server's provider without a socket timeout.

        No rejoin follows a change of write provider: what this view may lack of the new
        write provider's writes can only make a compare-and-swap fail (re-read, decide
        again), never succeed on an old value, and a failover must not wait for a barrier."""
        heard = {s for s, chans in liveness.seen.items() if chans} | {self.me}
        self.providers.set_liveness(liveness.dead(), heard)
        first = self.providers.order()[0]
        if first != self.index:
            was, self.index = self.index, first
            # One line per event: a move off a dead server's provider is said here (the
            # connections that follow it log at debug level); a return is said by the
            # connection when it actually goes back, once that provider caught up.
            if self.providers.dead(was):
                log_event(
                    logging.INFO,
                    "write_provider",
                    server=self.me,
                    provider=self.providers.uris[first],
                    was=self.providers.uris[was],
                    reason="its server is dead on every channel",
                )

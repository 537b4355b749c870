"""What the providers' contextCSNs say to anti-entropy (docs/design.md invariant 3,
"Anti-entropy"), read before any entry is: whether every provider answers
(``unreachable``), whether replication is still under way (``lagging``) or cut off between
two looks (``partition_reason``); and the ``Probe`` that tells when a provider (re)started
or came back, so a sweep can look soon after. ``antientropy.py`` holds its sweep while any
of these gives a reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ldap3
from ldap3.core.exceptions import LDAPException

from ndsclust.errors import ProviderUnreachable, StoreError
from ndsclust.ldapstore.connection import Credentials, open_connection
from ndsclust.ldapstore.replication import behind, read_context_csns

CSNs = Mapping[str, Mapping[str, str] | None]  # provider -> contextCSN by server id


def unreachable(csns: CSNs) -> str:
    """The providers that did not answer, as a reason to hold ("" when all did)."""
    gone = sorted(u for u, c in csns.items() if c is None)
    return "unreachable: " + ", ".join(gone) if gone else ""


def lagging(csns: CSNs) -> str:
    """Why the providers' contextCSNs say replication is still under way ("" when they all
    agree). Fact 10 divergence hides behind contextCSNs that agree; while they differ, a
    difference of entries may be a change on its way, and a provider the writes reached
    first (a write provider given back) may hold what the preferred one does not yet."""
    names = sorted(u for u, c in csns.items() if c is not None)
    parts = []
    for u in names:
        for o in names:
            a, b = csns[u], csns[o]
            assert a is not None and b is not None
            if u != o and behind(a, b):
                parts.append(f"{u} behind {o}")
    return "replication under way: " + "; ".join(parts) if parts else ""


def partition_reason(first: CSNs, second: CSNs) -> str:
    """Why replication says the providers are cut off from each other: a provider whose
    contextCSNs are behind another's on both looks and did not move between them is one the
    replication does not reach (a lag moves; a cut does not). "" when there is none."""
    parts = []
    names = sorted(u for u in second if first.get(u) is not None and second[u] is not None)
    for u in names:
        for o in names:
            a1, b1, a2, b2 = first[u], first[o], second[u], second[o]
            assert a1 is not None and b1 is not None and a2 is not None and b2 is not None
            if u != o and behind(a1, b1) and behind(a2, b2) and a1 == a2:
                parts.append(f"{u} behind {o}")
    return "replication cut off: " + "; ".join(parts) if parts else ""


class Probe:
    """Tells when a provider (re)started or came back, so the sweep can look soon after.

    Keeps one connection to each provider and reads its contextCSNs at each ``check()``: a
    connection that broke and opens again at once is a provider that restarted (or whose
    server did), one that could not be reached and answers again came back (a heal). Both
    are what leaves a provider diverged (docs/platform.md fact 10)."""

    def __init__(
        self, uris: Sequence[str], creds: Credentials, suffix: str, *, timeout: float = 2.0
    ) -> None:
        self.uris, self.creds, self.suffix, self.timeout = tuple(uris), creds, suffix, timeout
        self._conns: dict[str, ldap3.Connection] = {}
        self._down: set[str] = set()

    def _csns(self, uri: str) -> Mapping[str, str] | None:
        try:
            c = self._conns.get(uri)
            if c is None:
                c = self._conns[uri] = open_connection(uri, self.creds, timeout=self.timeout)
            csns = read_context_csns(c, self.suffix)
            if csns is not None:
                return csns
        except (LDAPException, ProviderUnreachable, StoreError):
            pass
        self._drop(uri)
        return None

    def _answers(self, uri: str) -> bool:
        return self._csns(uri) is not None

    def whole(self) -> str:
        """Why a sweep would be held now ("" when every provider answers and their
        contextCSNs agree): asked before a sweep process is started for nothing."""
        csns = {u: self._csns(u) for u in self.uris}
        return unreachable(csns) or lagging(csns)

    def _drop(self, uri: str) -> None:
        c = self._conns.pop(uri, None)
        if c is not None:
            try:
                c.unbind()
            except LDAPException:
                pass

    def check(self) -> str:
        """Why to sweep now ("provider_restart", "provider_back"), or ""."""
        why = ""
        for u in self.uris:
            had = u in self._conns
            if self._answers(u):
                if u in self._down:
                    self._down.discard(u)
                    why = why or "provider_back"
            elif had and self._answers(u):  # its connection broke, a new one works
                why = why or "provider_restart"
            else:
                self._down.add(u)
        return why

    def close(self) -> None:
        for u in list(self._conns):
            self._drop(u)

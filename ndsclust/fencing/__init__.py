"""Fencing other servers: proof of death from a fence agent before a takeover starts
anything (docs/design.md section 4, "Fencing other servers").

- ``config``: the ``fencing`` section of the sentinel configuration, checked when it is
  read (``Fencing``, ``Device``, ``parse``);
- ``agent``: running an agent by the fence-agents convention, reading its metadata;
- ``record``: the fence record of a server, as stored in the directory (read and
  written as a ``FenceRecord`` by ``ndsclust.ldapstore.fence_records``);
- ``plan``: the pure decisions (owe, block, whose turn, backoff, outcome);
- ``fencer``: the shell (the records' compare-and-swaps, the attempts, the executor's gate).
"""

from __future__ import annotations

from ndsclust.fencing.config import Device, Fencing, parse

__all__ = ["Device", "Fencing", "parse"]

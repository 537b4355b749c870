"""Anti-entropy run by the sentinels themselves (docs/design.md invariant 3, "Anti-entropy").

A lab's provider is made to diverge offline (stopped, its database changed with
slapmodify, started again): its contextCSNs agree with its peers' afterwards, so only a
comparison by value sees it. Nobody asks for a repair: the sentinel beside the first
provider notices the restart, sweeps in a child process and repairs as its own server
identity, under the shipped ACLs. The ``lab`` fixture checks the ledger for double runs.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.model import ServerName

LabFactory = Callable[..., LabCluster]

A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


def test_sentinels_repair_a_provider_that_diverged_offline(lab: LabFactory) -> None:
    c = lab(3)
    c.add_app("web", A, [B, C])
    c.wait_running("web", A)
    store = c.store()
    event = store.record_event("note", server=B, text="written before the divergence").dn
    stray = store.app_dn("stray")
    d = c.directory
    d.wait_converged(15)
    odd = d.providers[2]
    odd.stop()
    subprocess.run(
        ["slapmodify", "-F", str(odd.conf_dir), "-b", d.suffix, "-q"],
        input=(
            f"dn: {event}\nchangetype: delete\n\n"
            f"dn: {stray}\nchangetype: add\nobjectClass: top\nobjectClass: ndsclustApplication\n"
            "ndsclustTag: stray\nndsclustType: capable\nndsclustCommand: /bin/sleep 1\n"
            "ndsclustPrimaryServer: alpha\n"
        ).encode(),
        check=True,
        capture_output=True,
    )
    odd.start()
    began = time.monotonic()

    def repaired() -> bool:
        trees = [d.read_tree(i) for i in range(3)]
        return all(event.lower() in t and stray.lower() not in t for t in trees)

    wait_until(repaired, 90, what="the sentinels to repair provider 2 by themselves")
    took = time.monotonic() - began
    repairs = [e for e in store.events() if e.kind == "repair"]
    assert {e.server for e in repairs} == {A}, repairs
    texts = " ".join(e.text for e in repairs)
    assert f"dn={event.lower()}" in texts and "before=absent" in texts
    assert f"dn={stray.lower()}" in texts and "action=delete" in texts and "after=absent" in texts
    assert "ok=False" not in texts
    wait_until(  # the sweep's own line comes after its look behind the repairs
        lambda: "event=antientropy " in c.log_tail(A, 400) and "repaired=2" in c.log_tail(A, 400),
        30,
        what="alpha's sentinel to log the sweep",
    )
    for other in (B, C):
        assert "event=repair " not in c.log_tail(other, 400)  # one sentinel sweeps
    assert c.running_on("web") == {A}
    print(f"repaired {took:.1f}s after the provider started again")

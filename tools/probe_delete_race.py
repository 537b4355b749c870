#!/usr/bin/env python3
"""Does a delete survive a concurrent modify of the same entry on another provider?

Starts a throwaway three-provider cluster (``DirectoryCluster``, the shipped templates),
adds ``--pairs`` application entries and, for each, releases two threads at once: one
deletes the entry on provider 0, the other replaces its state on provider 1, both before
either change has replicated. Once replication has settled (every contextCSN equal, then
``--settle`` seconds more) it reads every provider: an entry still present anywhere came
back. A control round makes the modifies first and the deletes only once every provider
holds them (every contextCSN equal), which is how ``ndsclust app remove`` orders them;
``--control-wait provider0`` deletes each as soon as its modify has reached provider 0,
where the delete is made, instead.

The last line is machine-readable:
``delete_race: pairs=<n> back_everywhere=<n> back_somewhere=<n> control_back=<n>``
(``back_somewhere`` counts entries present on some providers only: divergence).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import ldap3

from ndsclust.lab.directory import DirectoryCluster, wait_until


def _conn(c: DirectoryCluster, index: int) -> ldap3.Connection:
    return ldap3.Connection(
        ldap3.Server(c.uris[index], connect_timeout=2, get_info=ldap3.NONE),
        c.admin_dn,
        c.admin_password,
        auto_bind=True,
        receive_timeout=5,
    )


def _add(conn: ldap3.Connection, c: DirectoryCluster, tag: str) -> str:
    dn = f"ndsclustTag={tag},{c.suffix}"
    attrs = {
        "ndsclustTag": tag,
        "ndsclustType": "capable",
        "ndsclustCommand": "/bin/true",
        "ndsclustPrimaryServer": "alpha",
        "ndsclustHostServer": "beta",
        "ndsclustState": "loading",
    }
    if not conn.add(dn, ["ndsclustApplication"], attrs):
        raise SystemExit(f"probe: cannot add {dn}: {conn.result}")
    return dn


def _state(conn: ldap3.Connection, dn: str) -> bool:
    return bool(conn.modify(dn, {"ndsclustState": [(ldap3.MODIFY_REPLACE, ["running"])]}))


def _present(c: DirectoryCluster, dn: str) -> list[bool]:
    return [bool(c.read_tree(p.index, dn)) for p in c.providers]


def run(pairs: int, settle: float, control_wait: str) -> str:
    with tempfile.TemporaryDirectory(prefix="delete-race-") as base:
        c = DirectoryCluster(base_dir=Path(base), n=3)
        c.start()
        a = b = None
        try:
            a, b = _conn(c, 0), _conn(c, 1)
            racing = [_add(a, c, f"race{k}") for k in range(pairs)]
            control = [_add(a, c, f"ctl{k}") for k in range(pairs)]
            c.wait_converged(timeout=30)
            for k, dn in enumerate(racing):
                gate = threading.Barrier(2)

                def delete(dn: str = dn) -> None:
                    gate.wait()
                    a.delete(dn)

                def modify(dn: str = dn, k: int = k) -> None:
                    gate.wait()
                    time.sleep(0.0005 * (k % 5))  # spread the pairs over a few orders
                    _state(b, dn)

                threads = [threading.Thread(target=delete), threading.Thread(target=modify)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            for dn in control:
                _state(b, dn)
                if control_wait == "provider0":  # only where the delete goes
                    wait_until(
                        lambda dn=dn: (
                            c.read_tree(0, dn).get(dn.lower(), {}).get("ndsclustState")
                            == ("running",)
                        ),
                        timeout=10,
                        what=f"the modify of {dn} on provider 0",
                    )
                    a.delete(dn)
            if control_wait == "all":
                c.wait_converged(timeout=60)  # every modify on every provider
                for dn in control:
                    a.delete(dn)
            c.wait_converged(timeout=60)
            time.sleep(settle)
            c.wait_converged(timeout=60)
            seen = {dn: _present(c, dn) for dn in racing + control}
        finally:
            for conn in (a, b):
                if conn is not None:
                    conn.unbind()
            c.stop()
    everywhere = sum(all(seen[dn]) for dn in racing)
    somewhere = sum(any(seen[dn]) and not all(seen[dn]) for dn in racing)
    control_back = sum(any(seen[dn]) for dn in control)
    return (
        f"delete_race: pairs={pairs} back_everywhere={everywhere} "
        f"back_somewhere={somewhere} control_back={control_back}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--pairs", type=int, default=50, help="racing delete/modify pairs")
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait after settling")
    p.add_argument(
        "--control-wait",
        choices=("all", "provider0"),
        default="all",
        help="in the control round, delete once every provider holds the modifies "
        "(default) or once provider 0 holds each",
    )
    a = p.parse_args()
    print(run(a.pairs, a.settle, a.control_wait))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

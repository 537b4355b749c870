"""Cost of one anti-entropy sweep at N entries (docs/design.md invariant 3, "Anti-entropy").

Builds a 3-provider lab, loads N events into every provider offline (the same entries,
entryUUID and entryCSN included, as if replicated), then runs sweeps and prints::

    antientropy: entries=<n> providers=3 read_ms=<one provider read> sweep_ms=<whole sweep>
        differing=<n> held_kb=<one provider's digests> look_peak_kb=<heap peak of that read>
        sweep_peak_kb=<heap peak of a whole sweep> alone_rss_mb=<peak RSS of a process that
        only sweeps, twice> alone_cpu_s=<its CPU time per sweep>
        child_rss_mb=<peak RSS of the sentinel's sweep process> child_cpu_s=<its CPU time,
        start-up included> child_ms=<its wall time> parent_rss_mb=<the caller's RSS before
        and after those sweeps> probe_cpu_ms=<CPU of one probe of every provider>
        probe_pct=<that every PROBE_INTERVAL, in percent of a core>

The ``child_*`` figures are those of the sweep as a sentinel runs it
(``ndsclust.sentinel.sweep_child.ChildSweep``: one short-lived process per sweep).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

from ndsclust.lab.directory import DirectoryCluster
from ndsclust.ldapstore.antientropy import Repairer, read_digests
from ndsclust.ldapstore.antientropy_probe import Probe
from ndsclust.ldapstore.connection import Providers, open_connection
from ndsclust.ldapstore.store import Store, generalized_time
from ndsclust.sentinel.antientropy import PROBE_INTERVAL
from ndsclust.sentinel.sweep_child import ChildSweep, Job


def ldif(base: str, n: int) -> str:
    now = time.time()
    out = []
    for i in range(n):
        t = generalized_time(now - n + i)
        csn = f"{t[:14]}.{i % 1000000:06d}Z#000000#001#000000"
        out.append(
            f"dn: ndsclustEventId=bench-{i},ou=events,{base}\nobjectClass: top\n"
            f"objectClass: ndsclustEvent\nndsclustEventId: bench-{i}\nndsclustEventTime: {t}\n"
            f"ndsclustEventKind: bench\nndsclustEventText: entry {i} of the sweep benchmark\n"
            f"entryUUID: {uuid.uuid4()}\nentryCSN: {csn}\n"
        )
    return "\n".join(out)


CHILD = """
import json, resource, sys
from ndsclust.ldapstore.antientropy import Repairer
from ndsclust.ldapstore.connection import Credentials
a = json.loads(sys.argv[1])
rep = Repairer(uris=a["uris"], creds=Credentials(bind_dn=a["dn"], password=a["pw"],
    allow_plain=True, ca_file=a["ca"]), base=a["base"], suffix=a["suffix"], write=lambda: a["uris"][0],
    record=lambda kind, text: None)
t0 = resource.getrusage(resource.RUSAGE_SELF)
rep.sweep()
rep.sweep()
t1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (t1.ru_utime + t1.ru_stime - t0.ru_utime - t0.ru_stime) / 2
print(json.dumps({"rss_mb": t1.ru_maxrss / 1024, "cpu_s": cpu}))
"""


def alone(cluster: DirectoryCluster, base: str) -> tuple[float, float]:
    """Peak RSS and CPU seconds per sweep of a process that imports ndsclust and sweeps."""
    arg = {
        "uris": cluster.uris,
        "dn": cluster.admin_dn,
        "pw": cluster.admin_password,
        "ca": cluster.ca_file,
        "base": base,
        "suffix": cluster.suffix,
    }
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(arg)], check=True, capture_output=True, text=True
    )
    got = json.loads(out.stdout)
    return float(got["rss_mb"]), float(got["cpu_s"])


# What ChildSweep starts instead of the interpreter: the sweep child, then its own peak RSS
# and CPU time appended to the file named by BENCH_CHILD_USAGE.
WRAPPER = """#!{python}
import json, os, resource, runpy, sys
sys.argv = [sys.argv[0], sys.argv[-1]]  # as -m gives them: the parent's pid
try:
    runpy.run_module("ndsclust.sentinel.sweep_child", run_name="__main__")
except SystemExit:
    pass
r = resource.getrusage(resource.RUSAGE_SELF)
with open(os.environ["BENCH_CHILD_USAGE"], "a") as f:
    f.write(json.dumps({{"rss_mb": r.ru_maxrss / 1024, "cpu_s": r.ru_utime + r.ru_stime}}) + "\\n")
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_sweeps(cluster: DirectoryCluster, base: str, n: int) -> tuple[float, float, float]:
    """Peak RSS, CPU seconds and wall milliseconds of the sentinel's sweep process (worst of
    ``n`` sweeps)."""
    with tempfile.TemporaryDirectory() as tmp:
        wrapper, usage = Path(tmp) / "python", Path(tmp) / "usage"
        wrapper.write_text(WRAPPER.format(python=sys.executable))
        wrapper.chmod(0o755)
        os.environ["BENCH_CHILD_USAGE"] = str(usage)
        job = Job(tuple(cluster.uris), cluster.admin_credentials(), base, cluster.suffix, "bench")
        sweep = ChildSweep(job, write=lambda: cluster.uris[0], python=str(wrapper))
        wall = 0.0
        for _ in range(n):
            t0 = time.monotonic()
            out = sweep.sweep()
            wall = max(wall, (time.monotonic() - t0) * 1000)
            assert not out.held, out.held
        got = [json.loads(line) for line in usage.read_text().splitlines()]
    return max(g["rss_mb"] for g in got), max(g["cpu_s"] for g in got), wall


def probe_cpu_ms(cluster: DirectoryCluster, rounds: int = 50) -> float:
    """Process CPU milliseconds of one ``Probe.check`` (its connections kept, as the sweeping
    sentinel keeps them)."""
    probe = Probe(cluster.uris, cluster.admin_credentials(), cluster.suffix)
    try:
        probe.check()  # opens the connections
        t0 = time.process_time()
        for _ in range(rounds):
            probe.check()
        return (time.process_time() - t0) * 1000 / rounds
    finally:
        probe.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--sweeps", type=int, default=3)
    ap.add_argument("--tls", action="store_true", help="providers over TLS, as deployed")
    args = ap.parse_args()
    with DirectoryCluster(n=3, tls=args.tls) as cluster:
        cluster.wait_replicating(15)
        store = Store(Providers(cluster.uris, cluster.admin_credentials()), cluster.suffix)
        store.ensure_base()
        cluster.wait_converged(10)
        data = ldif(store.base, args.entries)
        for p in cluster.providers:
            p.stop()
        for p in cluster.providers:
            subprocess.run(
                ["slapadd", "-q", "-F", str(p.conf_dir), "-b", cluster.suffix],
                input=data.encode(),
                check=True,
                capture_output=True,
            )
        for p in cluster.providers:
            p.start()
        cluster.wait_replicating(30)
        rep = Repairer(
            uris=cluster.uris,
            creds=cluster.admin_credentials(),
            base=store.base,
            suffix=cluster.suffix,
            write=lambda: cluster.uris[0],
            record=lambda kind, text: None,
        )
        p_ms = probe_cpu_ms(cluster)
        parent_before = rss_mb()
        c_rss, c_cpu, c_ms = child_sweeps(cluster, store.base, args.sweeps)
        parent_after = rss_mb()
        conn = open_connection(cluster.uris[0], cluster.admin_credentials())
        t0 = time.monotonic()
        read_digests(conn, store.base)
        read_ms = (time.monotonic() - t0) * 1000
        tracemalloc.start()
        one = read_digests(conn, store.base)
        held_kb, look_peak_kb = (v / 1024 for v in tracemalloc.get_traced_memory())
        tracemalloc.stop()
        del one
        conn.unbind()
        best = float("inf")
        for _ in range(args.sweeps):  # timed without tracemalloc, which slows allocation
            t0 = time.monotonic()
            out = rep.sweep()
            best = min(best, (time.monotonic() - t0) * 1000)
        tracemalloc.start()
        rep.sweep()
        peak_kb = tracemalloc.get_traced_memory()[1] / 1024
        tracemalloc.stop()
        rep.close()
        store.close()
        alone_rss, cpu_s = alone(cluster, store.base)
        print(
            f"antientropy: entries={out.entries} providers=3 read_ms={read_ms:.0f} "
            f"sweep_ms={best:.0f} differing={len(out.differing)} held_kb={held_kb:.0f} "
            f"look_peak_kb={look_peak_kb:.0f} sweep_peak_kb={peak_kb:.0f} "
            f"alone_rss_mb={alone_rss:.1f} alone_cpu_s={cpu_s:.2f} "
            f"child_rss_mb={c_rss:.1f} child_cpu_s={c_cpu:.2f} child_ms={c_ms:.0f} "
            f"parent_rss_mb={parent_before:.1f}->{parent_after:.1f} "
            f"probe_cpu_ms={p_ms:.2f} probe_pct={p_ms / 10 / PROBE_INTERVAL:.3f}"
        )


if __name__ == "__main__":
    main()

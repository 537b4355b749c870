#!/usr/bin/env python3
"""Resident memory of the sentinel's imports: what ``ndsclust sentinel run`` loads.

Runs ``--runs`` fresh interpreters that do what ``python -m ndsclust sentinel run`` does up
to reading the configuration (a missing file here, so the run ends there with status 2,
everything it imports imported) and prints, from the median run, the resident memory at
exit (VmRSS, and RssAnon: the process's own pages), how many modules it loaded and which
of the libraries the sentinel does not use at run time it loaded nevertheless. ``--bare``
gives the same figures for an interpreter that imports nothing, for comparison.

The last line is machine-readable:
``imports: rss_mb=<n> anon_mb=<n> modules=<n> bare_rss_mb=<n> unused=<names or ->``.

    tools/bench_import_memory.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

# Libraries the sentinel has no use for unless configured so (HTTP metrics: prometheus_client).
UNUSED = (
    "rich",
    "cryptography",
    "prometheus_client",
    "argcomplete",
    "importlib.metadata",
    "xml.etree.ElementTree",
    "ndsclust.web",
    "ndsclust.simulate",
    "ndsclust.lab",
    "ndsclust.doctor",
    "ndsclust.pki",
    "ndsclust.sentinel.guard",
    "ndsclust.sentinel.httpd",
    "ndsclust.ldapstore.antientropy",
)

PROBE = """
import atexit, json, sys
def report():
    s = {k: int(v.split()[0]) for k, v in
         (l.split(":", 1) for l in open("/proc/self/status") if l.startswith(("VmRSS", "RssAnon")))}
    print(json.dumps({"rss": s["VmRSS"], "anon": s["RssAnon"], "modules": len(sys.modules),
                      "unused": [m for m in UNUSED if m in sys.modules]}))
atexit.register(report)
"""

SENTINEL = "from ndsclust.cli import main; sys.exit(main(['sentinel', 'run', '--config', '/nonexistent/sentinel.yaml']))"


def run(body: str) -> dict[str, object]:
    code = f"UNUSED = {UNUSED!r}\n{PROBE}\n{body}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def median_run(body: str, runs: int) -> dict[str, object]:
    got = sorted((run(body) for _ in range(runs)), key=lambda r: int(str(r["rss"])))
    return got[len(got) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    bare = median_run("pass", a.runs)
    sentinel = median_run(SENTINEL, a.runs)
    unused = sentinel["unused"]
    assert isinstance(unused, list)
    print(
        f"imports: rss_mb={int(str(sentinel['rss'])) / 1024:.1f} "
        f"anon_mb={int(str(sentinel['anon'])) / 1024:.1f} modules={sentinel['modules']} "
        f"bare_rss_mb={int(str(bare['rss'])) / 1024:.1f} unused={','.join(unused) or '-'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

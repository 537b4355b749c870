"""Start-up time of the lab directory cluster.

    python tools/bench_cluster_start.py [--providers 3] [--runs 5]

Prints, per run, the seconds from the first slapd spawn until every provider answers and
replicates from every other one (start_s), and the whole ``start()`` call including the
configuration and slapadd before it (total_s); then the median and the maximum.
"""

from __future__ import annotations

import argparse
import statistics
import time

from ndsclust.lab.directory import DirectoryCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    starts = []
    for run in range(1, args.runs + 1):
        cluster = DirectoryCluster(n=args.providers)
        try:
            began = time.monotonic()
            start = cluster.start()
            total = time.monotonic() - began
        finally:
            cluster.stop()
        starts.append(start)
        print(f"run={run} providers={args.providers} start_s={start:.3f} total_s={total:.3f}")
    print(
        f"providers={args.providers} runs={args.runs} "
        f"median_start_s={statistics.median(starts):.3f} max_start_s={max(starts):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

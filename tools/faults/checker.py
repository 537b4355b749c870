"""The invariants of docs/design.md section 4, checked from the outside after faults.

- double runs (invariant 1): two copies of one tag alive at one instant on two servers,
  from the shared ledger (``ndsclust.ledger``);
- liveness (invariant 2): once the faults have stopped and every server is up again, each
  application runs on exactly one server within ``budget`` seconds; one that does not
  (none running, or more than one) is a violation, reported with what the directory says;
- lost or diverged entries (invariant 3): every provider holds the same entries with the
  same values under the cluster suffix, compared by value (a provider may keep another
  entryCSN for equal values, docs/platform.md fact 9), once replication has had
  ``timeout`` seconds to settle; and every entry in ``expected`` is there with the values given.

    python tools/faults/checker.py LAB_DIR

checks a running lab (``ndsclust lab up --dir LAB_DIR``, or a lab a test left running):
its ledger and every provider's tree; it exits 1 when it found anything.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ndsclust.lab.directory import DirectoryCluster, LabError
from ndsclust.ldapstore.replication import Tree, tree_differences
from ndsclust.ledger import DoubleRun, double_runs, lives


@dataclass(frozen=True, slots=True)
class LivenessViolation:
    tag: str
    running_on: tuple[str, ...]
    detail: str

    def __str__(self) -> str:
        where = ",".join(self.running_on) or "nowhere"
        return f"liveness tag={self.tag} running_on={where} {self.detail}"


@dataclass(frozen=True, slots=True)
class Divergence:
    dn: str
    detail: str

    def __str__(self) -> str:
        return f"diverged dn={self.dn} {self.detail}"


@dataclass(frozen=True, slots=True)
class Report:
    double_runs: tuple[DoubleRun, ...] = ()
    liveness: tuple[LivenessViolation, ...] = ()
    diverged: tuple[Divergence, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.double_runs or self.liveness or self.diverged)

    def lines(self) -> list[str]:
        out = [
            f"double_run tag={d.tag} {d.first.server}/{d.first.pid} "
            f"[{d.first.start:.3f}..{d.first.end:.3f}] {d.second.server}/{d.second.pid} "
            f"[{d.second.start:.3f}..{d.second.end:.3f}] overlap={d.overlap:.3f}s"
            for d in self.double_runs
        ]
        out += [str(v) for v in self.liveness]
        out += [str(d) for d in self.diverged]
        return out + list(self.notes)


def check_double_runs(ledger_lines: Iterable[str]) -> list[DoubleRun]:
    return double_runs(lives(ledger_lines))


def check_liveness(
    tags: Sequence[str],
    running_on: Callable[[str], set[str]],
    describe: Callable[[str], str],
    budget: float,
) -> list[LivenessViolation]:
    """Wait up to ``budget`` seconds for every tag to run on exactly one server."""
    deadline = time.monotonic() + budget
    pending = list(tags)
    while pending:
        pending = [t for t in pending if len(running_on(t)) != 1]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return [LivenessViolation(t, tuple(sorted(running_on(t))), describe(t)) for t in pending]


def compare_trees(
    trees: Mapping[int, Tree], expected: Mapping[str, Mapping[str, Sequence[str]]] | None = None
) -> list[Divergence]:
    """Entries that differ between providers (by value), or that lack what ``expected``
    says an operator wrote (DN -> attribute -> values)."""
    indexes = sorted(trees)
    out = [
        Divergence(dn, detail)
        for dn, detail in tree_differences({f"provider {i}": t for i, t in trees.items()})
    ]
    for dn, attrs in sorted((expected or {}).items()):
        for i in indexes:
            entry = trees[i].get(dn.lower())
            if entry is None:
                out.append(Divergence(dn, f"lost: not on provider {i}"))
                break
            lower = {a.lower(): v for a, v in entry.items()}
            wrong = [a for a, v in attrs.items() if lower.get(a.lower()) != tuple(sorted(v))]
            if wrong:
                out.append(
                    Divergence(
                        dn,
                        f"lost: provider {i} has "
                        + ", ".join(f"{a}={lower.get(a.lower())}" for a in wrong),
                    )
                )
                break
    return out


def check_directory(
    directory: DirectoryCluster,
    *,
    timeout: float = 10.0,
    expected: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    known: Collection[str] = (),
) -> list[Divergence]:
    """Compare every running provider's tree, again and again for up to ``timeout``
    seconds while writes are still replicating; what still differs then. Divergences
    whose text is in ``known`` (found before, and lasting) are not waited for."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            trees = {
                p.index: directory.read_tree(p.index)
                for p in directory.providers
                if p.running and not p.paused
            }
            found = compare_trees(trees, expected)
        except LabError as e:
            found = [Divergence("-", f"cannot read a provider: {e}")]
        if all(str(d) in known for d in found) or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("lab_dir", type=Path, help="base directory of a running lab")
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to let replication settle before a difference counts",
    )
    a = p.parse_args(argv)
    try:
        directory = DirectoryCluster.attach(a.lab_dir)
        ledger = a.lab_dir / "ledger"
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        report = Report(
            double_runs=tuple(check_double_runs(lines)),
            diverged=tuple(check_directory(directory, timeout=a.timeout)),
        )
    except LabError as e:
        print(f"checker: {e}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    print(f"checker: double_runs={len(report.double_runs)} diverged_entries={len(report.diverged)}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

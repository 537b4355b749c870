"""The dedicated fuzz run (docs/design.md invariant 4: bad input is contained).

Runs the targets of the CI fuzz suites (``tests/unit/test_fuzz_*.py``, each offering
``fuzz_targets()``) with many more generated cases: directory entries and the cluster
cache, heartbeat datagrams through the codec and the LAN channel's packet handler, YAML
configurations, control-socket sessions. Prints one line per target and a total; exits 1
if any target found an input it did not contain (the falsifying case is printed).

    .venv/bin/python tools/fuzz.py                  # 1,200 cases per target, >= 10,000 in all
    .venv/bin/python tools/fuzz.py --examples 300 --target heartbeat --seed 7
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
SUITES = sorted((ROOT / "tests" / "unit").glob("test_fuzz_*.py"))
DEFAULT_EXAMPLES = 1200
MINIMUM_TOTAL = 10_000
MAX_LINE = 300  # a failing case can hold a 65,537-character value


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ndsclust_fuzz_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(
    name: str,
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], None],
    examples: int,
    rng_seed: int | None,
) -> tuple[int, float, str | None]:
    """Run one target; (cases run, seconds, failure text or None)."""
    count = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(case: Any) -> None:
        nonlocal count
        count += 1
        check(case)

    test = seed(rng_seed)(prop) if rng_seed is not None else prop
    start = time.monotonic()
    try:
        test()
    except Exception as e:
        lines = [
            *traceback.format_exception_only(type(e), e)[-1:],
            *dict.fromkeys(getattr(e, "__notes__", [])),
        ]
        text = "\n".join(ln.rstrip() for ln in lines)
        return (
            count,
            time.monotonic() - start,
            "\n".join(
                ln if len(ln) <= MAX_LINE else ln[:MAX_LINE] + f"... ({len(ln)} characters)"
                for ln in text.splitlines()
            ),
        )
    return count, time.monotonic() - start, None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--examples",
        type=int,
        default=DEFAULT_EXAMPLES,
        help="generated cases per target (default %(default)d)",
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only targets whose name contains TEXT (repeatable)",
    )
    p.add_argument("--seed", type=int, help="random seed, to repeat a run")
    args = p.parse_args(argv)

    failures = 0
    total = 0
    started = time.monotonic()
    print(f"{'target':<40} {'cases':>8} {'seconds':>8}  result")
    with ExitStack() as stack:
        for path in SUITES:
            targets = stack.enter_context(load(path).fuzz_targets())
            for name, (strategy, check) in targets.items():
                if args.target and not any(t.lower() in name.lower() for t in args.target):
                    continue
                count, seconds, failure = run(name, strategy, check, args.examples, args.seed)
                total += count
                print(
                    f"{name:<40} {count:>8} {seconds:>8.1f}  {'FAILED' if failure else 'ok'}",
                    flush=True,
                )
                if failure:
                    failures += 1
                    print("    " + failure.replace("\n", "\n    "), flush=True)
    print(
        f"{'total':<40} {total:>8} {time.monotonic() - started:>8.1f}  "
        f"{failures} target{'s' if failures != 1 else ''} failed"
    )
    if not args.target and failures == 0 and total < MINIMUM_TOTAL:
        print(f"fewer than {MINIMUM_TOTAL} cases: raise --examples", file=sys.stderr)
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

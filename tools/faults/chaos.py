"""Randomized fault schedules against one lab of network namespaces.

    python tools/faults/chaos.py --trials N --seed S [--servers 3] [--budget SECONDS]
                                 [--timings FILE | --lab-timings] [--stress]
    python tools/faults/chaos.py --replay S-I        # trial I of seed S again

The lab runs with the timings of a sentinel configuration file, by default
``deploy/sentinel.example.yaml`` (its heartbeat intervals, witness and timeouts, read by
``tools.timings``): the deployed shape. ``--lab-timings`` keeps the lab's own fast
timings instead. Every time window of a trial scales with the failover timeout
(``Scale``): the fault window lasts 1.5 to 3 failover timeouts (at least 3 to 6 s), and the
waits for applications to start, providers to settle, programs to stop and the liveness
budget grow with it, so a trial means the same with slow timings as with fast ones.
``--stress`` runs the trials on a loaded machine (``tools/stress.py``: a CPU burner per
core and a second lab cluster competing for the CPU).

One lab (``harness.make_lab``) serves every trial, because starting one is the slow part.
A trial adds fresh applications (new tags, so no restart budget or flap history carries
over), waits until each runs on its primary, plays a schedule of 1 to 3 faults drawn from
``random.Random("S-I")`` over the window, heals everything (``Faults.heal``),
waits until the providers replicate and agree, then checks the invariants
(``checker``): no double run in the ledger, each application running on exactly one server
within the budget (``--budget`` seconds) of the heal, every provider holding the same
entries (a divergence is counted once, by the first trial that finds it). It then
unloads and removes its applications; their programs must stop, which shows every
sentinel follows the directory again. When they do not (or a trial's applications never
start), that is the trial's liveness violation, and every sentinel is restarted before the next trial, so
one wedged sentinel does not fail all the trials after it. A failing trial prints its
seed, its schedule and what was found (replay it with the same timings). One trial in
four (``ISOLATE_SHARE``) isolates the write provider's server (the first of
``directory.uris``, alpha): ``Faults.isolate``, every channel cut at once, next to up to
two other faults. The last line is always

    chaos: trials=<n> double_runs=<n> liveness_violations=<n> diverged_entries=<n> \
repaired=<n> seed=<s> stress=<on|off> timings=<file>

``repaired`` counts the anti-entropy repairs the sentinels made during the run (their
``repair`` events with ``ok=True``, docs/design.md invariant 3): a divergence the directory
left and a sentinel repaired before the check is not a diverged entry, and this says how
often that happened.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from ndsclust.errors import NdsclustError
from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import LabError, wait_until
from ndsclust.ldapstore.replication import entry_csns
from ndsclust.ledger import double_runs, lives
from ndsclust.model import Request, RequestKind, ServerName
from tools.faults.checker import LivenessViolation, Report, check_directory, check_liveness
from tools.faults.harness import (
    FaultError,
    Faults,
    live_copies,
    log_lines_since,
    log_marks,
    make_lab,
)
from tools.netns import cleanup_stale
from tools.stress import Stress
from tools.timings import LAB_SOURCE, Timings, lab_defaults, read_timings

APPS_PER_TRIAL = 2
MAX_FAULTS = 3
ISOLATE_SHARE = 0.25  # trials that isolate the write provider's server
DEFAULT_TIMINGS = "deploy/sentinel.example.yaml"
Out = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Scale:
    """A trial's time windows, in seconds, for a given failover timeout: long enough for
    a failover to happen inside the fault window, and for the waits after it to cover
    one. With the lab's default 0.8 s they stay close to the fixed ones the suite had
    before (a 3 to 6 s window, waits of 20 to 30 s)."""

    window: tuple[float, float]  # from the first fault to the heal
    settle: float  # providers replicating and agreeing after the heal
    start: float  # a trial's applications running on their primaries
    remove: float  # their programs stopped once they are unloaded
    budget: float  # each application on exactly one server after the heal

    @classmethod
    def of(cls, failover: float) -> Scale:
        return cls(
            window=(max(3.0, 1.5 * failover), max(6.0, 3.0 * failover)),
            settle=30.0 + 2 * failover,
            start=20.0 + 2 * failover,
            remove=20.0 + 2 * failover,
            budget=20.0 + 3 * failover,
        )


WINDOW = Scale.of(lab_defaults().failover).window


@dataclass(frozen=True, slots=True)
class Step:
    at: float  # seconds after the trial's faults begin
    kind: str
    args: tuple[object, ...]

    def __str__(self) -> str:
        return f"+{self.at:.2f}s {self.kind} " + " ".join(_show(a) for a in self.args)


def _show(a: object) -> str:
    if isinstance(a, tuple) and a and all(isinstance(x, tuple) for x in a):
        return "|".join(_show(x) for x in a)  # groups of a partition
    if isinstance(a, (tuple, list, frozenset, set)):
        return ",".join(_show(x) for x in sorted(a, key=str)) or "-"
    if isinstance(a, float):
        return f"{a:.2f}"
    return str(a)


@dataclass(frozen=True, slots=True)
class Trial:
    index: int
    seed: str
    apps: tuple[tuple[str, str, tuple[str, ...]], ...]  # tag, primary, backups
    window: float
    steps: tuple[Step, ...]

    def describe(self) -> list[str]:
        out = [f"trial={self.index} seed={self.seed} window={self.window:.2f}s"]
        out += [f"  app {tag} primary={p} backups={','.join(b)}" for tag, p, b in self.apps]
        out += [f"  {s}" for s in self.steps]
        return out


@dataclass
class Totals:
    trials: int = 0
    double_runs: int = 0
    liveness: int = 0
    diverged: int = 0
    repaired: int = 0  # anti-entropy repairs the sentinels made (ok=True ``repair`` events)
    failed: list[str] = field(default_factory=list)

    def line(self, seed: str, *, stress: bool | None = None, timings: str | None = None) -> str:
        out = (
            f"chaos: trials={self.trials} double_runs={self.double_runs} "
            f"liveness_violations={self.liveness} diverged_entries={self.diverged} "
            f"repaired={self.repaired} seed={seed}"
        )
        if stress is not None:
            out += f" stress={'on' if stress else 'off'}"
        if timings is not None:
            out += f" timings={timings}"
        return out


def _nets(rng: random.Random) -> tuple[str, ...]:
    return rng.choice((("lan", "dir"), ("lan", "dir"), ("lan",), ("dir",)))


def _split(rng: random.Random, names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    shuffled = list(names)
    rng.shuffle(shuffled)
    k = rng.randint(1, len(shuffled) - 1)
    return tuple(sorted(shuffled[:k])), tuple(sorted(shuffled[k:]))


def plan(
    index: int,
    seed: str,
    names: Sequence[str],
    window_range: tuple[float, float] = WINDOW,
    writer: str | None = None,
) -> Trial:
    """The trial drawn from ``seed``: its applications and its fault schedule, over a
    window drawn from ``window_range``; ``writer`` (default the first of ``names``) is
    the server an isolation cuts off."""
    rng = random.Random(seed)
    apps = []
    for k in range(APPS_PER_TRIAL):
        order = list(names)
        rng.shuffle(order)
        apps.append((f"t{index}x{k}", order[0], tuple(order[1:])))
    hosts = [a[1] for a in apps]
    window = rng.uniform(*window_range)
    steps = []
    if rng.random() < ISOLATE_SHARE:
        steps.append(Step(rng.uniform(0.0, window * 0.6), "isolate", (writer or names[0],)))
    for _ in range(rng.randint(0 if steps else 1, MAX_FAULTS - len(steps))):
        at = rng.uniform(0.0, window * 0.6)
        s = rng.choice(names)
        h = rng.choice(hosts)
        kind = rng.choice(
            (
                "server_down",
                "kill_sentinel",
                "pause_sentinel",
                "kill_program",
                "pause_program",
                "kill_provider",
                "pause_provider",
                "link_down",
                "partition",
                "one_way",
                "loss",
                "delay",
                "disk_unwritable",
                "disk_cut",
                "clock_step",
            )
        )
        args: tuple[object, ...]
        if kind in (
            "server_down",
            "kill_sentinel",
            "pause_sentinel",
            "kill_provider",
            "pause_provider",
            "disk_cut",
        ):
            args = (rng.choice((s, h)),)
        elif kind in ("kill_program", "pause_program"):
            tag, host, _ = apps[hosts.index(h)]
            args = (host, tag)
        elif kind == "link_down":
            args = (rng.choice((s, h)), _nets(rng))
        elif kind == "partition":
            args = (_split(rng, names), _nets(rng))
        elif kind == "one_way":
            senders, receivers = _split(rng, names)
            args = (senders, receivers, _nets(rng))
        elif kind == "loss":
            args = (s, round(rng.uniform(0.2, 0.9), 2), _nets(rng))
        elif kind == "delay":
            args = (s, round(rng.uniform(0.05, 1.5), 2), round(rng.uniform(0.0, 0.3), 2))
        elif kind == "clock_step":
            args = (s, rng.choice((-1, 1)) * round(rng.uniform(10, 120), 1))
        else:
            args = ()
        steps.append(Step(at, kind, args))
    steps.sort(key=lambda st: st.at)
    return Trial(index, seed, tuple(apps), window, tuple(steps))


def _names(a: object) -> tuple[str, ...]:
    if not isinstance(a, tuple):
        raise FaultError(f"expected a tuple of names, not {a!r}")
    return tuple(str(x) for x in a)


def apply(faults: Faults, step: Step) -> None:
    a = step.args
    k = step.kind
    if k == "server_down":
        faults.server_down(str(a[0]))
    elif k == "kill_sentinel":
        faults.kill_sentinel(str(a[0]))
    elif k == "pause_sentinel":
        faults.pause_sentinel(str(a[0]))
    elif k == "kill_program":
        faults.kill_program(str(a[0]), str(a[1]))
    elif k == "pause_program":
        faults.pause_program(str(a[0]), str(a[1]))
    elif k == "kill_provider":
        faults.kill_provider(str(a[0]))
    elif k == "pause_provider":
        faults.pause_provider(str(a[0]))
    elif k == "link_down":
        faults.link_down(str(a[0]), _names(a[1]))
    elif k == "partition":
        groups = a[0]
        if not isinstance(groups, tuple):
            raise FaultError(f"partition groups {groups!r} are not a tuple")
        faults.partition([_names(g) for g in groups], _names(a[1]))
    elif k == "one_way":
        faults.one_way(_names(a[0]), _names(a[1]), _names(a[2]))
    elif k == "loss":
        faults.loss(str(a[0]), float(str(a[1])), _names(a[2]))
    elif k == "delay":
        faults.delay(str(a[0]), float(str(a[1])), float(str(a[2])))
    elif k == "disk_unwritable":
        faults.disk_unwritable()
    elif k == "disk_cut":
        faults.disk_cut(str(a[0]))
    elif k == "clock_step":
        faults.clock_step(str(a[0]), float(str(a[1])))
    elif k == "isolate":
        faults.isolate(str(a[0]))
    else:
        raise FaultError(f"unknown fault {k!r}")


def run_trial(
    lab: LabCluster,
    faults: Faults,
    trial: Trial,
    budget: float,
    known: Collection[str] = (),
    scale: Scale | None = None,
) -> tuple[Report, list[str]]:
    """Play one trial; its report and its fault log (``known``: divergences found by
    earlier trials, not waited for again; ``scale``: its waits, default the lab's
    default timings')."""
    sc = scale or Scale.of(lab_defaults().failover)
    faults.log.clear()
    notes: list[str] = []
    for tag, primary, backups in trial.apps:
        lab.add_app(tag, primary, backups)
    for tag, primary, _ in trial.apps:
        lab.wait_running(tag, primary, timeout=sc.start)
    began = time.monotonic()
    for step in trial.steps:
        delay = began + step.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            apply(faults, step)
        except (FaultError, LabError) as e:
            notes.append(f"skipped {step}: {e}")
    delay = began + trial.window - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    faults.heal()
    try:
        faults.settle(sc.settle)
    except LabError as e:
        notes.append(f"providers did not settle: {e}")
    tags = [tag for tag, _, _ in trial.apps]

    def describe(tag: str) -> str:
        try:
            app = lab.app(tag)
        except NdsclustError as e:
            return f"(cannot read the entry: {e})"
        return f"host={app.host or '-'} state={app.state}"

    liveness = check_liveness(tags, lambda t: set(live_copies(lab, t)), describe, budget)
    diverged = check_directory(lab.directory, timeout=sc.settle, known=known)
    doubles = double_runs(life for life in lives(lab.ledger_lines()) if life.tag in tags)
    return (
        Report(
            double_runs=tuple(doubles),
            liveness=tuple(liveness),
            diverged=tuple(diverged),
            notes=tuple(notes),
        ),
        list(faults.log),
    )


def new_repairs(lab: LabCluster, seen: set[str]) -> list[str]:
    """The texts of the successful ``repair`` events not in ``seen`` (event ids), which this
    adds them to. Read after every trial, before the audit trail's pruning can take any."""
    try:
        events = lab.store().events()
    except NdsclustError:
        return []
    fresh = [e for e in events if e.kind == "repair" and "ok=True" in e.text and e.id not in seen]
    seen.update(e.id for e in fresh)
    return [e.text for e in fresh]


def remove_apps(lab: LabCluster, trial: Trial, timeout: float) -> list[str]:
    """Remove the trial's applications the way docs/operating.md says an operator does:
    unload each (an ``unload`` request), wait up to ``timeout`` seconds until no entry
    names a host and every program has stopped, and until every provider holds the same
    copy of each entry, then delete the entries; problems.

    A delete made while a modify of the same entry is still on its way to some provider
    (a sentinel's write through another provider, the unload's own) can bring the entry
    back (docs/platform.md fact 35), and its program then runs on, as the directory says
    it should."""
    tags = [tag for tag, _, _ in trial.apps]
    try:
        present = {t: a for t, a in lab.store().apps()[0].items() if t in tags}
        for tag, app in present.items():
            if app.host is not None:
                lab.store().set_request(tag, Request(RequestKind.UNLOAD))

        def unloaded() -> bool:
            apps = lab.store().apps()[0]
            return not any(
                (t in apps and apps[t].host is not None) or live_copies(lab, t) for t in tags
            )

        wait_until(
            unloaded,
            timeout=timeout,
            what="the trial's applications to be unloaded and their programs to stop",
        )
        store, d = lab.store(), lab.directory
        creds = d.admin_credentials()
        wait_until(
            lambda: all(
                len(set(entry_csns(d.uris, creds, store.app_dn(t)).values())) <= 1 for t in present
            ),
            timeout=timeout,
            what="every provider to hold the same copy of the unloaded applications",
        )
        for tag in present:
            store.delete_app(tag)
    except NdsclustError as e:
        return [f"removing the trial's applications: {e}"]
    return []


def write_server(lab: LabCluster) -> str:
    """The server whose provider is the write provider (the first of directory.uris)."""
    first = lab.directory.uris[0]
    for name, server in lab.servers.items():
        if lab.directory.providers[server.index].url == first:
            return name
    raise LabError(f"no server of the lab runs the write provider {first}")


def replay_options(timings: Timings) -> str:
    """The command-line options that give a replay the same timings."""
    return "--lab-timings" if timings.source == LAB_SOURCE else f"--timings {timings.source}"


def run(
    trials: int,
    seed: str,
    *,
    n: int = 3,
    budget: float | None = None,
    replay: int | None = None,
    out: Out = print,
    lab: LabCluster | None = None,
    timings: Timings | None = None,
) -> Totals:
    """``trials`` trials (or only trial ``replay``) of seed ``seed``; prints as it goes.
    ``timings``: those of the lab (made here with them, or given as ``lab``), default the
    lab's own; the trials' windows scale with their failover timeout, and ``budget``
    defaults to the scaled one."""
    timings = timings or lab_defaults()
    scale = Scale.of(timings.failover)
    budget = scale.budget if budget is None else budget
    own = lab is None
    if lab is None:
        cleanup_stale()
        lab = make_lab(n, **timings.lab_options())
    totals = Totals()
    try:
        faults = Faults(lab)
        names = [ServerName(s) for s in lab.names]
        writer = write_server(lab)
        indexes = [replay] if replay is not None else list(range(trials))
        known: set[str] = set()  # divergences already counted by an earlier trial
        repairs: set[str] = set()  # ids of the repair events counted
        new_repairs(lab, repairs)  # made before the run: not its own
        for i in indexes:
            trial = plan(i, f"{seed}-{i}", names, scale.window, writer)
            began = time.monotonic()
            marks = log_marks(lab)
            try:
                report, log = run_trial(lab, faults, trial, budget, known, scale)
            except NdsclustError as e:
                report, log = Report(liveness=(_aborted(trial, e),)), list(faults.log)
                faults.heal()
            repaired = new_repairs(lab, repairs)
            totals.repaired += len(repaired)
            report = dataclasses.replace(
                report, notes=report.notes + tuple(f"repair {t}" for t in repaired)
            )
            left = remove_apps(lab, trial, scale.remove)
            if left:
                stuck = LivenessViolation(
                    ",".join(t for t, _, _ in trial.apps),
                    tuple(sorted({s for t, _, _ in trial.apps for s in live_copies(lab, t)})),
                    "; ".join(left),
                )
                report = Report(
                    report.double_runs, report.liveness + (stuck,), report.diverged, report.notes
                )
            # A divergence that persists is one lost or diverged entry, counted by the
            # trial that caused it, not again by every trial after it.
            fresh = tuple(d for d in report.diverged if str(d) not in known)
            known.update(str(d) for d in report.diverged)
            if len(fresh) != len(report.diverged):
                report = Report(
                    report.double_runs,
                    report.liveness,
                    fresh,
                    report.notes
                    + (
                        f"{len(report.diverged) - len(fresh)} divergence(s) already counted "
                        "by an earlier trial persist",
                    ),
                )
            if report.liveness:
                try:
                    faults.restart_sentinels(scale.start)
                    remove_apps(lab, trial, scale.remove)
                except NdsclustError as e:
                    out(f"trial={i} could not restart the sentinels: {e}")
            totals.trials += 1
            totals.double_runs += len(report.double_runs)
            totals.liveness += len(report.liveness)
            totals.diverged += len(report.diverged)
            took = time.monotonic() - began
            if report.ok:
                out(
                    f"trial={i} seed={trial.seed} ok {took:.1f}s "
                    + "; ".join(str(s) for s in trial.steps)
                )
                for note in report.notes:  # e.g. a fault that could not be injected
                    out(f"  note {note}")
                continue
            totals.failed.append(trial.seed)
            out(
                f"FAILED trial={i} seed={trial.seed} ({took:.1f}s); replay with "
                f"--replay {trial.seed} {replay_options(timings)}"
            )
            for line in (
                trial.describe()
                + [f"  fault {x}" for x in log]
                + [f"  found {x}" for x in report.lines()]
                + _log_excerpt(lab, marks, trial)
            ):
                out(line)
    finally:
        if own:
            lab.stop()
    return totals


# Sentinel log lines worth seeing when a trial fails, besides those naming its applications.
_NOTABLE = (
    b"event=fenced",
    b"event=unfenced",
    b"event=rejoin",
    b"event=provider_failover",
    b"event=watch_connected",
    b"event=watch_provider_silent",
    b"event=witness_unreachable",
    b"event=witness_reachable",
)


def _log_excerpt(lab: LabCluster, marks: dict[str, int], trial: Trial) -> list[str]:
    """The trial's own lines from every sentinel's log: what each server decided, when."""
    tags = [f"tag={t} ".encode() for t, _, _ in trial.apps]
    return [
        f"  log {name} {line.decode(errors='replace')[:300]}"
        for name, line in log_lines_since(lab, marks)
        if any(t in line for t in tags) or any(n in line for n in _NOTABLE)
    ]


def _aborted(trial: Trial, e: Exception) -> LivenessViolation:
    return LivenessViolation(",".join(t for t, _, _ in trial.apps), (), f"trial aborted: {e}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="randomized fault schedules on a namespace lab")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", default=None, help="default: a random one (printed)")
    p.add_argument(
        "--replay",
        default=None,
        metavar="SEED-TRIAL",
        help="run only this trial, as printed by a failing run",
    )
    p.add_argument("--servers", type=int, default=3)
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds after the heal for every application to run once "
        "(default: 20 + 3 failover timeouts)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--timings",
        metavar="FILE",
        default=DEFAULT_TIMINGS,
        help=f"sentinel configuration whose timings the lab uses (default {DEFAULT_TIMINGS})",
    )
    g.add_argument(
        "--lab-timings", action="store_true", help="the lab's own fast timings instead of a file's"
    )
    p.add_argument(
        "--stress", action="store_true", help="load the machine during the trials (tools/stress.py)"
    )
    a = p.parse_args(argv)
    if a.lab_timings:
        timings = lab_defaults()
    else:
        try:
            timings = read_timings(a.timings)
        except LabError as e:
            p.error(str(e))
        timings = dataclasses.replace(timings, source=a.timings)  # as given, for a replay
    replay = None
    seed = a.seed or str(random.SystemRandom().randrange(10**6))
    if a.replay:
        seed, _, idx = a.replay.rpartition("-")
        if not seed or not idx.isdigit():
            p.error(f"--replay {a.replay!r}: expected SEED-TRIAL, e.g. 42-7")
        replay = int(idx)
    print(timings.line(), flush=True)
    began = time.monotonic()
    with Stress(out=lambda s: print(s, flush=True)) if a.stress else contextlib.nullcontext():
        totals = run(
            a.trials,
            seed,
            n=a.servers,
            budget=a.budget,
            replay=replay,
            out=lambda s: print(s, flush=True),
            timings=timings,
        )
    print(
        f"elapsed={time.monotonic() - began:.0f}s failed_trials={' '.join(totals.failed) or '-'}",
        flush=True,
    )
    print(totals.line(seed, stress=a.stress, timings=timings.source), flush=True)
    return 0 if not (totals.double_runs or totals.liveness or totals.diverged) else 1


if __name__ == "__main__":
    sys.exit(main())

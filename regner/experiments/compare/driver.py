"""The whole comparison: racing per dataset, then the sequential comparison with ``none`` per (dataset,
regime), in rounds that gather every dataset's next runs into one batch (so the machine stays full),
within the budget.

Every round is decided from the results alone, so a comparison started again replays its finished runs
from the cache (instantly) to the point it reached, and goes on: an interrupted comparison, one given
a larger budget, and one pointed at another benchmark's runs all continue the same way.

The budget counts the runs the comparison *uses* (read from the cache or trained), so the verdicts do
not depend on what was cached; ``budget.max_hours`` bounds the wall time of training (every invocation
on the same output directory counted). A unit of work (one race's next rung, one (dataset, regime)'s
next look) that would exceed either is not started: its race ends with the best arm so far, its
methods are *exhausted* at the look they reached.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regner.errors import UserError
from regner.experiments.benchmark.profile import method_overrides
from regner.experiments.compare.cache import CachedRun, RunIndex
from regner.experiments.compare.engine import BASELINE, Comparison, Result
from regner.experiments.compare.execution import Executor, Task, claimed_for
from regner.experiments.compare.planned import Composer, Planned
from regner.experiments.compare.profile import CompareProfile
from regner.experiments.compare.racing import Race

WATCH = ("regime", "method", "off")


@dataclass
class Unit:
    owner: Any  # a Race, or the (dataset, regime) of a Comparison
    runs: list[Planned]
    keys: list[str] = field(default_factory=list)


def _no_training(method: str, seed: int) -> Result:
    raise AssertionError("the driver fills a comparison's results itself")


@dataclass
class Driver:
    profile: CompareProfile
    out: Path
    index: RunIndex
    composer: Composer
    executor: Executor | None  # None: cache only (train=false), nothing is trained
    say: Any = print
    collapse_watch: str = "regime"
    hours_before: float = 0.0  # wall time earlier invocations on this directory spent
    races: dict[tuple[str, str, str], Race] = field(default_factory=dict)
    comparisons: dict[tuple[str, str], Comparison] = field(default_factory=dict)
    used: dict[str, CachedRun] = field(default_factory=dict)  # key -> the run, every run the comparison used
    stage_of: dict[str, str] = field(default_factory=dict)  # key -> "tune" or "compare"
    trained: int = 0
    missing: list[str] = field(default_factory=list)  # cache only: runs it would have needed
    failed: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    judged: dict[str, str] = field(default_factory=dict)  # dataset -> the split its comparison judges
    compared: dict[tuple[str, str, str], list[CachedRun]] = field(default_factory=dict)  # used comparison runs
    round_keys: list[str] = field(default_factory=list)  # the runs of the round being trained (until it is decided)

    def __post_init__(self):
        p = self.profile
        for dataset, regime in p.cells():
            if dataset in p.tuning.datasets and regime in p.tuning.regimes:
                for method in (p.methods[m] for m in p.methods_in(regime, dataset)):
                    if method.tuned:
                        self.races[(dataset, regime, method.name)] = Race(
                            method, p.tuning.seeds, p.tuning.rungs, p.tuning.drop_alpha, p.tuning.extend_grid)

    # -- what a run is --------------------------------------------------------------------------------
    def planned(self, dataset: str, regime: str, method: str, value: Any, seed: int, stage: str) -> Planned:
        p = self.profile
        m = p.methods[method]
        base = (*p.datasets[dataset], *p.regimes[regime], *p.common, *method_overrides(m))
        strength = None if value is None else f"{m.key}={value}"
        return Planned(dataset, regime, method, value, seed, base, strength, stage)

    def key(self, planned: Planned) -> str:
        return self.composer.key(list(planned.base), planned.strength, planned.seed)

    def directory(self, planned: Planned, key: str) -> Path:
        """``out/runs/<stage>/<label>/seed-N``; a directory that holds a different run gets a suffix."""
        root = self.out / "runs" / planned.stage / planned.label
        candidate, n = root / f"seed-{planned.seed}", 1
        while candidate.exists() or claimed_for(candidate).exists():
            records = [p for p in (candidate / "identity.sha256", claimed_for(candidate)) if p.exists()]
            if not records or all(p.read_text(encoding="utf-8").strip() == key for p in records):
                return candidate
            n += 1
            candidate = root / f"seed-{planned.seed}-{n}"
        return candidate

    def source(self, dataset: str, regime: str) -> tuple[str, str]:
        """The (dataset, regime) whose races choose the strengths of this one: itself where it is raced, else
        the first tuned regime, on this dataset where it is a tune dataset, else on the first tune dataset
        that regime compares."""
        t = self.profile.tuning
        regime = regime if regime in t.regimes else t.regimes[0]
        if (dataset, regime) in self.profile.cells() and dataset in t.datasets:
            return dataset, regime
        return next(d for d in t.datasets if (d, regime) in self.profile.cells()), regime

    def chosen(self, dataset: str, regime: str, method: str) -> Any:
        if not self.profile.methods[method].tuned:
            return None
        return self.races[(*self.source(dataset, regime), method)].chosen

    # -- the rounds -----------------------------------------------------------------------------------
    def units(self) -> list[Unit]:
        found = []
        for dataset in self.profile.datasets:
            races = [(k, r) for k, r in self.races.items() if k[0] == dataset]
            if any(not r.done for _, r in races):
                for (_, regime, method), race in races:
                    if not race.done:
                        self._check_extension(race, dataset, regime)
                        found.append(Unit(race, [self.planned(dataset, regime, method, v, s, "tune")
                                                 for v, s in race.needed()]))
                continue
            for regime in (r for d, r in self.profile.cells() if d == dataset):
                source = self.source(dataset, regime)
                if any(not r.done for (d, g, _), r in self.races.items() if (d, g) == source):
                    continue  # its strengths are still being raced on another dataset
                comparison = self.comparisons.get((dataset, regime))
                if comparison is None:
                    methods = [m for m in self.profile.methods_in(regime, dataset) if m != BASELINE]
                    comparison = Comparison(methods, self.profile.seeds, self.profile.design, _no_training)
                    self.comparisons[(dataset, regime)] = comparison
                if any(s.open for s in comparison.states.values()):
                    found.append(Unit((dataset, regime), [
                        self.planned(dataset, regime, m, self.chosen(dataset, regime, m), s, "compare")
                        for m, s in comparison.next_round()]))
        return found

    def _check_extension(self, race: Race, dataset: str, regime: str) -> None:
        """A grid-edge extension whose value regner's config refuses leaves the race at once (named)."""
        for arm in race.arms.values():
            if arm.added and arm.alive and not arm.scores:
                try:
                    self.key(self.planned(dataset, regime, race.method.name, arm.value, race.seeds[0], "tune"))
                except UserError as err:
                    arm.dropped = f"the extension is not a valid value ({err})"

    def hours(self) -> float:
        return self.hours_before + (time.time() - self.started) / 3600

    def _mean_seconds(self) -> float | None:
        seconds = [r.seconds for r in self.used.values() if math.isfinite(r.seconds)]
        return sum(seconds) / len(seconds) if seconds else None

    def _stop(self, unit: Unit, why: str) -> None:
        if isinstance(unit.owner, Race):
            unit.owner.advance(budget_left=False)
            unit.owner.notes.append(why)
        else:
            self.comparisons[unit.owner].exhaust(why)

    def step(self) -> bool:
        """Plan the next batch, train what the cache lacks, decide; False when nothing is left to do."""
        units = self.units()
        if not units:
            return False
        p, accepted, planned_hours, new_keys = self.profile, [], 0.0, set()
        slots = max(1, len(self.executor.slots)) if self.executor else 1
        mean = self._mean_seconds()
        for unit in units:
            unit.keys = [self.key(r) for r in unit.runs]
            fresh = {k for k in unit.keys if k not in self.used and k not in new_keys}
            to_train = [k for k in fresh if self.index.get(k) is None]
            if p.max_runs is not None and len(self.used) + len(new_keys) + len(fresh) > p.max_runs:
                self._stop(unit, f"the run budget ({p.max_runs} runs) ends before this step")
                continue
            cost = (len(to_train) * mean / slots / 3600) if mean and to_train else 0.0
            if p.max_hours is not None and to_train and self.hours() + planned_hours + cost > p.max_hours:
                self._stop(unit, f"the time budget ({p.max_hours:g} h) ends before this step")
                continue
            if to_train and self.executor is None:
                self.missing += [f"{r.label} seed {r.seed}" for r, k in zip(unit.runs, unit.keys) if k in to_train]
                self._stop(unit, f"{len(to_train)} run(s) it needs are not in the cache (train=false)")
                continue
            planned_hours += cost
            new_keys |= fresh
            accepted.append(unit)
        tasks, queued = [], set()
        for unit in accepted:
            for run, key in zip(unit.runs, unit.keys):
                if self.index.get(key) is None and key not in queued:
                    queued.add(key)
                    tasks.append(Task(run, self.directory(run, key), key))
        if tasks:
            self.say(f"training {len(tasks)} run(s) ({len(new_keys) - len(tasks)} more from the cache); "
                     f"{len(self.used)} used so far")
            self.round_keys = [t.key for t in tasks]
            self.executor.run(tasks)
            self.trained += sum(self.index.get(t.key) is not None for t in tasks)
        complete = []
        for unit in accepted:
            runs = [self.index.get(k) for k in unit.keys]
            if any(r is None for r in runs):
                self.failed += [f"{run.label} seed {run.seed}" for run, found in zip(unit.runs, runs) if found is None]
                continue
            for planned, key, run in zip(unit.runs, unit.keys, runs):
                self.used[key] = run
                self.stage_of.setdefault(key, planned.stage)
            self._record(unit, runs)
            complete.append(unit)
        self.round_keys = []
        for unit in complete:  # decided once every result of the batch is in (the watch reads them all)
            if isinstance(unit.owner, Race):
                unit.owner.advance()
            else:
                self.comparisons[unit.owner].advance(self.watch(unit.owner[1], self.comparisons[unit.owner]))
        return not self.failed

    def _record(self, unit: Unit, runs: list[CachedRun]) -> None:
        if isinstance(unit.owner, Race):
            for planned, run in zip(unit.runs, runs):
                unit.owner.record(planned.value, planned.seed, run.f1("dev"), run.collapsed)
            return
        comparison = self.comparisons[unit.owner]
        for planned, run in zip(unit.runs, runs):
            comparison.results[(planned.method, planned.seed)] = Result(run.f1("test"), run.collapsed)
            self.judged.setdefault(planned.dataset, "test" if run.has_test else "dev")
            self.compared.setdefault(planned.arm[:3], []).append(run)

    def watch(self, regime: str, comparison: Comparison) -> set[str]:
        """The methods that may not stop as futile or equivalent before the last look (collapse_watch):
        ``regime``: all of them once any run of this regime collapsed (none's included), in any dataset;
        ``method``: those that collapsed in some dataset of this regime; ``off``: none."""
        if self.collapse_watch == "off":
            return set()
        cells = [c for (_, r), c in self.comparisons.items() if r == regime]
        collapsed = set().union(*(c.collapsed_methods for c in cells))
        baseline = any(result.collapsed for c in cells for (m, _), result in c.results.items() if m == BASELINE)
        if self.collapse_watch == "method":
            return collapsed
        return set(comparison.states) if collapsed or baseline else set()

    def run(self) -> None:
        while self.step():
            pass

    def mean_by_method(self, dataset: str, regime: str, attribute: str) -> dict[str, float]:
        """The mean of a run attribute (``seconds``, ``peak_memory_mb``) over the used comparison runs of each method
        in (dataset, regime), where known."""
        found = {}
        for (d, r, m), runs in self.compared.items():
            values = [getattr(run, attribute) for run in runs if d == dataset and r == regime]
            values = [v for v in values if v is not None and math.isfinite(v)]
            if values:
                found[m] = sum(values) / len(values)
        return found

    # -- what it used ---------------------------------------------------------------------------------
    def used_in(self, stage: str) -> int:
        return sum(s == stage for s in self.stage_of.values())

    def round_progress(self) -> tuple[int, int]:
        """(finished, all) runs of a round that was interrupted before it could be decided."""
        return sum(self.index.get(k) is not None for k in self.round_keys), len(self.round_keys)

    @property
    def reused(self) -> int:
        return len(self.used) - self.trained

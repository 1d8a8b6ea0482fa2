"""Choosing a method's strength by racing: every grid value (arm) starts with few seeds, arms clearly
behind the best are dropped, survivors get more seeds (successive halving with a paired rule).

The rule, stated before the first run (docs/benchmarks/PROTOCOL.md, "Tuning by racing"):

- **Rungs**: the seed counts at which the arms are compared, e.g. 2, 4; every surviving arm runs the
  same seeds (the tune seeds, disjoint from the comparison's), so differences are paired.
- **Drop**: at a rung, an arm is dropped when the best arm (highest mean dev F1) beats it on their
  shared seeds by a one-sided paired t test at level ``drop_alpha``; an arm that collapsed on a seed
  (dev F1 below 0.05, or diverged) is dropped at once. With one seed there is no test: only collapses drop.
- **Choice**: after the last rung, the surviving arm with the best mean dev F1 (ties: the value nearest
  the method's default). The racing is a selection, not a test: the comparison with ``none`` runs on
  fresh seeds, so the choice cannot bias it.
- **Grid edge**: a choice at the lowest or highest value of a numeric grid extends the grid once by one
  step beyond it (the grid's own ratio, or its spacing when it is not geometric; for an EMA decay the
  averaging horizon 1/(1 − d) is stepped), which races the surviving arms to the last rung again.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from regner.experiments.benchmark.profile import Method
from regner.experiments.compare.sequential import t_one_sided


@dataclass
class Arm:
    value: Any
    scores: dict[int, float] = field(default_factory=dict)  # seed -> dev F1 (0 for a diverged run)
    collapsed: list[int] = field(default_factory=list)  # seeds on which it collapsed
    dropped: str = ""  # why it left the race ("" while in it)
    added: bool = False  # the grid-edge extension

    @property
    def alive(self) -> bool:
        return not self.dropped

    def mean(self, seeds: list[int]) -> float:
        values = [self.scores[s] for s in seeds if s in self.scores]
        return statistics.fmean(values) if values else math.nan


def _numeric(values: list) -> bool:
    return len(values) >= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def step_beyond(method: Method, edge: str) -> Any:
    """One grid step past the ``"lowest"`` or ``"highest"`` value of the method's numeric grid (None where
    the grid is not numeric). Geometric grids step by their ratio, others by their spacing; an EMA decay
    d steps its horizon 1/(1 − d). Rounded to 3 significant digits."""
    grid = sorted(method.grid)
    if not _numeric(grid):
        return None
    ema = method.key == "trainer.ema.decay"
    scale = [1.0 / (1.0 - v) for v in grid] if ema else [float(v) for v in grid]
    low, high = (scale[0], scale[1]) if edge == "lowest" else (scale[-1], scale[-2])
    if all(v > 0 for v in scale) and all(abs(b / a - scale[1] / scale[0]) < 0.25 * scale[1] / scale[0]
                                         for a, b in zip(scale, scale[1:])):
        new = low * (low / high)  # geometric
    else:
        new = low + (low - high)
    if ema:
        new = 1.0 - 1.0 / new if new > 1 else None
    if new is None or (edge == "lowest" and new <= 0 and grid[0] > 0):
        return None
    rounded = float(f"{new:.3g}")
    return int(rounded) if all(isinstance(v, int) for v in grid) and rounded.is_integer() else rounded


@dataclass
class Race:
    """The racing of one method's strengths in one (dataset, regime)."""

    method: Method
    seeds: list[int]  # tune seeds in order; rungs take prefixes
    rungs: tuple[int, ...]  # seeds per arm at each rung, increasing; the last ≤ len(seeds)
    drop_alpha: float = 0.2
    extend: bool = True
    arms: dict[Any, Arm] = field(default_factory=dict)
    rung: int = 0  # the rung being run
    extended: bool = False  # the grid was extended (at most once)
    chosen: Any = None
    reason: str = ""  # why the chosen arm won
    done: bool = False
    stopped_by: str = ""  # "" or "budget"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.arms:
            self.arms = {v: Arm(v) for v in self.method.grid}

    @property
    def n(self) -> int:
        return self.rungs[self.rung]

    def needed(self) -> list[tuple[Any, int]]:
        """(value, seed) runs that bring every surviving arm to the current rung."""
        if self.done:
            return []
        return [(a.value, s) for a in self.arms.values() if a.alive for s in self.seeds[:self.n]
                if s not in a.scores]

    def record(self, value: Any, seed: int, f1: float, collapsed: bool) -> None:
        arm = self.arms[value]
        arm.scores[seed] = f1
        if collapsed and seed not in arm.collapsed:
            arm.collapsed.append(seed)

    def _nearest_default(self, values: list) -> Any:
        default = self.method.default

        def distance(value: Any) -> float:
            if default is None:
                return abs(self.method.grid.index(value) - (len(self.method.grid) - 1) / 2) \
                    if value in self.method.grid else math.inf
            try:
                return abs(math.log(float(value) / float(default)))
            except (TypeError, ValueError, ZeroDivisionError):
                return 0.0 if value == default else 1.0

        return min(values, key=distance)

    def _best(self, seeds: list[int]) -> Arm | None:
        alive = [a for a in self.arms.values() if a.alive and all(s in a.scores for s in seeds)]
        if not alive or not seeds:
            return None
        top = max(a.mean(seeds) for a in alive)
        return self.arms[self._nearest_default([a.value for a in alive if a.mean(seeds) == top])]

    def _drop(self, seeds: list[int]) -> None:
        for arm in self.arms.values():
            if arm.alive and arm.collapsed:
                arm.dropped = f"collapsed on seed {', '.join(map(str, arm.collapsed))}"
        best = self._best(seeds)
        if best is None or len(seeds) < 2:
            return
        critical = t_one_sided(len(seeds) - 1, self.drop_alpha)
        for arm in self.arms.values():
            if not arm.alive or arm is best:
                continue
            gaps = [best.scores[s] - arm.scores[s] for s in seeds]
            mean, sd = statistics.fmean(gaps), statistics.stdev(gaps)
            t = math.inf if sd == 0 and mean > 0 else (mean / (sd / math.sqrt(len(seeds))) if sd > 0 else 0.0)
            if t > critical:
                arm.dropped = (f"behind {self.method.key}={best.value} by {100 * mean:.2f} F1 points on {len(seeds)} "
                               f"shared seeds (one-sided paired t {t:.2f} > {critical:.2f}, level {self.drop_alpha:g})")

    def advance(self, budget_left: bool = True) -> None:
        """After the current rung's runs are in: drop, then go to the next rung, extend the grid, or choose.
        ``budget_left=False`` ends the race with the best arm so far (the budget stopped it)."""
        if self.done:
            return
        seeds = self.seeds[:self.n]
        if not budget_left:  # compare on the seeds every arm still in the race has
            seeds = [s for s in seeds if all(s in a.scores for a in self.arms.values() if a.alive)]
        elif any(s not in a.scores for a in self.arms.values() if a.alive for s in seeds):
            raise ValueError("advance() before the rung's runs are in")
        self._drop(seeds)
        if not budget_left:
            self.stopped_by = "budget"
            self._choose(seeds, "the budget ended the racing")
            return
        if not any(a.alive for a in self.arms.values()):
            self._choose(seeds, "every arm collapsed")
            return
        if self.rung + 1 < len(self.rungs) and sum(a.alive for a in self.arms.values()) > 1:
            self.rung += 1
            return
        if sum(a.alive for a in self.arms.values()) == 1 and self.rung + 1 < len(self.rungs):
            self.notes.append(f"one arm left after {self.n} seeds")
        best = self._best(seeds)
        edge = self._edge(best.value) if best is not None else None
        if edge and self.extend and not self.extended:
            value = step_beyond(self.method, edge)
            self.extended = True
            if value is not None and value not in self.arms:
                self.arms[value] = Arm(value, added=True)
                self.rung = len(self.rungs) - 1
                self.notes.append(f"{self.method.key}={best.value} is the grid's {edge} value: the grid is extended "
                                  f"by one step to {value}")
                return
        self._choose(seeds, "")

    def _edge(self, value: Any) -> str | None:
        grid = sorted(v for v in self.arms)
        if not _numeric(grid):
            return None
        return "lowest" if value == grid[0] else "highest" if value == grid[-1] else None

    def _choose(self, seeds: list[int], why: str) -> None:
        best = self._best(seeds) if seeds else None
        if best is None:  # nothing ran or everything collapsed: the default stands
            self.chosen = self.method.default if self.method.default is not None else self.method.grid[0]
            self.reason = why or "no arm has a result"
        else:
            self.chosen = best.value
            counted = [s for s in seeds if s in best.scores]
            self.reason = (f"best mean dev F1 {best.mean(counted):.4f} over {len(counted)} seed(s)"
                           + (f"; {why}" if why else ""))
            edge = self._edge(best.value)
            if edge:
                self.notes.append(f"the choice is the {edge} value of the grid{' as extended' if self.extended else ''}: "
                                  "its optimum may lie beyond it")
        self.done = True

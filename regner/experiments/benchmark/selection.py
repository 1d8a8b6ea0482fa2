"""Stage 1's choice of each method's strength from its dev F1 per grid point."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from regner.experiments.benchmark.profile import Job, Method, Profile
from regner.experiments.benchmark.runs import dev_f1, epochs_run, run_dir


def choose_strength(method: Method, scores: dict[Any, list[float]]) -> tuple[Any, str]:
    """The grid value with the best mean dev F1 over the tune seeds (ties: nearest the default, on a
    log scale where the values are positive); the default when no value has a result."""
    means = {v: statistics.fmean(s) for v, s in scores.items() if s}
    if not means:
        return method.default if method.default is not None else method.grid[len(method.grid) // 2], "no tune result"
    best = max(means.values())

    def distance(value: Any) -> float:
        if method.default is None:
            return abs(method.grid.index(value) - (len(method.grid) - 1) / 2)
        try:
            return abs(math.log(float(value) / float(method.default)))
        except (TypeError, ValueError, ZeroDivisionError):
            return 0.0 if value == method.default else 1.0

    tied = [v for v in method.grid if v in means and means[v] == best]
    return min(tied, key=distance), f"dev F1 {best:.4f}"


def grid_edges(grid: list) -> dict[Any, str]:
    """The lowest and highest value of a numeric grid of ≥ 3 values: a strength chosen there may have
    its optimum beyond the grid."""
    numeric = [v for v in grid if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numeric) < 3 or len(numeric) != len(grid):
        return {}
    return {min(numeric): "lowest", max(numeric): "highest"}


def select(profile: Profile, out: Path, dataset: str) -> tuple[dict[tuple[str, str], Any], list[dict]]:
    """The chosen strength of each (regime, method) and the stage-1 table rows."""
    chosen, rows = {}, []
    for regime in profile.regimes:
        source = regime if regime in profile.tune_regimes else profile.tune_regimes[0]
        if regime == source:
            none_dirs = [run_dir(out, Job(dataset, regime, "tune", "none", None, []), s) for s in profile.tune_seeds]
            none = [f for f in map(dev_f1, none_dirs) if f is not None]
            rows.append({"dataset": dataset, "regime": regime, "method": "none", "key": None, "value": None,
                         "dev_f1": statistics.fmean(none) if none else math.nan, "n": len(none), "chosen": False,
                         "edge": "", "epochs": epochs_run(none_dirs)})
        for m in profile.methods.values():
            if not m.tuned:
                continue
            scores: dict[Any, list[float]] = {}
            epochs: dict[Any, str] = {}
            for value in m.grid:
                job = Job(dataset, source, "tune", m.name, value, [])
                directories = [run_dir(out, job, s) for s in profile.tune_seeds]
                scores[value] = [f for f in map(dev_f1, directories) if f is not None]
                epochs[value] = epochs_run(directories)
            value, _ = choose_strength(m, scores)
            chosen[(regime, m.name)] = value
            # a choice is only shown once every grid value has run (a partial report shows none yet)
            complete = all(len(s) == len(profile.tune_seeds) for s in scores.values())
            edges = grid_edges(m.grid)
            if regime == source:
                rows += [{"dataset": dataset, "regime": regime, "method": m.name, "key": m.key, "value": v,
                          "dev_f1": statistics.fmean(s) if s else math.nan, "n": len(s),
                          "chosen": complete and v == value, "edge": edges.get(v, "") if complete and v == value
                          else "", "epochs": epochs[v]} for v, s in scores.items()]
    return chosen, rows


def relative_strength(method: Method, value: Any) -> float:
    """A grid value relative to the method's default, so every curve shares one axis: the value's
    ratio, or for an EMA decay d the ratio of averaging horizons 1/(1 − d)."""
    default = float(method.default if method.default is not None else method.grid[len(method.grid) // 2])
    if method.key == "trainer.ema.decay":
        return (1.0 - default) / (1.0 - float(value))
    return float(value) / default

"""Contrasts: two methods of a comparison against each other (a − b), from the runs the comparison already
has. They answer the questions a comparison with ``none`` cannot: is R-Drop's per-logit KL better than its
softmax KL (Su Jianlin's claim), does a semi-supervised method beat its supervised version. No run is
trained for a contrast.

Each (dataset, regime, contrast) is a fixed-sample paired t test on the seeds *both* methods reached (same
seed = same initialisation and data order), in seed order. How many that is was set by each method's
sequential comparison with none, not by the contrast: it is a secondary analysis, and the report says so.
The family is every contrast row of the comparison: each tests at level α/m (Bonferroni), so the chance of
any false "ahead" verdict among them is at most α; equivalence is a TOST within ±``target_mde`` at the
same split level. A contrast where either method collapsed on a shared seed is *unstable*; one with fewer
than two shared seeds has no verdict. Across datasets, each contrast is pooled like a method's difference
from none (:mod:`.pooling`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from regner.experiments.compare.formatting import mde_text, points
from regner.experiments.compare.pooling import MIN_SEEDS, dataset_effect, random_effects
from regner.experiments.compare.sequential import minimal_detectable_effect, t_one_sided
from regner.experiments.stats import t_critical

STATES = ("ahead", "behind", "equivalent", "undecided", "unstable", "too few seeds")


@dataclass(frozen=True)
class Contrast:
    name: str
    a: str
    b: str


def parse_contrasts(value: Any, methods: list[str], fail) -> list[Contrast]:
    """The profile's ``contrasts``: {name: [method a, method b]} (a − b is reported)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise fail("contrasts", f"a mapping {{name: [method a, method b]}} (a − b is reported), got {value!r}")
    found = []
    for name, pair in value.items():
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(m, str) for m in pair):
            raise fail(f"contrasts.{name}", f"two method names [a, b], got {pair!r}")
        unknown = [m for m in pair if m not in methods]
        if unknown:
            raise fail(f"contrasts.{name}", f"{', '.join(unknown)} is not a method of this profile "
                       f"({', '.join(methods)})")
        if pair[0] == pair[1]:
            raise fail(f"contrasts.{name}", f"a method against itself ({pair[0]})")
        found.append(Contrast(str(name), pair[0], pair[1]))
    return found


@dataclass
class ContrastRow:
    dataset: str
    regime: str
    contrast: Contrast
    seeds: list[int]
    differences: list[float]
    state: str
    mean: float = math.nan
    sd: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)  # the unadjusted 95 % interval
    adjusted: tuple[float, float] = (math.nan, math.nan)  # the (1 − α/m) interval the verdict uses
    mde: float = math.nan  # at the split level and the design's power

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "regime": self.regime, "contrast": self.contrast.name,
                "a": self.contrast.a, "b": self.contrast.b, "seeds": self.seeds, "differences": self.differences,
                "state": self.state, "mean": self.mean, "sd": self.sd, "ci": list(self.ci),
                "adjusted_ci": list(self.adjusted), "mde": self.mde}


def paired(results: dict, seeds: list[int], a: str, b: str) -> tuple[list[int], list[float], list[int]]:
    """(shared seeds, a − b on them, the shared seeds where either collapsed), in seed order."""
    shared, differences, collapsed = [], [], []
    for seed in seeds:
        x, y = results.get((a, seed)), results.get((b, seed))
        if x is None or y is None:
            continue
        shared.append(seed)
        differences.append(x.f1 - y.f1)
        if x.collapsed or y.collapsed:
            collapsed.append(seed)
    return shared, differences, collapsed


def judge(dataset: str, regime: str, contrast: Contrast, results: dict, seeds: list[int], level: float,
          delta: float, power: float) -> ContrastRow:
    """One contrast row at two-sided level ``level`` (α/m) with equivalence margin ``delta``."""
    shared, differences, collapsed = paired(results, seeds, contrast.a, contrast.b)
    row = ContrastRow(dataset, regime, contrast, shared, differences, "too few seeds")
    if collapsed:
        row.state = "unstable"
        return row
    if len(shared) < 2:
        return row
    n, mean, sd = len(shared), statistics.fmean(differences), statistics.stdev(differences)
    se = sd / math.sqrt(n)
    row.mean, row.sd = mean, sd
    row.ci = (mean - t_critical(n - 1, 0.95) * se, mean + t_critical(n - 1, 0.95) * se)
    half = t_critical(n - 1, 1 - level) * se
    row.adjusted = (mean - half, mean + half)
    row.mde = minimal_detectable_effect(sd, n, level, power) if sd > 0 else 0.0
    tost = t_one_sided(n - 1, level) * se
    if row.adjusted[0] > 0:
        row.state = "ahead"
    elif row.adjusted[1] < 0:
        row.state = "behind"
    elif -delta < mean - tost and mean + tost < delta:
        row.state = "equivalent"
    else:
        row.state = "undecided"
    return row


def contrast_rows(comparisons: dict, contrasts: list[Contrast], alpha: float, delta: float,
                  power: float) -> list[ContrastRow]:
    """Every (dataset, regime) × contrast, each at level α / (their number)."""
    cells = [(key, c) for key in comparisons for c in contrasts
             if all(m == "none" or m in comparisons[key].states for m in (c.a, c.b))]  # both compared there
    level = alpha / max(1, len(cells))
    return [judge(d, r, c, comparisons[(d, r)].results, comparisons[(d, r)].seeds, level, delta, power)
            for (d, r), c in cells]


def pooled_contrasts(rows: list[ContrastRow], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Per (regime, contrast): a random-effects estimate over the datasets with ≥ MIN_SEEDS shared seeds and spread,
    with its (1 − α/m) interval, m the pooled contrasts (Bonferroni, as the rows)."""
    pooled_cells = []
    for regime in dict.fromkeys(r.regime for r in rows):
        for contrast in dict.fromkeys(r.contrast for r in rows if r.regime == regime):
            usable = [r for r in rows if r.regime == regime and r.contrast == contrast
                      and r.state != "unstable" and len(r.differences) >= MIN_SEEDS and r.sd > 0]
            if len(usable) < 2:
                continue
            pooled_cells.append((regime, contrast, usable))
    level = alpha / max(1, len(pooled_cells))
    found = []
    for regime, contrast, usable in pooled_cells:
        pooled = random_effects([dataset_effect(r.differences) for r in usable], 1 - level)
        found.append({"regime": regime, "contrast": contrast.name, "a": contrast.a, "b": contrast.b,
                      "datasets": [r.dataset for r in usable], "estimate": pooled.estimate, "level": level,
                      "ci": list(pooled.ci), "tau": math.sqrt(pooled.tau2)})
    return found


def sentence(row: ContrastRow, delta: float, level: float) -> str:
    """One generated sentence for a contrast row."""
    a, b, n = row.contrast.a, row.contrast.b, len(row.seeds)
    if row.state == "unstable":
        return f"{a} vs {b} ({row.dataset}): no verdict: a run collapsed on a shared seed."
    if row.state == "too few seeds":
        return f"{a} vs {b} ({row.dataset}): {n} shared seed(s), too few for a verdict."
    numbers = (f"{points(row.mean)} points (95 % CI {points(row.ci[0])} to {points(row.ci[1])}; "
               f"{1 - level:.4g} interval {points(row.adjusted[0])} to {points(row.adjusted[1])}; {n} shared seeds)")
    if row.state == "ahead":
        return f"{a} is ahead of {b} on {row.dataset} by {numbers}: beyond noise at the split level."
    if row.state == "behind":
        return f"{a} is behind {b} on {row.dataset} by {numbers}: beyond noise at the split level."
    if row.state == "equivalent":
        return f"{a} and {b} are equivalent on {row.dataset} within ±{100 * delta:.2f} points: {numbers}."
    reach = ("no difference an F1 score can show (the MDE passes 100 points)" if row.mde >= 1 else
             f"only differences of {100 * row.mde:.2f} points or more")
    return f"{a} vs {b} on {row.dataset} is undecided: {numbers}; these seeds detect {reach} at the split level."


def pooled_sentence(entry: dict[str, Any], delta: float) -> str:
    low, high = entry["ci"]
    text = (f"Across {len(entry['datasets'])} datasets, {entry['a']} − {entry['b']} pools to "
            f"{points(entry['estimate'])} points ({1 - entry['level']:.4g} interval {points(low)} to {points(high)})")
    if low > 0:
        return text + f": {entry['a']} ahead in general, on these datasets' evidence."
    if high < 0:
        return text + f": {entry['b']} ahead in general, on these datasets' evidence."
    if -delta < low and high < delta:
        return text + f": no general difference beyond ±{100 * delta:.2f} points."
    return text + ": either could be ahead in general."


def markdown_lines(rows: list[ContrastRow], pooled: list[dict[str, Any]], alpha: float, delta: float) -> list[str]:
    """The report's "Contrasts between methods" section."""
    if not rows:
        return []
    level = alpha / len(rows)
    lines = ["## Contrasts between methods", "",
             f"Δ is a − b in F1 points on the judged split, per seed both methods ran, averaged. Each row is a "
             f"paired t test on those seeds at level {alpha:g}/{len(rows)} = {level:.2g} (Bonferroni over the "
             f"contrast rows); equivalence is a TOST within ±{100 * delta:.2f} points at that level. How many seeds "
             "there are was set by each method's comparison with none, not by the contrast: a secondary analysis, "
             "no run was trained for it.", "",
             "| dataset | regime | a − b | seeds | Δ | 95 % CI | adjusted CI | state | MDE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.dataset} | {r.regime} | {r.contrast.a} − {r.contrast.b} | {len(r.seeds)} | "
                     f"{points(r.mean)} | [{points(r.ci[0])}, {points(r.ci[1])}] | "
                     f"[{points(r.adjusted[0])}, {points(r.adjusted[1])}] | {r.state} | "
                     f"{mde_text(r.mde)} |")
    lines += ["", *(f"- {sentence(r, delta, level)}" for r in rows), ""]
    if pooled:
        lines += [f"Pooled over datasets (random effects, as for the differences from none), each at level "
                  f"{alpha:g}/{len(pooled)} (Bonferroni over the pooled contrasts):", "",
                  *(f"- {pooled_sentence(p, delta)}" for p in pooled), ""]
    return lines

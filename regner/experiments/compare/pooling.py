"""One estimate per method across datasets: a random-effects meta-analysis of the per-dataset paired
differences (method − none), so "does R-Drop help GlobalPointer in general" has an answer with its
interval, and the interval widens when the datasets disagree.

DerSimonian–Laird estimate of the between-dataset variance τ², inverse-variance weights 1/(vᵢ + τ²);
the interval uses the Hartung–Knapp–Sidik–Jonkman variance (floored at the inverse-variance one: the ad
hoc modification) with a t distribution on k − 1 degrees of freedom, which keeps its coverage with the
two to five datasets a benchmark has (the plain normal interval is far too narrow there). Each dataset's
vᵢ is its paired mean's squared standard error, sᵢ² / nᵢ, which the method takes as known: so a dataset
enters with :data:`MIN_SEEDS` paired differences or more. Two seeds give sᵢ on one degree of freedom,
near 0 by chance often enough to hand one dataset nearly all the weight: benchmark v3's 2-seed look pooled
a method to +0.62 points [+0.21, +1.03] from a CLUENER-300 SD of 0.1 points, where each dataset's own
interval was ±1.2 points or wider.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from regner.experiments.stats import t_critical

MIN_SEEDS = 3  # paired differences a dataset needs to enter a pooled estimate (sᵢ on ≥ 2 degrees of freedom)


@dataclass
class Pooled:
    estimate: float  # the random-effects mean difference
    ci: tuple[float, float]  # 95 % HKSJ interval (t with k − 1 df)
    tau2: float  # between-dataset variance (DerSimonian–Laird)
    q: float  # Cochran's Q
    k: int  # datasets pooled
    i2: float  # share of the spread due to heterogeneity, max(0, (Q − (k − 1)) / Q)


def dataset_effect(differences: list[float]) -> tuple[float, float]:
    """(mean, variance of the mean) of one dataset's paired differences."""
    if len(differences) < MIN_SEEDS:
        raise ValueError(f"a dataset needs at least {MIN_SEEDS} paired differences to be pooled (its variance "
                         f"is taken as known)")
    return statistics.fmean(differences), statistics.variance(differences) / len(differences)


def dataset_effects(cells: dict, method: str) -> tuple[list[tuple[float, float]], list[str], list[str]]:
    """What a method pools over ``cells`` ({dataset: its comparison}): each dataset's (mean, variance) with
    its name, where its last look had MIN_SEEDS seeds or more and some spread, and the datasets left out
    because the method was unstable there. The pooled rows of the report and "What to use" both read it."""
    effects, names, unstable = [], [], []
    for dataset, comparison in cells.items():
        state = comparison.states.get(method)
        if state is None or state.decision is None:  # not compared on this dataset, or no look yet
            continue
        if state.decision.state == "unstable":
            unstable.append(dataset)
            continue
        if state.decision.n < MIN_SEEDS:
            continue
        differences = comparison.differences(method)[:state.decision.n]
        if statistics.variance(differences) > 0:
            effects.append(dataset_effect(differences))
            names.append(dataset)
    return effects, names, unstable


def random_effects(effects: list[tuple[float, float]], confidence: float = 0.95) -> Pooled:
    """Pool (effect, variance) pairs, one per dataset."""
    if len(effects) < 2:
        raise ValueError("pooling needs at least two datasets")
    if any(v <= 0 or not math.isfinite(v) for _, v in effects):
        raise ValueError("every dataset's variance must be positive and finite")
    y = [e for e, _ in effects]
    w = [1.0 / v for _, v in effects]
    k, total = len(effects), sum(w)
    fixed = sum(wi * yi for wi, yi in zip(w, y)) / total
    q = sum(wi * (yi - fixed) ** 2 for wi, yi in zip(w, y))
    c = total - sum(wi * wi for wi in w) / total
    tau2 = max(0.0, (q - (k - 1)) / c)
    w_star = [1.0 / (v + tau2) for _, v in effects]
    estimate = sum(wi * yi for wi, yi in zip(w_star, y)) / sum(w_star)
    # HKSJ scales the variance by the observed spread; the ad hoc floor max(1, ·) (Knapp & Hartung 2003;
    # Röver, Knapp & Friede 2015) keeps it from falling below the inverse-variance one when a few datasets
    # agree by chance (two datasets with near-equal means would otherwise give a near-zero interval)
    spread = max(1.0, sum(wi * (yi - estimate) ** 2 for wi, yi in zip(w_star, y)) / (k - 1))
    se = math.sqrt(spread / sum(w_star))
    half = t_critical(k - 1, confidence) * se
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    return Pooled(estimate, (estimate - half, estimate + half), tau2, q, k, i2)

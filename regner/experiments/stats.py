"""The statistics a report's verdicts rest on: Student's t distribution, Welch's and the paired t
test, and Holm's step-down correction. Pure Python (no SciPy dependency); the t distribution's tail
comes from the regularized incomplete beta function, I_x(a, b), by its continued fraction.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def _beta_continued_fraction(a: float, b: float, x: float, tolerance: float = 1e-15, max_terms: int = 500) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), valid for x < (a + 1) / (a + b + 2)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, max_terms + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < tolerance:
            break
    return result


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) for 0 ≤ x ≤ 1, a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` (possibly fractional) degrees of freedom."""
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return math.nan
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)


def t_critical(df: float, confidence: float = 0.95) -> float:
    """t such that P(|T| ≥ t) = 1 − confidence for Student's t with ``df`` degrees of freedom (bisection
    on :func:`t_two_sided_p`, which falls monotonically in t)."""
    if math.isnan(df) or df <= 0:
        return math.nan
    alpha, low, high = 1.0 - confidence, 0.0, 1.0
    while t_two_sided_p(high, df) > alpha:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        low, high = (middle, high) if t_two_sided_p(middle, df) > alpha else (low, middle)
        if high - low < 1e-12 * high:
            break
    return (low + high) / 2.0


@dataclass
class TestResult:
    delta: float  # mean difference (group − baseline)
    p: float  # two-sided p-value (nan when it cannot be computed)
    test: str  # "paired t (n=…)", "Welch t (df=…)", or why there is none
    n: int  # samples in the group (pairs for the paired test)
    ci: tuple[float, float] = (math.nan, math.nan)  # 95 % confidence interval of delta (t-based, unadjusted)


def welch_t(group: list[float], baseline: list[float]) -> TestResult:
    """Welch's unequal-variance t test with Welch–Satterthwaite degrees of freedom."""
    delta = statistics.fmean(group) - statistics.fmean(baseline)
    if len(group) < 2 or len(baseline) < 2:
        return TestResult(delta, math.nan, "n<2", len(group))
    va, vb = statistics.variance(group) / len(group), statistics.variance(baseline) / len(baseline)
    se2 = va + vb
    if se2 == 0:  # no spread at all: any difference is certain, none is none
        return TestResult(delta, 0.0 if delta else 1.0, "Welch t (no variance)", len(group))
    df = se2 * se2 / (va * va / (len(group) - 1) + vb * vb / (len(baseline) - 1))
    half = t_critical(df) * math.sqrt(se2)
    return TestResult(delta, t_two_sided_p(delta / math.sqrt(se2), df), f"Welch t (df={df:.1f})", len(group),
                      (delta - half, delta + half))


def paired_t(differences: list[float]) -> TestResult:
    """Paired t test on per-seed differences (same seed = same init and data order)."""
    n = len(differences)
    delta = statistics.fmean(differences) if differences else math.nan
    if n < 2:
        return TestResult(delta, math.nan, "n<2", n)
    sd = statistics.stdev(differences)
    if sd == 0:
        return TestResult(delta, 0.0 if delta else 1.0, f"paired t (n={n}, no variance)", n, (delta, delta))
    se = sd / math.sqrt(n)
    half = t_critical(n - 1) * se
    return TestResult(delta, t_two_sided_p(delta / se, n - 1), f"paired t (n={n})", n, (delta - half, delta + half))


def compare_seeds(group: dict, baseline: dict) -> TestResult:
    """Compare per-seed values ``{seed: value}``: paired on the shared seeds when at least two are
    shared (the stronger design), else Welch on all values."""
    shared = sorted(set(group) & set(baseline), key=str)
    if len(shared) >= 2:
        return paired_t([group[s] - baseline[s] for s in shared])
    return welch_t(list(group.values()), list(baseline.values()))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control); nan stays nan, not counted."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m, running = len(indexed), 0.0
    adjusted = [math.nan] * len(p_values)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted

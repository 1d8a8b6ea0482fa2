"""Sequential paired comparison of a method with ``none``: seeds arrive in rounds (looks), and after
each look the method is *better*, *worse*, *equivalent* (within ±δ), *futile*, *open* or *exhausted*.

The design (docs/benchmarks/PROTOCOL.md, "Sequential comparison") is fixed before the first run:

- **Looks**: the seed counts at which the data are examined, e.g. 3, 5, 7, 10; the last is the maximum.
- **Difference (better/worse)**: a two-sided paired t test at each look k at level a_k, where the a_k
  are the increments of an alpha-spending function α*(t) at the information fractions t_k = n_k / n_K
  (Lan–DeMets O'Brien–Fleming type, 2 − 2Φ(z_{1−α/2}/√t), or Pocock type, α·ln(1 + (e − 1)t)).
  Σ a_k = α*(1) = α, so by Bonferroni over the looks the chance of any false difference verdict
  is at most α, whatever the dependence between looks and whatever other rule stops the method
  earlier (stopping can only remove chances to reject). Across the m methods of a comparison the
  familywise level is split: each method spends α/m (Bonferroni), so familywise ≤ α.
- **Equivalence**: two one-sided tests (TOST) with margin δ = ``target_mde`` at level e_k, the
  increments of the same spending function applied to ``equivalence_alpha``: the method is
  *equivalent* when the (1 − 2e_k) interval lies inside (−δ, +δ). The chance of declaring
  equivalence when the true difference is ±δ is at most ``equivalence_alpha`` (per method) by the
  same Bonferroni argument.
- **Futility** (non-binding, so it cannot raise either error rate): before the last look, the
  conditional power of each decision at the last look, given the data so far and assuming the
  observed mean difference is the truth (SD as observed), is computed; when both are below
  ``futility_power`` the method is *futile*: more seeds within the design would very likely not decide it.
  Not before ``futility_from`` seeds: a conditional power computed from two seeds rests on an SD with one
  degree of freedom, and stops methods that a third seed would show to be decidable.
  The report then says how many seeds a decision would need.
- **Exhausted**: the last look (or the run budget) came without a decision: the interval and the
  minimal detectable effect (MDE at 80 % power for the seeds it had) are what the row can say.

The t distribution is :mod:`regner.experiments.stats`' (tested against reference values).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist

from regner.experiments.stats import t_critical

STANDARD = NormalDist()
STATES = ("better", "worse", "equivalent", "futile", "unstable", "open", "exhausted")
SPENDING = ("obrien_fleming", "pocock")


def spent_alpha(fraction: float, alpha: float, kind: str = "obrien_fleming") -> float:
    """α*(t): the error probability a design may have spent by information fraction ``fraction``."""
    t = min(max(fraction, 0.0), 1.0)
    if t == 0.0:
        return 0.0
    if kind == "obrien_fleming":
        return min(alpha, 2.0 - 2.0 * STANDARD.cdf(STANDARD.inv_cdf(1.0 - alpha / 2.0) / math.sqrt(t)))
    if kind == "pocock":
        return alpha * math.log(1.0 + (math.e - 1.0) * t)
    raise ValueError(f"spending must be one of {SPENDING}, got {kind!r}")


@lru_cache(maxsize=256)
def look_levels(looks: tuple[int, ...], alpha: float, kind: str) -> tuple[float, ...]:
    """The level each look may use: the increments of α*(t) at t_k = n_k / n_K (they sum to α).
    Cached: every decision of a comparison asks for the same design's levels."""
    cumulative = [spent_alpha(n / looks[-1], alpha, kind) for n in looks]
    return tuple(high - low for low, high in zip([0.0, *cumulative[:-1]], cumulative))


@lru_cache(maxsize=4096)
def _t_two_sided(df: int, level: float) -> float:
    """t with P(|T| ≥ t) = level (cached: a comparison asks for few distinct (df, level) pairs)."""
    return t_critical(df, 1.0 - level)


def t_one_sided(df: int, level: float) -> float:
    """t with P(T ≥ t) = level."""
    return _t_two_sided(df, 2.0 * level)


@dataclass(frozen=True)
class Design:
    looks: tuple[int, ...] = (3, 5, 7, 10)  # seeds at each look; the last is the most a method gets
    alpha: float = 0.05  # familywise level of the better/worse verdicts
    methods: int = 1  # the family: each method spends alpha / methods
    delta: float = 0.01  # equivalence margin (target_mde), in F1 (0.01 = 1 point)
    equivalence_alpha: float = 0.05  # per method: P(equivalent | true difference = ±delta) ≤ this
    spending: str = "obrien_fleming"
    futility_power: float = 0.2  # futile when neither decision reaches this conditional power by the last look
    futility_from: int = 2  # the fewest seeds at which a method may stop as futile
    power: float = 0.8  # for the minimal detectable effect

    def __post_init__(self):
        if not self.looks or any(n < 2 for n in self.looks) or list(self.looks) != sorted(set(self.looks)):
            raise ValueError(f"looks must be increasing seed counts ≥ 2, got {self.looks}")
        if not 0 < self.alpha < 1 or not 0 < self.equivalence_alpha < 0.5 or self.methods < 1 or self.delta <= 0:
            raise ValueError("alpha in (0, 1), equivalence_alpha in (0, 0.5), methods ≥ 1, delta > 0")
        if self.spending not in SPENDING:
            raise ValueError(f"spending must be one of {SPENDING}, got {self.spending!r}")

    @property
    def method_alpha(self) -> float:
        return self.alpha / self.methods

    def difference_levels(self) -> tuple[float, ...]:
        return look_levels(self.looks, self.method_alpha, self.spending)

    def equivalence_levels(self) -> tuple[float, ...]:
        return look_levels(self.looks, self.equivalence_alpha, self.spending)


@dataclass
class Decision:
    state: str  # one of STATES
    n: int  # seeds (paired differences) it rests on
    mean: float  # mean paired difference (method − none)
    sd: float
    ci: tuple[float, float]  # the unadjusted 95 % interval (the decision itself uses the look's spent level)
    mde: float  # minimal detectable effect at the design's power for n seeds at the method's final level
    reason: str
    seeds_needed: int | None = None  # for futile/exhausted: seeds a decision would need (None: none within 1000)
    details: dict = field(default_factory=dict)


def _mean_sd(differences: list[float]) -> tuple[float, float]:
    return statistics.fmean(differences), statistics.stdev(differences) if len(differences) > 1 else math.nan


def minimal_detectable_effect(sd: float, n: int, level: float, power: float) -> float:
    """The true paired difference a two-sided t test at ``level`` detects with ``power`` from n seeds."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    df = n - 1
    return (_t_two_sided(df, level) + t_one_sided(df, 1.0 - power)) * sd / math.sqrt(n)


def _conditional_power(mean: float, sd: float, n: int, final: int, difference_level: float,
                       equivalence_level: float, delta: float) -> tuple[float, float]:
    """P(difference verdict at the last look), P(equivalence at the last look), given the data so far and
    assuming the observed mean is the truth (normal approximation, SD as observed)."""
    if sd == 0:
        return (1.0, 0.0) if abs(mean) > 0 else (0.0, 1.0)
    w = n / final
    centre = mean  # w·mean + (1 − w)·mean: the final mean's expectation under the observed trend
    spread = (1.0 - w) * sd / math.sqrt(final - n)  # sd of the final mean given the data so far
    se_final = sd / math.sqrt(final)
    df = final - 1
    reject = _t_two_sided(df, difference_level) * se_final
    difference = (1.0 - STANDARD.cdf((reject - centre) / spread)) + STANDARD.cdf((-reject - centre) / spread)
    margin = delta - t_one_sided(df, equivalence_level) * se_final
    equivalence = 0.0 if margin <= 0 else max(0.0, STANDARD.cdf((margin - centre) / spread)
                                              - STANDARD.cdf((-margin - centre) / spread))
    return difference, equivalence


def seeds_for_a_decision(mean: float, sd: float, design: Design, limit: int = 1000) -> int | None:
    """Fewest seeds with which a fixed-sample test at the design's last-look levels would decide (a
    difference, or equivalence) with the design's power, if the observed mean and SD are the truth
    (None: not within ``limit``). Both conditions only get easier with more seeds: bisection."""
    if not math.isfinite(sd) or sd == 0:
        return None
    level, equivalence_level = design.difference_levels()[-1], design.equivalence_levels()[-1]

    def decides(n: int) -> bool:
        df, se = n - 1, sd / math.sqrt(n)
        detect = abs(mean) >= (_t_two_sided(df, level) + t_one_sided(df, 1.0 - design.power)) * se
        equivalent = design.delta - abs(mean) >= (t_one_sided(df, equivalence_level)
                                                  + t_one_sided(df, (1.0 - design.power) / 2)) * se
        return detect or equivalent

    if not decides(limit):
        return None
    low, high = 1, limit  # decides(high) holds; decides(low) is taken as not (one seed decides nothing)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if decides(middle) else (middle, high)
    return high


def decide(differences: list[float], design: Design, look: int, explain: bool = True) -> Decision:
    """The state of one method after look ``look`` (0-based) of ``design``, from its paired
    differences (method − none per shared seed, in seed order; the first ``design.looks[look]`` count).
    ``explain=False`` skips the seeds-a-decision-would-need search (simulations do not read it)."""
    n = design.looks[look]
    if len(differences) < n:
        raise ValueError(f"look {look} needs {n} paired differences, got {len(differences)}")
    values = list(differences[:n])
    mean, sd = _mean_sd(values)
    level, equivalence_level = design.difference_levels()[look], design.equivalence_levels()[look]
    df, se = n - 1, sd / math.sqrt(n)
    half = _t_two_sided(df, 0.05) * se if sd > 0 else 0.0  # reported: the usual unadjusted 95 % interval
    ci = (mean - half, mean + half)
    mde = minimal_detectable_effect(sd, n, design.difference_levels()[-1], design.power)
    last = look == len(design.looks) - 1
    details = {"level": level, "equivalence_level": equivalence_level}
    if sd == 0 and mean == 0:
        return Decision("equivalent", n, mean, sd, ci, mde, "every paired difference is 0", details=details)
    t = math.inf if sd == 0 else mean / se
    if abs(t) > _t_two_sided(df, level):
        state = "better" if mean > 0 else "worse"
        return Decision(state, n, mean, sd, ci, mde, f"|t| = {abs(t):.2f} beyond the look's critical value at "
                        f"level {level:.2g} (spent of {design.method_alpha:.3g})", details=details)
    equivalence_half = t_one_sided(df, equivalence_level) * se
    if -design.delta < mean - equivalence_half and mean + equivalence_half < design.delta:
        return Decision("equivalent", n, mean, sd, ci, mde, f"the {1 - 2 * equivalence_level:.4g} interval "
                        f"[{100 * (mean - equivalence_half):+.2f}, {100 * (mean + equivalence_half):+.2f}] F1 points lies "
                        f"within ±{100 * design.delta:.2f} (TOST)", details=details)
    needed = seeds_for_a_decision(mean, sd, design) if explain else None
    if last:
        return Decision("exhausted", n, mean, sd, ci, mde, f"no decision at the design's last look ({n} seeds)",
                        needed, details)
    power_difference, power_equivalence = _conditional_power(
        mean, sd, n, design.looks[-1], design.difference_levels()[-1], design.equivalence_levels()[-1], design.delta)
    details.update(conditional_power_difference=power_difference, conditional_power_equivalence=power_equivalence)
    if max(power_difference, power_equivalence) < design.futility_power and n >= design.futility_from:
        return Decision("futile", n, mean, sd, ci, mde, f"by {design.looks[-1]} seeds a difference verdict has "
                        f"conditional power {power_difference:.2f} and equivalence {power_equivalence:.2f} (< "
                        f"{design.futility_power:g})", needed, details)
    return Decision("open", n, mean, sd, ci, mde, f"undecided at {n} seeds: more seeds (next look: "
                    f"{design.looks[look + 1]})", needed, details)


def run_sequence(differences: list[float], design: Design, explain: bool = True) -> Decision:
    """Every look in turn until a state other than *open*: the decision a comparison would reach if this
    method's seeds arrived in this order (``differences`` holds at least the last look's count)."""
    for look in range(len(design.looks)):
        decision = decide(differences, design, look, explain)
        if decision.state != "open":
            return decision
    raise AssertionError("the last look always decides")  # pragma: no cover - decide() never says open there

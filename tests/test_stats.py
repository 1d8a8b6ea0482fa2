"""The report's statistics against closed forms, tables and simulation."""

import math
import random

import pytest

from regner.experiments.stats import (
    compare_seeds,
    holm,
    paired_t,
    regularized_incomplete_beta,
    t_critical,
    t_two_sided_p,
    welch_t,
)


def test_t_tail_matches_closed_forms_and_tables():
    for t in (0.3, 1.0, 2.5, 7.0):
        assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-10)  # Cauchy
        assert t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10)
    # two-sided 5% critical values from t tables
    for df, critical in ((2, 4.302653), (4, 2.776445), (5, 2.570582), (10, 2.228139), (30, 2.042272)):
        assert t_two_sided_p(critical, df) == pytest.approx(0.05, abs=2e-7)
    assert t_two_sided_p(1.96, 1e7) == pytest.approx(0.0499958, abs=1e-6)  # → normal
    assert t_two_sided_p(0.0, 3) == pytest.approx(1.0) and t_two_sided_p(math.inf, 3) == 0.0


def test_incomplete_beta_symmetry_and_uniform_case():
    assert regularized_incomplete_beta(0.3, 1, 1) == pytest.approx(0.3)
    for x, a, b in ((0.2, 2.5, 0.5), (0.9, 3, 4), (0.5, 10, 10)):
        assert regularized_incomplete_beta(x, a, b) == pytest.approx(1 - regularized_incomplete_beta(1 - x, b, a))


def test_welch_degrees_of_freedom_and_p():
    result = welch_t([0.70, 0.71, 0.72], [0.60, 0.62, 0.64])
    va, vb = 0.0001 / 3, 0.0004 / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert result.delta == pytest.approx(0.09) and f"df={df:.1f}" in result.test
    assert result.p == pytest.approx(t_two_sided_p(0.09 / math.sqrt(va + vb), df))


def test_t_critical_values_and_confidence_intervals():
    for df, critical in ((1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139), (30, 2.042272)):
        assert t_critical(df) == pytest.approx(critical, rel=1e-6)  # two-sided 5 % from t tables
    assert t_critical(4, 0.90) == pytest.approx(2.131847, rel=1e-6)
    # paired: mean ± t(n−1) · sd/√n, by hand for differences 0.01, 0.03, 0.02, 0.04, 0.00
    diffs = [0.01, 0.03, 0.02, 0.04, 0.00]
    half = 2.776445 * math.sqrt(sum((d - 0.02) ** 2 for d in diffs) / 4) / math.sqrt(5)
    low, high = paired_t(diffs).ci
    assert low == pytest.approx(0.02 - half, abs=1e-8) and high == pytest.approx(0.02 + half, abs=1e-8)
    # the interval excludes 0 exactly when p < 0.05
    for sample in ([0.01, 0.02, 0.015], [0.01, -0.02, 0.015], [0.1, 0.3, -0.05, 0.2]):
        result = paired_t(sample)
        assert (result.ci[0] > 0 or result.ci[1] < 0) == (result.p < 0.05)
    welch = welch_t([0.70, 0.71, 0.72], [0.60, 0.62, 0.64])
    va, vb = 0.0001 / 3, 0.0004 / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)  # Welch–Satterthwaite, by hand
    assert welch.ci[1] - welch.delta == pytest.approx(t_critical(df) * math.sqrt(va + vb), rel=1e-9)


def test_zero_spread_with_a_difference_is_not_noise():
    assert welch_t([0.5, 0.5], [0.4, 0.4]).p == 0.0
    assert paired_t([0.1, 0.1, 0.1]).p == 0.0
    assert paired_t([0.0, 0.0]).p == 1.0


def test_paired_test_used_when_seeds_are_shared():
    group = {1: 0.61, 2: 0.66, 3: 0.71}
    baseline = {1: 0.60, 2: 0.65, 3: 0.70}  # large seed effect, constant +0.01 gain
    assert compare_seeds(group, baseline).test.startswith("paired") and compare_seeds(group, baseline).p < 1e-6
    assert welch_t(list(group.values()), list(baseline.values())).p > 0.5  # Welch cannot see it
    assert compare_seeds({4: 0.6, 5: 0.7}, baseline).test.startswith("Welch")


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)


@pytest.mark.parametrize("paired", [True, False])
def test_false_verdict_rate_at_three_seeds_is_at_most_five_percent(paired):
    """No true difference, 3 seeds each: the old |Δ| > 2·SE rule said better/worse ~11.6% of the
    time; the t tests at α = 0.05 must stay at or under 5%."""
    rng = random.Random(12345)
    trials, false, old_rule = 4000, 0, 0
    for _ in range(trials):
        seed_effect = [rng.gauss(0, 0.02) for _ in range(3)]
        group = {s: 0.6 + seed_effect[s] * paired + rng.gauss(0, 0.01) for s in range(3)}
        base = {(s if paired else s + 10): 0.6 + seed_effect[s] * paired + rng.gauss(0, 0.01) for s in range(3)}
        false += compare_seeds(group, base).p < 0.05
        g, b = list(group.values()), list(base.values())
        se = math.sqrt(sum((x - sum(g) / 3) ** 2 for x in g) / 6 + sum((x - sum(b) / 3) ** 2 for x in b) / 6)
        old_rule += abs(sum(g) / 3 - sum(b) / 3) >= 2 * se
    assert false / trials <= 0.05
    if not paired:
        assert old_rule / trials > 0.08  # the simulation does expose the old rule


def test_holm_keeps_the_family_wise_rate_over_a_report():
    rng = random.Random(7)
    reports, any_false, uncorrected = 1000, 0, 0
    for _ in range(reports):
        ps = []
        for _ in range(10):  # ten regularizer rows, none truly different
            ps.append(compare_seeds({s: rng.gauss(0, 1) for s in range(3)}, {s: rng.gauss(0, 1) for s in range(3)}).p)
        any_false += any(p < 0.05 for p in holm(ps))
        uncorrected += any(p < 0.05 for p in ps)
    # Holm bounds the family-wise rate by 5%; allow the simulation's own sampling error (SE ≈ 0.7%)
    assert any_false / reports <= 0.05 + 0.01
    assert uncorrected / reports > 0.3  # without the correction some row of a report is "significant" by chance

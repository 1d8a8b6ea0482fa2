"""The sequential comparison's math against independent values, and its error rates by simulation
(seed noise like the committed benchmark's: per-seed paired SD of 1 to 4 F1 points, 12 methods)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from regner.experiments.compare.sequential import (
    Design,
    decide,
    look_levels,
    minimal_detectable_effect,
    run_sequence,
    seeds_for_a_decision,
    spent_alpha,
)


def test_spending_functions_match_their_formulas():
    # Lan–DeMets O'Brien–Fleming type at t = 0.5, α = 0.05: 2 − 2Φ(1.959964/√0.5) = 2 − 2Φ(2.771808) = 0.005575
    assert spent_alpha(0.5, 0.05, "obrien_fleming") == pytest.approx(0.005575, abs=2e-6)
    # Pocock type: 0.05 · ln(1 + (e − 1) · 0.5) = 0.05 · ln(1.859141) = 0.031006
    assert spent_alpha(0.5, 0.05, "pocock") == pytest.approx(0.031006, abs=2e-6)
    for kind in ("obrien_fleming", "pocock"):
        assert spent_alpha(1.0, 0.05, kind) == pytest.approx(0.05) and spent_alpha(0.0, 0.05, kind) == 0.0
        levels = look_levels((3, 5, 8), 0.05, kind)
        assert sum(levels) == pytest.approx(0.05) and all(level > 0 for level in levels)
    assert look_levels((3, 5, 8), 0.05, "obrien_fleming")[0] < look_levels((3, 5, 8), 0.05, "pocock")[0]


def test_a_clear_difference_is_better_and_its_numbers_are_the_paired_t_test():
    design = Design(looks=(3, 5), methods=1, spending="pocock")
    differences = [0.031, 0.029, 0.030, 0.032, 0.028]
    decision = decide(differences, design, 0)
    mean, sd = statistics.fmean(differences[:3]), statistics.stdev(differences[:3])
    assert decision.state == "better" and decision.n == 3
    assert decision.mean == pytest.approx(mean) and decision.sd == pytest.approx(sd)
    # t = 0.03 / (0.001 / √3) = 51.96 > the 2-df critical value at Pocock's first level (≈ 0.0265): 5.8
    assert "|t| = 51.96" in decision.reason
    assert decide([-d for d in differences], design, 0).state == "worse"


def test_a_tight_null_is_equivalent_and_a_noisy_one_is_futile_with_the_seeds_it_would_need():
    design = Design(looks=(3, 5, 8), methods=12, delta=0.01)
    tight = run_sequence([0.001, -0.001, 0.0005, 0.0, -0.0005, 0.001, 0.0, -0.001], design)
    assert tight.state == "equivalent" and "F1 points lies within ±1.00" in tight.reason
    noisy = run_sequence([0.04, -0.035, 0.01, -0.02, 0.03, -0.04, 0.02, 0.0], design)
    assert noisy.state in ("futile", "exhausted")
    assert noisy.seeds_needed is None or noisy.seeds_needed > 8
    # the MDE formula: (t_{1−a/2, n−1} + t_{0.8, n−1}) · sd / √n
    assert minimal_detectable_effect(0.02, 5, 0.05, 0.8) == pytest.approx((2.776445 + 0.940965) * 0.02 / math.sqrt(5),
                                                                           rel=1e-5)
    assert seeds_for_a_decision(0.0, 0.002, design) is not None  # a tiny SD: equivalence is within reach


def simulate(design: Design, true: float, comparisons: int, seed: int = 2026, methods: int = 12) -> dict:
    rng = random.Random(seed)
    familywise, states, seeds = 0, dict.fromkeys(("better", "worse", "equivalent", "futile", "exhausted"), 0), []
    for _ in range(comparisons):
        wrong = False
        for _ in range(methods):
            sd = rng.uniform(0.01, 0.04)  # per-seed paired SD: 1 to 4 F1 points
            decision = run_sequence([rng.gauss(true, sd) for _ in range(design.looks[-1])], design, explain=False)
            states[decision.state] += 1
            seeds.append(decision.n)
            wrong |= true == 0 and decision.state in ("better", "worse")
        familywise += wrong
    total = comparisons * methods
    return {"familywise": familywise / comparisons, **{k: v / total for k, v in states.items()},
            "seeds": statistics.fmean(seeds)}


DESIGN = Design(looks=(2, 3, 4, 5), methods=12, delta=0.01, spending="obrien_fleming")  # regner compare's default
FIXED = Design(looks=(5,), methods=12, delta=0.01)  # the fixed 5-seed design at the same familywise level
COMPARISONS = 2000
SLACK = 2 * math.sqrt(0.05 * 0.95 / COMPARISONS)  # two simulation standard errors at a 5 % rate


def test_error_rates_by_simulation():
    null = simulate(DESIGN, 0.0, COMPARISONS)
    assert null["familywise"] <= 0.05 + SLACK, null  # false better/worse, any of 12 methods
    at_margin = simulate(DESIGN, DESIGN.delta, COMPARISONS // 4)
    assert at_margin["equivalent"] <= 0.05 + SLACK, at_margin  # false equivalence at a true difference of δ
    double = simulate(DESIGN, 2 * DESIGN.delta, COMPARISONS // 4)
    assert 0.0 <= double["better"] <= 1.0 and double["worse"] <= SLACK  # power at 2δ, reported below
    # seeds spent per method with no true difference, against the fixed 5-seed design
    assert null["seeds"] / 5 <= 0.60, null
    fixed_null, fixed_double = simulate(FIXED, 0.0, COMPARISONS // 4), simulate(FIXED, 2 * FIXED.delta, COMPARISONS // 4)
    assert fixed_null["familywise"] <= 0.05 + 2 * SLACK  # the same error-rate bound (fewer comparisons: wider slack)
    print(f"\nnull: familywise {null['familywise']:.3f}, seeds/method {null['seeds']:.2f} ({null['seeds'] / 5:.0%} of 5); "
          f"at δ: equivalent {at_margin['equivalent']:.3f}; at 2δ: power {double['better']:.3f} (fixed 5 seeds: "
          f"familywise {fixed_null['familywise']:.3f}, power {fixed_double['better']:.3f})")


def test_the_simulation_catches_a_looser_rule():
    # no split of alpha over the 12 methods: the familywise rate of false verdicts is far above 5 %
    loose = simulate(Design(looks=(2, 3, 4, 5), methods=1, delta=0.01), 0.0, COMPARISONS // 4)
    assert loose["familywise"] > 0.05 + SLACK


def test_bad_designs_are_refused():
    for bad in ({"looks": (5, 3)}, {"looks": (1, 3)}, {"alpha": 0}, {"delta": 0}, {"spending": "linear"}):
        with pytest.raises(ValueError):
            Design(**bad)


# -- pooling across datasets (random effects) ------------------------------------------------------------------------
def test_random_effects_match_hand_computed_dersimonian_laird_and_hksj():
    from regner.experiments.compare.pooling import random_effects

    # homogeneous: w = 100, 25; fixed mean 0.14; Q = 0.8 < df = 1, so τ² = 0 and the estimate is the fixed one
    homogeneous = random_effects([(0.1, 0.01), (0.3, 0.04)])
    assert homogeneous.tau2 == 0.0 and homogeneous.estimate == pytest.approx(0.14) and homogeneous.q == pytest.approx(0.8)
    # the HKSJ spread Q / (k − 1) = 0.8 is floored at 1: variance 1 / Σw = 1/125, not 0.8/125
    assert homogeneous.ci == pytest.approx((0.14 - 12.7062 * math.sqrt(1 / 125), 0.14 + 12.7062 * math.sqrt(1 / 125)),
                                           rel=1e-4)
    # heterogeneous: Q = 12.5, C = 100, τ² = 0.115; w* = 8 each; HKSJ variance 1/16; t(0.975, 1) = 12.7062
    pooled = random_effects([(0.0, 0.01), (0.5, 0.01)])
    assert pooled.tau2 == pytest.approx(0.115) and pooled.estimate == pytest.approx(0.25)
    assert pooled.ci == pytest.approx((0.25 - 12.7062 * 0.25, 0.25 + 12.7062 * 0.25), rel=1e-4)
    assert pooled.i2 == pytest.approx(11.5 / 12.5)
    with pytest.raises(ValueError):
        random_effects([(0.1, 0.01)])


def test_pooled_interval_covers_the_truth_about_95_percent_with_few_datasets():
    from regner.experiments.compare.pooling import dataset_effect, random_effects

    rng, covered, trials = random.Random(5), 0, 400
    for _ in range(trials):
        truth, effects = 0.01, []
        for _ in range(3):  # three datasets, each with its own true effect around 0.01 (τ = 0.005), 5 seeds
            local = rng.gauss(truth, 0.005)
            effects.append(dataset_effect([rng.gauss(local, rng.uniform(0.01, 0.04)) for _ in range(5)]))
        low, high = random_effects(effects).ci
        covered += low <= truth <= high
    assert 0.90 <= covered / trials <= 0.995  # floored HKSJ: 0.9925 here (plain HKSJ 0.93); the normal interval 0.865 fails


def test_futility_waits_for_futility_from_seeds_and_touches_no_other_verdict():
    noisy = [0.04, -0.035, 0.01, -0.02, 0.03]
    early = Design(looks=(2, 3, 4, 5), methods=15, delta=0.01)
    assert decide(noisy, early, 0).state == "futile"  # judged from an SD with one degree of freedom
    later = Design(looks=(2, 3, 4, 5), methods=15, delta=0.01, futility_from=3)
    assert decide(noisy, later, 0).state == "open"
    assert decide(noisy, later, 1).state == decide(noisy, early, 1).state  # from 3 seeds on, the same rule
    clear = [0.031, 0.029, 0.030, 0.032, 0.028]
    assert decide(clear, Design(looks=(3, 5), spending="pocock", futility_from=5), 0).state == "better"

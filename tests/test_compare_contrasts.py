"""Contrasts between two methods of a comparison (a − b on shared seeds): the paired t interval against
hand computations with reference t quantiles, the Bonferroni split, and their place in the report."""

from __future__ import annotations

import math
import statistics

import pytest

from regner.experiments.compare import report
from regner.experiments.compare.cache import RunIndex
from regner.experiments.compare.contrasts import (
    Contrast,
    contrast_rows,
    judge,
    markdown_lines,
    pooled_contrasts,
    sentence,
)
from regner.experiments.compare.engine import Result
from regner.experiments.compare.pooling import dataset_effect, random_effects
from regner.experiments.compare.profile import CompareError, load_profile
from tests.test_compare_parts import SPEC, FakeExecutor, driver

T_975_4 = 2.7764451052  # t quantiles, 4 df (scipy.stats.t.ppf at 0.975, 1 − 0.0125/2, 1 − 0.0125)
T_99375_4 = 4.3146560489
T_9875_4 = 3.4954059325


def results(a: list[float], b: list[float], collapsed: tuple[str, int] | None = None) -> dict:
    found = {}
    for seed, value in enumerate(a, start=1):
        found[("a", seed)] = Result(value, ("a", seed) == collapsed)
    for seed, value in enumerate(b, start=1):
        found[("b", seed)] = Result(value, ("b", seed) == collapsed)
    return found


def test_a_contrast_is_the_paired_t_interval_on_the_shared_seeds():
    a, b = [0.62, 0.63, 0.615, 0.64, 0.63], [0.60, 0.60, 0.59, 0.605, 0.60]
    row = judge("d", "r", Contrast("c", "a", "b"), results(a, b), [1, 2, 3, 4, 5], 0.05, 0.01, 0.8)
    differences = [x - y for x, y in zip(a, b)]
    mean, se = statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(5)
    assert row.differences == pytest.approx(differences)
    assert row.ci == pytest.approx((mean - T_975_4 * se, mean + T_975_4 * se), rel=1e-6)
    assert row.adjusted == pytest.approx(row.ci, rel=1e-6)  # one row: the split level is α itself
    assert row.state == "ahead"
    swapped = judge("d", "r", Contrast("c", "b", "a"), results(a, b), [1, 2, 3, 4, 5], 0.05, 0.01, 0.8)
    assert swapped.state == "behind" and swapped.mean == pytest.approx(-mean)


def test_only_seeds_both_methods_ran_are_paired_and_a_collapse_gives_no_verdict():
    row = judge("d", "r", Contrast("c", "a", "b"), results([0.6, 0.61, 0.62], [0.6, 0.6]), [1, 2, 3], 0.05, 0.01, 0.8)
    assert row.seeds == [1, 2] and len(row.differences) == 2
    lonely = judge("d", "r", Contrast("c", "a", "b"), results([0.6, 0.61], [0.6]), [1, 2], 0.05, 0.01, 0.8)
    assert lonely.state == "too few seeds" and math.isnan(lonely.mean)
    broken = judge("d", "r", Contrast("c", "a", "b"), results([0.6, 0.0, 0.6], [0.6, 0.6, 0.6], ("a", 2)),
                   [1, 2, 3], 0.05, 0.01, 0.8)
    assert broken.state == "unstable"


def test_equivalence_is_a_tost_at_the_split_level_and_noise_is_undecided():
    close = judge("d", "r", Contrast("c", "a", "b"), results([0.601, 0.600, 0.6005, 0.6012, 0.5998], [0.6] * 5),
                  [1, 2, 3, 4, 5], 0.05, 0.01, 0.8)
    assert close.state == "equivalent"
    noisy = judge("d", "r", Contrast("c", "a", "b"), results([0.62, 0.57, 0.64, 0.58, 0.61], [0.6] * 5),
                  [1, 2, 3, 4, 5], 0.05, 0.01, 0.8)
    assert noisy.state == "undecided" and noisy.mde > 0.01
    assert f"detect only differences of {100 * noisy.mde:.2f} points or more" in sentence(noisy, 0.01, 0.05)
    # 2 seeds at a split level: the MDE passes any F1 difference, and the row says so as the rows vs none do
    wide = judge("d", "r", Contrast("c", "a", "b"), results([0.62, 0.57], [0.6, 0.6]), [1, 2], 0.005, 0.01, 0.8)
    assert wide.state == "undecided" and wide.mde >= 1
    assert "detect no difference an F1 score can show (the MDE passes 100 points)" in sentence(wide, 0.01, 0.005)
    assert "| undecided | > 100 |" in "\n".join(markdown_lines([wide], [], 0.05, 0.01))


class _Cell:
    def __init__(self, found: dict):
        self.results, self.seeds, self.states = found, [1, 2, 3, 4, 5], {"a": None, "b": None}


def test_the_family_is_every_contrast_row_bonferroni():
    a, b = [0.62, 0.63, 0.615, 0.64, 0.63], [0.60, 0.60, 0.59, 0.605, 0.60]
    cells = {("d1", "r"): _Cell(results(a, b)), ("d2", "r"): _Cell(results(b, a))}
    pairs = [Contrast("ab", "a", "b"), Contrast("ba", "b", "a")]
    rows = contrast_rows(cells, pairs, alpha=0.05, delta=0.01, power=0.8)
    assert len(rows) == 4
    differences = [x - y for x, y in zip(a, b)]
    mean, se = statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(5)
    assert rows[0].adjusted == pytest.approx((mean - T_99375_4 * se, mean + T_99375_4 * se), rel=1e-4)
    tost_half = T_9875_4 * se  # the equivalence interval at the same split level
    assert rows[0].mean - tost_half > 0.01  # far from equivalence: the verdict is a difference
    pooled = pooled_contrasts(rows)
    assert [p["contrast"] for p in pooled] == ["ab", "ba"]
    assert pooled[0]["estimate"] == pytest.approx(0.0, abs=1e-12)  # +x on d1, −x on d2 with equal spread
    assert pooled[0]["level"] == pytest.approx(0.025)  # Bonferroni over the 2 pooled contrasts
    effects = [dataset_effect(r.differences) for r in rows if r.contrast.name == "ab"]
    assert pooled[0]["ci"] == pytest.approx(list(random_effects(effects, 0.975).ci))


@pytest.mark.parametrize("contrasts, message", [({"c": ["a"]}, "two method names"),
                                                ({"c": ["a", "zzz"]}, "zzz is not a method"),
                                                ({"c": ["a", "a"]}, "against itself"),
                                                (["a", "b"], "a mapping")])
def test_a_bad_contrast_is_refused_naming_its_key(contrasts, message):
    with pytest.raises(CompareError, match=f"^contrasts.*{message}"):
        load_profile({**SPEC, "contrasts": contrasts}, "test")


def test_the_report_has_the_contrasts_of_the_driver_s_own_runs(tmp_path):
    index = RunIndex()
    executor = FakeExecutor(index, {"a": 0.05, "b": 0.0})
    run = driver(tmp_path, index, executor, contrasts={"a_vs_b": ["a", "b"]})
    run.run()
    trained = len(executor.trained)
    rows, pooled = report.contrast_rows(run)
    assert len(executor.trained) == trained  # a contrast trains nothing
    assert [(r.contrast.a, r.contrast.b, r.state) for r in rows] == [("a", "b", "ahead")]
    text = report.markdown(run, "preamble", report.rows(run), report.pooled_rows(run), (rows, pooled))
    assert "## Contrasts between methods" in text and "a is ahead of b on d by" in text
    summary = report.summary(run, report.rows(run), [], (rows, pooled))
    assert summary["contrasts"][0]["state"] == "ahead" and len(summary["contrasts"][0]["differences"]) >= 2

"""Rows from groups: means, the paired (or Welch) test against ``none``, Holm's correction over
the report, and the collapse rule."""

from __future__ import annotations

import math
import statistics
from typing import Any

from regner.experiments.report.grouping import setting_label
from regner.experiments.report.records import Group, mean_std
from regner.experiments.stats import compare_seeds, holm

SIGNIFICANCE = 0.05  # family-wise, after Holm's correction over the rows of one report


def collapse_count(row: dict[str, Any]) -> str:
    """"k of n" for a summary row's collapsed seeds: n counts the runs judged (completed or diverged),
    not the failed ones."""
    return f"{row['collapsed']} of {row['judged_runs']}"


def collapse_note(row: dict[str, Any]) -> str:
    """"k of n collapsed" (see ``collapse_count``)."""
    return f"{collapse_count(row)} collapsed"


def is_unstable(verdict: str) -> bool:
    """Whether a row's verdict says some of its seeds collapsed ("unstable (k of n collapsed)")."""
    return verdict.startswith("unstable")


def summarize(groups: list[Group]) -> list[dict[str, Any]]:
    """One row per group; each non-baseline row tested against the ``none`` runs of its setting,
    with Holm's correction over all tested rows."""
    baselines = {g.setting: g for g in groups if g.regularizer == "none"}
    rows = []
    for g in groups:
        dev_mean, dev_std = mean_std(g.values("dev_f1"))
        test_mean, test_std = mean_std(g.values("test_f1"))
        counted = g.counted
        collapsed = sum(r.collapsed for r in g.runs)
        base = baselines.get(g.setting)
        # Test F1 only when this group and its baseline all have one (a diverged run has no metrics at all).
        with_test = all(not math.isnan(r.test_f1) or r.status == "diverged" for r in counted)
        base_with_test = base is None or all(not math.isnan(r.test_f1) for r in base.good)
        judge = "test" if counted and with_test and base_with_test else "dev"
        attribute = f"{judge}_f1"
        all_seeds = [0.0 if r.status == "diverged" else getattr(r, attribute) for r in counted]
        ratios = [r.cost_ratio for r in g.runs if not math.isnan(r.cost_ratio)]
        memory = g.values("peak_memory_mb")
        row = {
            "setting": setting_label(g), "dataset": g.dataset, "encoder": g.encoder, "regularizer": g.regularizer,
            "kl": g.kl or "—", "strength": g.strength, "n": len(g.per_seed("dev_f1")), "runs": len(g.runs),
            "judged_runs": len(counted), "collapsed": collapsed,
            "failed": sum(r.status not in ("completed", "diverged") for r in g.runs),
            "dev_f1_mean": dev_mean, "dev_f1_std": dev_std, "dev_f1_best": max(g.values("dev_f1"), default=math.nan),
            "test_f1_mean": test_mean, "test_f1_std": test_std,
            "judged_on": judge, "f1_all_seeds_mean": statistics.fmean(all_seeds) if all_seeds else math.nan,
            "cost_ratio": statistics.fmean(ratios) if ratios else math.nan,
            "peak_memory_mb": max(memory, default=math.nan),
            "delta_vs_none": math.nan, "delta_ci_low": math.nan, "delta_ci_high": math.nan,
            "test": "", "p": math.nan, "p_holm": math.nan, "verdict": "",
            "_runs": g.runs,  # not written to report.csv (keys starting with _)
        }
        if g.regularizer == "none":
            row["verdict"] = "baseline"
        elif base is None:
            row["verdict"] = "no none runs in this setting"
        else:
            group_values, base_values = g.per_seed(attribute), base.per_seed(attribute)
            if group_values and base_values:
                result = compare_seeds(group_values, base_values)
                row.update(delta_vs_none=result.delta, delta_ci_low=result.ci[0], delta_ci_high=result.ci[1],
                           test=result.test, p=result.p)
            if collapsed:
                row["verdict"] = f"unstable ({collapse_note(row)})"
            elif not group_values or not base_values:
                row["verdict"] = "no data"
            elif math.isnan(row["p"]):
                row["verdict"] = "n<2: cannot tell"
        rows.append(row)
    tested = [r for r in rows if r["verdict"] == "" and not math.isnan(r["p"])]
    for row, adjusted in zip(tested, holm([r["p"] for r in tested])):
        row["p_holm"] = adjusted
        row["verdict"] = ("better" if row["delta_vs_none"] > 0 else "worse") if adjusted < SIGNIFICANCE else "within noise"
    return rows

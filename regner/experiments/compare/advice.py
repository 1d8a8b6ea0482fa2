"""The report's "What to use": one paragraph per regime generated from the numbers, never written by hand.

A method is recommended when its gain over ``none`` is beyond noise *in general*: its random-effects
pooled difference across the datasets (:mod:`.pooling`) has a lower end above 0 at level α/m, m the
methods pooled in the regime (Bonferroni: picking the best of m intervals at 95 % each would find a
"winner" by chance far more often than 5 %). Among those, the cheapest by mean time × wins. With one dataset
(nothing to pool) the rule reads the rows' sequential verdicts instead. Otherwise the paragraph says
"none of them, at this precision" and what the data cannot rule out: the largest pooled upper end.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from regner.experiments.compare.formatting import points
from regner.experiments.compare.pooling import dataset_effects, random_effects


def _ratio(values: list[float]) -> float:
    found = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(found) if found else math.nan


def _finite(value: float) -> float:
    """For ordering by cost: an unmeasured cost sorts last."""
    return value if math.isfinite(value) else math.inf


def not_ruled_out(upper: float, who: str) -> str:
    """What the widest interval leaves open, in words: its upper end, unless that passes +100 points, more than
    any F1 difference can be (2 seeds give intervals that wide): then no gain is ruled out yet."""
    if upper >= 1:
        return (f"no gain is ruled out yet: the widest interval ({who}) reaches past +100 points, more than any F1 "
                "difference can be")
    return f"gains up to {points(upper)} points ({who}) are not ruled out"


def open_gains(pooled: list[dict]) -> str:
    """What the pooled intervals leave open, in words: the largest upper end among those within +100 points and the
    tightest one; the methods whose interval passes +100 points (a pool of 2 datasets on 1 degree of freedom can) are
    named apart, instead of letting one of them say that no gain is ruled out for any method."""
    bounded = sorted((e for e in pooled if e["pooled"].ci[1] < 1), key=lambda e: e["pooled"].ci[1])
    wide = [e["method"] for e in pooled if e["pooled"].ci[1] >= 1]
    if not bounded:
        return not_ruled_out(max(e["pooled"].ci[1] for e in pooled), ", ".join(wide))
    parts = [not_ruled_out(bounded[-1]["pooled"].ci[1], bounded[-1]["method"])]
    if len(bounded) > 1:
        parts.append(f"the tightest bound is {bounded[0]['method']}'s, {points(bounded[0]['pooled'].ci[1])} points")
    if wide:
        reach = "its interval reaches" if len(wide) == 1 else "their intervals reach"
        parts.append(f"for {', '.join(wide)} no gain is ruled out yet: {reach} past +100 points, more than any F1 "
                     "difference can be")
    return "; ".join(parts)


def _cost(rows: list[dict], method: str) -> str:
    time = _ratio([r["time_ratio"] for r in rows if r["method"] == method])
    memory = _ratio([r.get("memory_ratio", math.nan) for r in rows if r["method"] == method])
    parts = [f"{time:.2f}× none's time" if math.isfinite(time) else "",
             f"{memory:.2f}× its memory" if math.isfinite(memory) else ""]
    return ", ".join(p for p in parts if p) or "cost not measured"


def adjusted_pooled(driver, regime: str, alpha: float) -> list[dict[str, Any]]:
    """Per method of ``regime``: the pooled difference from none with its (1 − α/m) interval."""
    cells = {d: c for (d, r), c in driver.comparisons.items() if r == regime}
    found = []
    for method in dict.fromkeys(m for c in cells.values() for m in c.states):
        effects = dataset_effects(cells, method)[0]
        if len(effects) >= 2:
            found.append((method, effects))
    level = alpha / max(1, len(found))
    return [{"method": m, "k": len(e), "pooled": random_effects(e, 1 - level), "level": level} for m, e in found]


def what_to_use(driver, table: list[dict]) -> list[str]:
    """The "What to use" section: one paragraph per regime."""
    p = driver.profile
    lines = ["## What to use", ""]
    for regime in dict.fromkeys(r for _, r in driver.comparisons):
        rows = [r for r in table if r["regime"] == regime]
        pooled = adjusted_pooled(driver, regime, p.design.alpha)
        datasets = list(dict.fromkeys(r["dataset"] for r in rows))
        lines += [f"**{regime}** ({', '.join(datasets)}): {paragraph(rows, pooled, p.design.delta)}", ""]
    return lines


def paragraph(rows: list[dict], pooled: list[dict], delta: float) -> str:
    better = [r for r in rows if r["state"] == "better"]
    worse = [r for r in rows if r["state"] in ("worse", "unstable")]
    avoid = "" if not worse else " Avoid, where they were worse than none or collapsed: " + "; ".join(
        f"{r['method']} on {r['dataset']} ({r['state']})" for r in worse) + "."
    if pooled:
        level = pooled[0]["level"]
        winners = [e for e in pooled if e["pooled"].ci[0] > 0]
        if winners:
            cheapest = min(winners, key=lambda e: _finite(_ratio([r["time_ratio"] for r in rows
                                                                  if r["method"] == e["method"]])))
            pick = cheapest["pooled"]
            others = [e["method"] for e in winners if e is not cheapest]
            return (f"**{cheapest['method']}**: the cheapest method whose gain over none is beyond noise across "
                    f"{pick.k} datasets: pooled {points(pick.estimate)} F1 points ({1 - level:.4g} interval "
                    f"{points(pick.ci[0])} to {points(pick.ci[1])}), at {_cost(rows, cheapest['method'])}."
                    + (f" Also beyond noise, at a higher cost: {', '.join(others)}." if others else "") + avoid)
        top = max(pooled, key=lambda e: e["pooled"].estimate)
        text = (f"**none of them, at this precision**: no method's pooled gain over none is beyond noise at level "
                f"{level:.2g} (α split over the {len(pooled)} methods pooled). The largest pooled estimate is "
                f"{top['method']}'s, {points(top['pooled'].estimate)} points ({points(top['pooled'].ci[0])} to "
                f"{points(top['pooled'].ci[1])}); {open_gains(pooled)}.")
        if better:
            text += " On single datasets: " + "; ".join(
                f"{r['method']} is better than none on {r['dataset']} ({points(r['delta'])})" for r in better) + "."
        return text + avoid
    if better:
        cheapest = min(better, key=lambda r: _finite(r["time_ratio"]))
        return (f"**{cheapest['method']}**: the cheapest method better than none on {cheapest['dataset']} "
                f"({points(cheapest['delta'])} points), at {_cost(rows, cheapest['method'])}; with one dataset, "
                f"nothing says it helps elsewhere." + avoid)
    decided = [r for r in rows if r["seeds"] >= 2 and math.isfinite(r["ci"][1])]
    if not decided:
        return "no verdict yet: no method has reached its first look." + avoid
    reach = max(decided, key=lambda r: r["ci"][1])
    who = f"{reach['method']} on {reach['dataset']}, unadjusted 95 % interval"
    return (f"**none of them, at this precision**: no method is better than none; "
            f"{not_ruled_out(reach['ci'][1], who)}." + avoid)

"""The comparison's report (``report.md``, ``summary.json``): every number from the driver's state, every
verdict sentence generated from those numbers (:func:`verdict_sentence`), none written by hand."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from regner.experiments.benchmark.profile import value_label
from regner.experiments.compare import advice, contrasts, curves
from regner.experiments.compare.engine import BASELINE
from regner.experiments.compare.formatting import mde_text, points, ratio
from regner.experiments.compare.pooling import MIN_SEEDS, Pooled, dataset_effects, random_effects
from regner.experiments.compare.sequential import Decision, Design, t_one_sided

SPENDING_NAMES = {"obrien_fleming": "O'Brien–Fleming-type", "pocock": "Pocock-type"}


def bound_text(bound: float) -> str:
    if not math.isfinite(bound):
        return "—"
    return "> ±100" if bound >= 1 else f"±{points(bound, False)}"


def equivalence_bound(decision: Decision) -> float:
    """The smallest margin the row's data would call equivalent at its look's TOST level: no true
    difference larger than this (in either direction) is compatible with it at that level."""
    if decision.n < 2 or not math.isfinite(decision.sd):
        return math.nan
    level = decision.details.get("equivalence_level")
    if level is None:
        return math.nan
    half = t_one_sided(decision.n - 1, level) * decision.sd / math.sqrt(decision.n)
    return abs(decision.mean) + half


def verdict_sentence(method: str, strength: str, decision: Decision | None, design: Design, split: str,
                     stopped_by: str = "") -> str:
    """One sentence for a row, from its decision's numbers; ``stopped_by`` is the row's ``stopped_by``
    ("budget" when the budget ended it, "" while it is open)."""
    name = f"{method}{f' ({strength})' if strength else ''}"
    if decision is None:
        if stopped_by == "budget":
            return f"{name}: no look was reached (the budget ended the comparison first)."
        return f"{name}: its first look is not reached yet (the comparison is unfinished)."
    d, n = decision, decision.n
    interval = f"95 % CI {points(d.ci[0])} to {points(d.ci[1])} points, {n} seeds"
    delta = f"{points(d.mean)} {split} F1 points ({interval})"
    if d.state == "better":
        return f"{name} improves on none by {delta}: beyond noise at the design's level."
    if d.state == "worse":
        return f"{name} is worse than none by {delta}: beyond noise at the design's level."
    if d.state == "equivalent":
        return (f"{name} is equivalent to none within ±{points(design.delta, False)} points: {delta}; no effect "
                f"larger than {points(equivalence_bound(d), False)} points is compatible with it.")
    if d.state == "unstable":
        return f"{name} is unstable: it {d.reason}."
    mde = (f"with {n} seeds it detects only effects of {points(d.mde, False)} points or more (MDE at "
           f"{design.power:.0%} power)" if d.mde < 1 else f"with {n} seeds no effect an F1 score can have is "
           f"detectable at {design.power:.0%} power (MDE over 100 points)")
    need = (f"a decision would need about {d.seeds_needed} seeds" if d.seeds_needed
            else "no number of seeds up to 1000 would decide it at this spread")
    if d.state == "futile":
        return f"{name} vs none is undecidable within the design: {delta}; {mde}; {need}."
    if d.state == "exhausted":
        return f"{name} vs none is undecided when the design or budget ended: {delta}; {mde}; {need}."
    return f"{name} vs none is still open: {delta}."


def pooled_sentence(method: str, pooled: Pooled, design: Design, left_out: list[str]) -> str:
    low, high = pooled.ci
    text = (f"Across {pooled.k} datasets, {method}'s pooled difference from none is {points(pooled.estimate)} points "
            f"(95 % CI {points(low)} to {points(high)}; between-dataset SD τ {points(math.sqrt(pooled.tau2), False)})")
    if low > 0:
        text += ": it helps in general, on these datasets' evidence"
    elif high < 0:
        text += ": it hurts in general, on these datasets' evidence"
    elif -design.delta < low and high < design.delta:
        text += f": no general effect beyond ±{points(design.delta, False)} points"
    else:
        text += f": general effects from {points(low)} to {points(high)} points are all compatible with the data"
    if left_out:
        text += f" ({', '.join(left_out)} left out: unstable there)"
    return text + "."


def rows(driver) -> list[dict[str, Any]]:
    """One row per (dataset, regime, method), in profile order."""
    found = []
    for (dataset, regime), comparison in driver.comparisons.items():
        seconds = driver.mean_by_method(dataset, regime, "seconds")
        memory = driver.mean_by_method(dataset, regime, "peak_memory_mb")
        for method, state in comparison.states.items():
            d = state.decision
            value = driver.chosen(dataset, regime, method)
            m = driver.profile.methods[method]
            strength = f"{m.key}={value_label(value)}" if value is not None else ""
            split = driver.judged.get(dataset, "test")
            cost = (seconds.get(method, math.nan) / seconds[BASELINE]) if seconds.get(BASELINE) else math.nan
            room = (memory.get(method, math.nan) / memory[BASELINE]) if memory.get(BASELINE) else math.nan
            # before its first look a row is open, unless the budget ended it there
            unlooked, why = ("exhausted", "no look reached") if state.stopped_by == "budget" else \
                ("open", "first look not reached yet")
            found.append({
                "dataset": dataset, "regime": regime, "method": method, "strength": strength,
                "state": d.state if d else unlooked,
                "seeds": d.n if d else 0, "stopped_by": state.stopped_by,
                "delta": d.mean if d else math.nan, "ci": list(d.ci) if d else [math.nan, math.nan],
                "sd": d.sd if d else math.nan, "mde": d.mde if d else math.nan,
                "equivalence_bound": equivalence_bound(d) if d else math.nan, "margin": driver.profile.design.delta,
                "seeds_needed": d.seeds_needed if d else None,
                "reason": d.reason if d else why,
                "time_ratio": cost, "memory_ratio": room, "split": split,
                "sentence": verdict_sentence(method, strength, d, driver.profile.design, split, state.stopped_by)})
    return found


def pooled_rows(driver) -> list[dict[str, Any]]:
    """Per (regime, method): a random-effects estimate over the datasets (where ≥ 2 have ≥ MIN_SEEDS seeds)."""
    found = []
    regimes = dict.fromkeys(r for _, r in driver.comparisons)
    for regime in regimes:
        cells = {d: c for (d, r), c in driver.comparisons.items() if r == regime}
        for method in dict.fromkeys(m for c in cells.values() for m in c.states):
            effects, names, left_out = dataset_effects(cells, method)
            if len(effects) < 2:
                continue
            pooled = random_effects(effects)
            found.append({"regime": regime, "method": method, "datasets": names, "estimate": pooled.estimate,
                          "ci": list(pooled.ci), "tau": math.sqrt(pooled.tau2), "i2": pooled.i2,
                          "left_out": left_out,
                          "sentence": pooled_sentence(method, pooled, driver.profile.design, left_out)})
    return found


def design_text(driver) -> str:
    p, d = driver.profile, driver.profile.design
    t = p.tuning
    racing = (f"Racing (strengths, on dev F1, tune seeds {', '.join(map(str, t.seeds))}): rungs at "
              f"{', '.join(map(str, t.rungs))} seed(s); an arm is dropped when the best arm beats it by a one-sided paired "
              f"t test at level {t.drop_alpha:g} on their shared seeds, or when it collapses; a choice at a grid edge "
              f"{'extends the grid once by one step' if t.extend_grid else 'is reported (grid extension off)'}; tuned in "
              f"{', '.join(t.regimes)}"
              f"{'' if t.datasets == list(p.datasets) else ' on ' + ', '.join(t.datasets) + ' (the other datasets use its choice)'}"
              ". ")
    if not any(m.tuned for m in p.methods.values()):
        racing = "No racing: every method runs at the strength its overrides set. "
    return (racing + f"Comparison with none (seeds {', '.join(map(str, p.seeds))}): looks at "
            f"{', '.join(map(str, d.looks))} seeds, {SPENDING_NAMES[d.spending]} alpha spending, familywise α "
            f"{d.alpha:g} split over {d.methods} rows ({d.method_alpha:.2g} each), equivalence (TOST) within "
            f"±{points(d.delta, False)} F1 points at level {d.equivalence_alpha:g}, futility below conditional power "
            f"{d.futility_power:g} from {d.futility_from} seeds on, MDE at {d.power:.0%} power; collapse watch `{driver.collapse_watch}`. "
            "docs/benchmarks/PROTOCOL.md (\"Sequential comparison\") gives the reasons.")


def race_lines(driver) -> list[str]:
    """The racing table: every value each method raced, its seeds, mean dev F1 and why it left the race."""
    lines = ["| dataset | regime | method | value | seeds | mean dev F1 | status |", "|---|---|---|---|---|---|---|"]
    notes = []
    for (dataset, regime, method), race in driver.races.items():
        for value, arm in race.arms.items():
            label = f"{race.method.key}={value_label(value)}{' (extension)' if arm.added else ''}"
            mean = f"{statistics.fmean(arm.scores.values()):.4f}" if arm.scores else "—"
            if race.done and value == race.chosen:
                status = "**chosen**" + (f" ({race.reason})" if race.reason else "")
            elif arm.dropped:
                status = f"dropped: {arm.dropped}"
            else:
                status = "survived" if race.done else "in the race"
            lines.append(f"| {dataset} | {regime} | {method} | {label} | {len(arm.scores)} | {mean} | {status} |")
        notes += [f"- {method} ({dataset}, {regime}): {note}." for note in race.notes]
    return lines + ([""] + notes if notes else [])


def contrast_rows(driver) -> tuple[list[contrasts.ContrastRow], list[dict]]:
    """The profile's contrasts (method against method) on every (dataset, regime), and pooled."""
    d = driver.profile.design
    found = contrasts.contrast_rows(driver.comparisons, driver.profile.contrasts, d.alpha, d.delta, d.power)
    return found, contrasts.pooled_contrasts(found, d.alpha)


def markdown(driver, preamble: str, table: list[dict], pooled: list[dict],
             versus: tuple[list, list] = ([], [])) -> str:
    """The report; ``table``, ``pooled`` and ``versus`` are :func:`rows`, :func:`pooled_rows` and
    :func:`contrast_rows` of ``driver``."""
    p = driver.profile
    lines = [f"# Comparison `{p.name}`", "", preamble, "", *advice.what_to_use(driver, table),
             "## Design", "", design_text(driver), ""]
    lines += ["## Verdicts", "", "Δ is method − none in F1 points on the judged split (test where the dataset has "
              "one, else dev), per shared seed, averaged; the interval is the usual unadjusted 95 % one (the verdict "
              "uses the look's spent level); the equivalence bound is the largest difference the data cannot rule "
              "out at the TOST level; time × is the method's mean run wall time over none's, from the comparison's "
              "own runs (which ran side by side: indicative); memory × is the same ratio of the runs' peak GPU memory "
              "(— on a CPU, where a run's own peak is not measured: a worker's peak RSS covers every run it "
              "trained; `scripts/bench_throughput.py` measures each method's memory).", ""]
    for (dataset, regime) in driver.comparisons:
        lines += [f"### {dataset}, {regime}", "",
                  "| method | strength | seeds | Δ | 95 % CI | state | why it stopped | MDE | equivalence bound | "
                  "time × | memory × |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in table if r["dataset"] == dataset and r["regime"] == regime):
            lines.append(f"| {r['method']} | {r['strength'] or '—'} | {r['seeds']} | {points(r['delta'])} | "
                         f"[{points(r['ci'][0])}, {points(r['ci'][1])}] | {r['state']} | {r['reason']} | "
                         f"{mde_text(r['mde'])} | {bound_text(r['equivalence_bound'])} | "
                         f"{ratio(r['time_ratio'])} | {ratio(r['memory_ratio'])} |".replace("±—", "—"))
        lines += ["", *(f"- {r['sentence']}" for r in table if r["dataset"] == dataset and r["regime"] == regime), ""]
    if pooled:
        lines += ["## Across datasets", "", "A random-effects meta-analysis (DerSimonian–Laird τ², "
                  "Hartung–Knapp–Sidik–Jonkman interval on k − 1 degrees of freedom) of each dataset's paired mean "
                  f"difference, per regime, from the datasets where it has {MIN_SEEDS} seeds or more (the method "
                  "takes each dataset's variance as known, which one from 2 seeds is not); the intervals are not "
                  "adjusted for the number of methods (\"What to use\" is).", "",
                  "| regime | method | datasets | pooled Δ | 95 % CI | τ |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['regime']} | {r['method']} | {', '.join(r['datasets'])} | {points(r['estimate'])} | "
                  f"[{points(r['ci'][0])}, {points(r['ci'][1])}] | {points(r['tau'], False)} |" for r in pooled]
        lines += ["", *(f"- {r['sentence']}" for r in pooled), ""]
    lines += curves.markdown_lines(p.curves, curves.curve_rows(p.curves, table))
    lines += contrasts.markdown_lines(*versus, p.design.alpha, p.design.delta)
    if driver.races:
        lines += ["## Tuning by racing", "", *race_lines(driver), ""]
    if driver.missing:
        lines += ["## Runs not in the cache", "", f"{len(driver.missing)} run(s) would have been needed: "
                  + ", ".join(driver.missing[:40]) + (" …" if len(driver.missing) > 40 else ""), ""]
    if driver.failed:
        lines += ["## Failed runs", "", *(f"- {f}" for f in driver.executor.failures or driver.failed), ""]
    return "\n".join(lines).rstrip() + "\n"


def summary(driver, table: list[dict], pooled: list[dict], versus: tuple[list, list] = ([], [])) -> dict:
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean({"profile": driver.profile.name, "runs_used": len(driver.used), "trained": driver.trained,
                  "runs_used_by_stage": {stage: driver.used_in(stage) for stage in ("tune", "compare")},
                  "rows": table, "pooled": pooled,
                  "contrasts": [r.as_dict() for r in versus[0]], "pooled_contrasts": versus[1],
                  "what_to_use": [line for line in advice.what_to_use(driver, table)[2:] if line],
                  "learning_curves": curves.curve_rows(driver.profile.curves, table),
                  "chosen": [{"dataset": d, "regime": r, "method": m, "value": race.chosen, "reason": race.reason,
                              "key": race.method.key, "overrides": race.method.overrides}
                             for (d, r, m), race in driver.races.items()],
                  "missing": driver.missing, "failed": driver.failed})


def write(driver, preamble: str) -> None:
    from regner.runs.io import atomic_write_text

    table, pooled, versus = rows(driver), pooled_rows(driver), contrast_rows(driver)  # once for both files
    atomic_write_text(driver.out / "report.md", markdown(driver, preamble, table, pooled, versus))
    curves.plot(curves.curve_rows(driver.profile.curves, table), driver.out / "learning_curve.png")
    atomic_write_text(driver.out / "summary.json",
                      json.dumps(summary(driver, table, pooled, versus), indent=2, ensure_ascii=False) + "\n")

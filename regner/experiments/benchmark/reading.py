"""The report's reading, generated from the numbers: conclusions per dataset and regime, and the
verdict on Su Jianlin's claim (per-logit vs softmax KL)."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from typing import NamedTuple

from regner.experiments.benchmark.profile import Profile
from regner.experiments.benchmark.runs import hit_cap
from regner.experiments.benchmark.tables import format_number


def conclusions(rows: list[dict], profile: Profile) -> list[str]:
    """Plain-language reading, generated from the table: what is beyond noise, what is not, and the
    per-logit (globalpointer) vs softmax KL comparison (Su Jianlin's claim)."""
    from regner.experiments.report.summary import collapse_note, is_unstable
    from regner.experiments.stats import paired_t

    def verdict_of(row: dict) -> str:  # "unstable, 1 of 2 collapsed" inside the parentheses below
        return f"unstable, {collapse_note(row)}" if is_unstable(row["verdict"]) else row["verdict"]

    lines = []
    for dataset, regime in sorted({(r["_dataset"], r["_regime"]) for r in rows}):
        subset = [r for r in rows if (r["_dataset"], r["_regime"]) == (dataset, regime) and r["_method"] != "none"]
        better = [f"{r['_method']} ({r['delta_vs_none']:+.4f})" for r in subset if r["verdict"] == "better"]
        worse = [f"{r['_method']} ({r['delta_vs_none']:+.4f})" for r in subset if r["verdict"] == "worse"]
        noise = [r["_method"] for r in subset if r["verdict"] == "within noise"]
        unstable = [f"{r['_method']} ({collapse_note(r)})" for r in subset if is_unstable(r["verdict"])]
        other = [f"{r['_method']} ({r['verdict']})" for r in subset
                 if r["verdict"] not in ("better", "worse", "within noise") and not is_unstable(r["verdict"])]
        head = f"- **{dataset}, {regime}**: "
        if not subset:
            lines.append(head + "no method besides `none` has stage-2 results yet.")
            continue
        missing = [m for m in profile.methods if m != "none" and m not in {r["_method"] for r in subset}]
        clauses = [f"better than `none` beyond noise: {', '.join(better)}" if better else
                   "no method is better than `none` beyond noise" if worse or noise else "",
                   f"worse beyond noise: {', '.join(worse)}" if worse else "",
                   f"within noise of `none`: {', '.join(noise)}" if noise else "",
                   f"unstable: {', '.join(unstable)}" if unstable else "",
                   f"not tested: {', '.join(other)}" if other else "",
                   f"no stage-2 result yet: {', '.join(missing)}" if missing else ""]
        text = head + "; ".join(c for c in clauses if c) + "."
        baseline = [r for r in rows if (r["_dataset"], r["_regime"], r["_method"]) == (dataset, regime, "none")]
        caps = [hit_cap(run.path)[0] for r in baseline for run in r["_runs"] if run.status == "completed"]
        if any(caps):  # the protocol's cap must be one `none` does not reach
            text += (f" `none` used every allowed epoch in {sum(caps)} of {len(caps)} runs: the epoch cap may be "
                     "what limits it, not convergence.")
        halves = sorted((r["delta_ci_high"] - r["delta_ci_low"]) / 2 for r in subset
                        if math.isfinite(r["delta_ci_high"]) and math.isfinite(r["delta_ci_low"]))
        if halves:  # what "within noise" means here, in F1 points
            width = f"±{100 * halves[0]:.1f}" + (f" to ±{100 * halves[-1]:.1f}" if halves[-1] > halves[0] + 5e-4 else "")
            text += (f" The paired 95 % intervals are {width} F1 points wide: a smaller true difference cannot be "
                     "told from seed noise here.")
        lines.append(text)
    lines.append("")
    lines.append("**Per-logit vs softmax KL** (Su Jianlin: the per-logit sigmoid KL slightly helps GlobalPointer with "
                 "R-Drop, a softmax KL over all spans hurts). Paired on the shared final seeds, test F1, unadjusted:")
    compared = len(lines)
    evidence = defaultdict(list)  # R-Drop settings with both variants, by regime: what the claim is about
    for base in ("rdrop", "vat"):
        for dataset, regime in sorted({(r["_dataset"], r["_regime"]) for r in rows}):
            pair = {r["kl"]: r for r in rows if (r["_dataset"], r["_regime"]) == (dataset, regime)
                    and r["regularizer"] == base}
            if "globalpointer" not in pair or "softmax" not in pair:
                continue
            per_logit, softmax = pair["globalpointer"], pair["softmax"]
            attribute = f"{per_logit['judged_on']}_f1"
            a, b = _per_seed(per_logit, attribute), _per_seed(softmax, attribute)
            shared = sorted(set(a) & set(b), key=str)
            result = paired_t([a[s] - b[s] for s in shared]) if shared else None
            verdict = ("cannot tell" if result is None or math.isnan(result.p) else
                       ("per-logit ahead" if result.delta > 0 else "softmax ahead") if result.p < 0.05 else
                       "no difference beyond noise")
            lines.append(f"- {base}, {dataset}, {regime}: per-logit KL at {per_logit.get('_strength', per_logit['strength'])} "
                         f"Δ vs none {format_number(per_logit['delta_vs_none'], '+.4f')} ({verdict_of(per_logit)}); softmax KL "
                         f"at {softmax.get('_strength', softmax['strength'])} Δ {format_number(softmax['delta_vs_none'], '+.4f')} ({verdict_of(softmax)}); "
                         f"per-logit − softmax {format_number(result.delta if result else math.nan, '+.4f')}, "
                         f"p {format_number(result.p if result else math.nan, '.3f')}: {verdict}.")
            if base == "rdrop":
                evidence[regime].append(ClaimEvidence(f"{dataset}, {regime}", per_logit["verdict"], softmax["verdict"],
                                                      verdict, result.delta if result else math.nan))
    if len(lines) == compared:
        lines.append("- not measured: no regularizer has stage-2 results with both KL variants (yet, if the benchmark "
                     "is partial).")
    for regime, items in sorted(evidence.items()):  # the claim is about fine-tuning: each regime apart
        lines += ["", claim_reading(items, regime)]
    return lines


class ClaimEvidence(NamedTuple):
    """One R-Drop setting with both KL variants, as the claim reading weighs it."""
    setting: str      # "weibo, pretrained"
    per_logit: str    # the per-logit row's verdict vs none
    softmax: str      # the softmax row's verdict vs none
    pair: str         # per-logit vs softmax: "per-logit ahead", "softmax ahead", "no difference ...", "cannot tell"
    delta: float      # per-logit − softmax, paired (nan when no shared seed)


def claim_reading(evidence: list[ClaimEvidence], regime: str = "") -> str:
    """Whether the R-Drop results agree with Su Jianlin's claim. Only differences beyond noise and
    collapsed seeds (which count against their variant) are evidence; the direction of the point
    estimates is said apart, as what it is."""
    from regner.experiments.report.summary import is_unstable

    n = len(evidence)
    counts = {
        "per-logit better than `none`": [e.setting for e in evidence if e.per_logit == "better"],
        "softmax worse than `none`": [e.setting for e in evidence if e.softmax == "worse"],
        "per-logit ahead of softmax": [e.setting for e in evidence if e.pair == "per-logit ahead"],
        "softmax with collapsed seeds": [e.setting for e in evidence if is_unstable(e.softmax)],
    }
    against = {
        "per-logit worse than `none`": [e.setting for e in evidence if e.per_logit == "worse"],
        "softmax better than `none`": [e.setting for e in evidence if e.softmax == "better"],
        "softmax ahead of per-logit": [e.setting for e in evidence if e.pair == "softmax ahead"],
        "per-logit with collapsed seeds": [e.setting for e in evidence if is_unstable(e.per_logit)],
    }

    def listed(found: dict[str, list[str]]) -> str:
        return "; ".join(f"{what} in {len(where)} of {n} ({', '.join(where)})" for what, where in found.items() if where)

    supports, contradicts = listed(counts), listed(against)
    if supports and contradicts:
        reading = f"are mixed: for it, {supports}; against it, {contradicts}"
    elif supports:
        reading = f"agree where a difference is beyond noise: {supports}; nothing against it"
    elif contradicts:
        reading = f"disagree: {contradicts}; nothing for it"
    else:
        reading = "neither confirm nor contradict it: no R-Drop difference is beyond seed noise and no seed collapsed"
    deltas = [e.delta for e in evidence if math.isfinite(e.delta)]
    direction = (f" The point estimates put per-logit ahead of softmax in {sum(d > 0 for d in deltas)} of {len(deltas)} "
                 "settings (a direction, not evidence on its own)." if deltas else "")
    title = f"Verdict on the claim{f', {regime} regime' if regime else ''}"
    return (f"**{title}** (R-Drop, {n} setting(s) with both KL variants; vs `none` Holm-corrected, per-logit vs "
            f"softmax unadjusted): regner's results {reading}.{direction}")


def _per_seed(row: dict, attribute: str) -> dict:
    values: dict[str, list[float]] = defaultdict(list)
    for run in row["_runs"]:
        if run.status == "completed" and not run.collapsed and not math.isnan(getattr(run, attribute)):
            values[json.dumps(run.seed)].append(getattr(run, attribute))
    return {seed: statistics.fmean(v) for seed, v in values.items()}

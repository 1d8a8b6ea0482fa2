"""The report as text: the markdown table and page, and the CSV."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from typing import Any

from regner.experiments.report.records import COLLAPSE_F1, RunRecord
from regner.experiments.report.summary import SIGNIFICANCE, collapse_note, is_unstable


def format_pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _num(value: float, fmt: str) -> str:
    return "—" if math.isnan(value) else format(value, fmt)


COLUMNS = ["regularizer", "kl", "strength", "n", "dev F1 (mean ± std)", "best dev F1", "test F1 (mean ± std)",
           "F1 all seeds", "Δ F1 vs none", "p (Holm)", "verdict", "time/step vs none", "peak GPU MB", "collapsed"]


def format_p(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def format_delta(row: dict[str, Any]) -> str:
    """"+0.0123 [−0.0040, +0.0286] (test, paired t)": Δ, its unadjusted 95 % CI, the split and the test."""
    delta = _num(row["delta_vs_none"], "+.4f")
    if delta == "—":
        return delta
    if not math.isnan(row.get("delta_ci_low", math.nan)):
        delta += f" [{row['delta_ci_low']:+.4f}, {row['delta_ci_high']:+.4f}]"
    return delta + f" ({row['judged_on']}, {row['test'].split(' (')[0]})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        delta = format_delta(r)
        cells = [r["regularizer"], r["kl"], r["strength"], str(r["n"]), format_pm(r["dev_f1_mean"], r["dev_f1_std"]),
                 _num(r["dev_f1_best"], ".4f"), format_pm(r["test_f1_mean"], r["test_f1_std"]),
                 _num(r["f1_all_seeds_mean"], ".4f") if r["collapsed"] else "=",
                 delta, format_p(r["p_holm"]), r["verdict"],
                 _num(r["cost_ratio"], ".2f") + ("×" if not math.isnan(r["cost_ratio"]) else ""),
                 _num(r["peak_memory_mb"], ".0f"), str(r["collapsed"] + r["failed"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(rows: list[dict[str, Any]], records: list[RunRecord], title: str = "regner report",
                    preamble: str = "") -> str:
    parts = [f"# {title}", ""]
    if preamble:
        parts += [preamble, ""]
    parts += [
        f"{len(records)} runs. F1 is entity-level micro F1 on exact (start, end, type) spans, mean ± sample std over "
        f"the seeds that did not collapse (n = distinct seeds). A run is collapsed when its dev F1 < {COLLAPSE_F1} or "
        "it stopped on a non-finite loss; a row with any collapsed seed is *unstable*, and its **F1 all seeds** "
        "column averages every seed (a diverged run counts as 0). Only runs that differ in regularizer keys share a "
        "table; every other differing key (precision, learning rate, batch size, ...) opens its own section. "
        "**Δ F1 vs none** is on test F1 where every run has a test split, else on dev (marked), with its 95 % "
        "confidence interval (t-based, not multiplicity-adjusted); it is the mean per-seed difference when seeds are shared with `none` (paired t test), else the difference of means (Welch "
        f"t test). **Verdict**: *better*/*worse* when the Holm-adjusted p over all rows of this report is below "
        f"{SIGNIFICANCE:g}, otherwise *within noise*. Time/step is relative to the `none` runs of the same sweep and "
        "setting.", ""]
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_key[r["setting"]].append(r)
    for setting, group_rows in by_key.items():
        parts += [f"## {setting}", "", markdown_table(group_rows), ""]
        noise = [f"{r['regularizer']}/{r['kl']}/{r['strength']}" for r in group_rows if r["verdict"] == "within noise"]
        real = [f"{r['regularizer']}/{r['kl']}/{r['strength']} ({r['verdict']}, {r['delta_vs_none']:+.4f} "
                f"{r['judged_on']} F1, Holm p {format_p(r['p_holm'])})"
                for r in group_rows if r["verdict"] in ("better", "worse")]
        unstable = [f"{r['regularizer']}/{r['kl']}/{r['strength']} ({collapse_note(r)})" for r in group_rows
                    if is_unstable(r["verdict"])]
        if noise:
            parts.append(f"Within noise of `none`: {', '.join(noise)}.  ")
        parts.append(f"Beyond noise: {', '.join(real) if real else 'no row'}." + ("  " if unstable else ""))
        if unstable:
            parts.append(f"Unstable: {', '.join(unstable)}.")
        parts.append("")
    bad = [r for r in records if r.collapsed or r.status not in ("completed", "diverged")]
    if bad:
        parts += ["## Collapsed or failed runs", ""]
        parts += [f"- `{r.path}`: {r.regularizer}/{r.kl or '—'} seed {r.seed}: "
                  f"{'collapsed' if r.collapsed else r.status}"
                  f"{f' (dev F1 {r.dev_f1:.4f})' if not math.isnan(r.dev_f1) else ''}"
                  f"{f' — {r.reason}' if r.reason else ''}" for r in bad]
        parts.append("")
    return "\n".join(parts)


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[k for k in rows[0] if not k.startswith("_")] if rows else ["dataset"])
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if (isinstance(v, float) and math.isnan(v)) or v == "—" else v) for k, v in r.items()
                         if not k.startswith("_")})
    return buffer.getvalue()

"""The benchmark report's tables: stage 2 (Δ vs none per method) and stage 1 (strength on dev)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from regner.experiments.benchmark.profile import Profile, value_label
from regner.experiments.benchmark.runs import hit_cap


def load_throughput(path: Path) -> dict[str, dict]:
    """bench_throughput rows by regularizer name, at its first batch size."""
    rows = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    first = rows[0]["batch"] if rows else None
    return {r["regularizer"]: r for r in rows if r["batch"] == first}


def format_number(value: float, spec: str, suffix: str = "") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec) + suffix


def collapsed_cell(row: dict) -> str:
    """"k of n" over the runs judged (completed or diverged), the failed ones named apart: a failed run
    (an error, not the method) is neither evidence for nor against it."""
    from regner.experiments.report.summary import collapse_count

    return collapse_count(row) + (f" (+{row['failed']} failed)" if row["failed"] else "")


def final_table(rows: list[dict], profile: Profile, chosen_labels: dict, throughput: dict[str, dict]) -> list[str]:
    from regner.experiments.report.tables import format_delta, format_p, format_pm

    lines = ["| method | regularizer | KL | strength | n | test F1 (mean ± std) | Δ F1 vs none [95 % CI] | "
             "p (Holm) | verdict | collapsed | hit epoch cap | cost × | memory × |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        method = r["_method"]
        spec = profile.methods.get(method)
        bench = throughput.get(spec.throughput or method) if spec else None
        # Runs in flight (a partial report) count nowhere; failed runs are named apart from the collapse count.
        caps = [hit_cap(run.path) for run in r["_runs"] if run.status == "completed"]
        mean = r[f"{r['judged_on']}_f1_mean"]
        std = r[f"{r['judged_on']}_f1_std"]
        judged = format_pm(mean, std) + ("" if r["judged_on"] == "test" else " (dev)")
        strength = chosen_labels.get(method, "—")
        lines.append(" | ".join([
            f"| {method}", r["regularizer"], r["kl"], strength, str(r["n"]), judged,
            format_delta(r) if method != "none" else "baseline", format_p(r["p_holm"]),
            r["verdict"], collapsed_cell(r), f"{sum(c for c, _ in caps)} of {len(caps)}",
            format_number(bench["cost"] if bench else math.nan, ".2f", "×"),
            format_number(bench["memory"] if bench else math.nan, ".2f", "×")]) + " |")
    return lines


def tune_table(tune_rows: list[dict], dataset: str, regime: str) -> list[str]:
    subset = [r for r in tune_rows if r["dataset"] == dataset and r["regime"] == regime]
    if not subset:
        return []
    lines = ["| method | knob | value | dev F1 (mean over tune seeds) | n | epochs run | chosen |",
             "|---|---|---|---|---|---|---|"]
    for r in subset:
        value = "—" if r["value"] is None else value_label(r["value"])
        lines.append(f"| {r['method']} | {r['key'] or '—'} | {value} | {format_number(r['dev_f1'], '.4f')} | {r['n']} | "
                     f"{r.get('epochs') or '—'} | {'**✓**' if r['chosen'] else ''}"
                     f"{' (grid edge)' if r.get('edge') else ''} |")
    edges = [f"{r['method']} ({r['key']}={value_label(r['value'])}, the {r['edge']})" for r in subset if r.get("edge")]
    if edges:
        lines += ["", "Chosen at the edge of its grid, so the best strength may lie beyond it: " + ", ".join(edges) + "."]
    capped = [r for r in subset if "(cap)" in (r.get("epochs") or "")]
    if capped:
        named = ", ".join(r["method"] if r["value"] is None else f"{r['method']} ({r['key']}={value_label(r['value'])})"
                          for r in capped)
        lines += ["", f"Used every allowed epoch without stopping early ({len(capped)} of {len(subset)} points), so more "
                      f"epochs might have changed their dev F1: {named}. Stage 2's *hit epoch cap* column counts the "
                      "same for the runs compared on test."]
    return lines

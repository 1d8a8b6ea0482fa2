"""Aggregate finished runs into one table: which regularizer helps, by how much, at what cost.

Runs are found by their ``status.json`` under the given directories. Completed runs contribute their
``metrics.json``; runs whose F1 collapsed (< 0.05) or that stopped on a non-finite loss are flagged
and counted, never averaged in silently. Cost is seconds per training step relative to the mean of
the ``none`` runs of the same sweep (the same parent directory), dataset and encoder, so it is
measured on the same machine under the same conditions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regner.runio import METRICS_FILE, STATUS_FILE

COLLAPSE_F1 = 0.05
NOISE_SE = 2.0  # |Δ| below this many standard errors of the difference counts as noise


@dataclass
class RunRecord:
    path: Path
    dataset: str
    encoder: str
    regularizer: str
    kl: str | None
    knobs: dict[str, Any]
    seed: Any
    status: str
    reason: str = ""
    alpha: Any = None  # the top-level strength the sweep may vary
    dev_f1: float = math.nan
    test_f1: float = math.nan
    sec_per_step: float = math.nan
    peak_memory_mb: float = math.nan
    cost_ratio: float = math.nan

    @property
    def sweep(self) -> Path:
        return self.path.parent

    @property
    def collapsed(self) -> bool:
        return self.status == "diverged" or (self.status == "completed" and not self.dev_f1 >= COLLAPSE_F1)


@dataclass
class Group:
    dataset: str
    encoder: str
    regularizer: str
    kl: str | None
    strength: str
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def good(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == "completed" and not r.collapsed]

    def values(self, attribute: str) -> list[float]:
        return [getattr(r, attribute) for r in self.good if not math.isnan(getattr(r, attribute))]


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _record(run_dir: Path) -> RunRecord | None:
    status = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else None
    run = (metrics or {}).get("run") or status.get("run")
    if not run:
        return None  # failed before its config was read: nothing to group it by
    state = status.get("status", "unknown")
    if state == "failed" and status.get("diverged"):
        state = "diverged"
    if state == "completed" and metrics is None:
        state = "incomplete"
    record = RunRecord(run_dir, run["dataset"], run["encoder"], run["regularizer"], run.get("kl"),
                       run.get("regularizer_config", {}), run.get("seed"), state, status.get("reason", ""),
                       run.get("alpha"))
    if metrics:
        record.dev_f1 = float(metrics["dev"]["f1"])
        record.test_f1 = float(metrics["test"]["f1"]) if metrics.get("test") else math.nan
        train = metrics.get("train", {})
        record.sec_per_step = 1 / train["steps_per_s"] if train.get("steps_per_s") else math.nan
        if str(train.get("device", "")).startswith("cuda") and train.get("peak_memory_mb") is not None:
            record.peak_memory_mb = float(train["peak_memory_mb"])  # CPU runs have no per-run figure
    return record


def collect_runs(directories: list[str | Path]) -> list[RunRecord]:
    records = []
    for directory in directories:
        directory = Path(directory)
        if not directory.exists():
            raise FileNotFoundError(f"{directory}: no such directory")
        for status_file in sorted(directory.rglob(STATUS_FILE)):
            record = _record(status_file.parent)
            if record is not None:
                records.append(record)
    _attach_cost_ratios(records)
    return records


def _attach_cost_ratios(records: list[RunRecord]) -> None:
    baseline: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if r.regularizer == "none" and r.status == "completed" and not math.isnan(r.sec_per_step):
            baseline[(r.sweep, r.dataset, r.encoder)].append(r.sec_per_step)
    for r in records:
        base = baseline.get((r.sweep, r.dataset, r.encoder))
        if base and not math.isnan(r.sec_per_step):
            r.cost_ratio = r.sec_per_step / statistics.fmean(base)


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def strength_labels(records: list[RunRecord]) -> dict[int, str]:
    """Label each run by the regularizer knobs that vary among runs of that regularizer. When none
    vary but the sweep varied the top-level ``alpha`` (which this regularizer ignores, e.g. ``none``),
    the runs stay apart as ``alpha=X (unused)``, so a sweep over alpha shows one row per value."""
    by_regularizer: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        by_regularizer[r.regularizer].append(r)
    labels = {}
    for runs in by_regularizer.values():
        keys = sorted({k for r in runs for k in r.knobs})
        varying = [k for k in keys if len({json.dumps(r.knobs.get(k), sort_keys=True) for r in runs}) > 1]
        alpha_varies = not varying and len({json.dumps(r.alpha) for r in runs}) > 1
        for r in runs:
            label = ", ".join(f"{k}={_format_value(r.knobs.get(k))}" for k in varying)
            if alpha_varies:
                label = f"alpha={_format_value(r.alpha)} (unused)"
            labels[id(r)] = label or "default"
    return labels


def group_runs(records: list[RunRecord]) -> list[Group]:
    labels = strength_labels(records)
    groups: dict[tuple, Group] = {}
    for r in records:
        key = (r.dataset, r.encoder, r.regularizer, r.kl or "", labels[id(r)])
        groups.setdefault(key, Group(r.dataset, r.encoder, r.regularizer, r.kl, labels[id(r)])).runs.append(r)
    order = {"none": 0}
    return sorted(groups.values(), key=lambda g: (g.dataset, g.encoder, order.get(g.regularizer, 1), g.regularizer,
                                                  g.kl or "", g.strength))


def summarize(groups: list[Group]) -> list[dict[str, Any]]:
    """One row per group, with the comparison to ``none`` of the same dataset and encoder."""
    baselines: dict[tuple[str, str], list[float]] = defaultdict(list)  # all `none` runs, pooled
    for g in groups:
        if g.regularizer == "none":
            baselines[(g.dataset, g.encoder)].extend(g.values("dev_f1"))
    rows = []
    for g in groups:
        dev_mean, dev_std = _mean_std(g.values("dev_f1"))
        test_mean, test_std = _mean_std(g.values("test_f1"))
        ratios = [r.cost_ratio for r in g.runs if not math.isnan(r.cost_ratio)]
        memory = g.values("peak_memory_mb")
        row = {
            "dataset": g.dataset, "encoder": g.encoder, "regularizer": g.regularizer, "kl": g.kl or "—",
            "strength": g.strength, "n": len(g.good), "collapsed": sum(r.collapsed for r in g.runs),
            "failed": sum(r.status not in ("completed", "diverged") for r in g.runs),
            "dev_f1_mean": dev_mean, "dev_f1_std": dev_std,
            "dev_f1_best": max(g.values("dev_f1"), default=math.nan),
            "test_f1_mean": test_mean, "test_f1_std": test_std,
            "cost_ratio": statistics.fmean(ratios) if ratios else math.nan,
            "peak_memory_mb": max(memory, default=math.nan),
            "delta_vs_none": math.nan, "verdict": "",
        }
        if g.regularizer == "none":
            row["verdict"] = "baseline"
        elif (g.dataset, g.encoder) in baselines:
            row["delta_vs_none"], row["verdict"] = compare(g.values("dev_f1"), baselines[(g.dataset, g.encoder)])
        rows.append(row)
    return rows


def compare(values: list[float], baseline: list[float]) -> tuple[float, str]:
    """Δ of the means and a plain verdict: a difference under 2 standard errors is noise."""
    if not values or not baseline:
        return math.nan, "no data"
    delta = statistics.fmean(values) - statistics.fmean(baseline)
    if len(values) < 2 or len(baseline) < 2:
        return delta, "n<2: cannot tell"
    se = math.sqrt(statistics.variance(values) / len(values) + statistics.variance(baseline) / len(baseline))
    if se == 0 or abs(delta) < NOISE_SE * se:
        return delta, "within noise"
    return delta, "better" if delta > 0 else "worse"


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _num(value: float, fmt: str) -> str:
    return "—" if math.isnan(value) else format(value, fmt)


COLUMNS = ["regularizer", "kl", "strength", "n", "dev F1 (mean ± std)", "best dev F1", "test F1 (mean ± std)",
           "Δ dev F1 vs none", "verdict", "time/step vs none", "peak GPU MB", "collapsed"]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["regularizer"], r["kl"], r["strength"], str(r["n"]), _pm(r["dev_f1_mean"], r["dev_f1_std"]),
                 _num(r["dev_f1_best"], ".4f"), _pm(r["test_f1_mean"], r["test_f1_std"]),
                 _num(r["delta_vs_none"], "+.4f"), r["verdict"], _num(r["cost_ratio"], ".2f") + ("×" if not math.isnan(r["cost_ratio"]) else ""),
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
        f"seeds of the runs that did not collapse. A run counts as collapsed when its dev F1 < {COLLAPSE_F1} or it "
        f"stopped on a non-finite loss; collapsed runs are listed below, not averaged. **Verdict**: a difference "
        f"from `none` smaller than {NOISE_SE:g} standard errors of the difference of means (Welch) is reported as "
        "*within noise*. Time/step is relative to the `none` runs of the same sweep, dataset and encoder.", ""]
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_key[(r["dataset"], r["encoder"])].append(r)
    for (dataset, encoder), group_rows in by_key.items():
        parts += [f"## {dataset} — encoder {encoder}", "", markdown_table(group_rows), ""]
        noise = [f"{r['regularizer']}/{r['kl']}/{r['strength']}" for r in group_rows if r["verdict"] == "within noise"]
        real = [f"{r['regularizer']}/{r['kl']}/{r['strength']} ({r['verdict']}, {r['delta_vs_none']:+.4f})"
                for r in group_rows if r["verdict"] in ("better", "worse")]
        parts.append(f"Within noise of `none`: {', '.join(noise) if noise else 'none of them'}.  ")
        parts.append(f"Beyond noise: {', '.join(real) if real else 'none'}.")
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
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["dataset"])
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return buffer.getvalue()


def _numeric_strength(strength: str) -> float | None:
    """The value of a single varying numeric knob ("alpha=4" -> 4.0), else None."""
    if "," in strength or "=" not in strength or strength.endswith("(unused)"):
        return None
    try:
        return float(strength.split("=", 1)[1])
    except ValueError:
        return None


def plot(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """F1 by regularizer (error bars), F1 vs strength, and cost vs gain, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys((r["dataset"], r["encoder"]) for r in rows))
    if not keys:
        return []
    written = []

    def panels(name: str, draw, width: float = 6.0):
        fig, axes = plt.subplots(1, len(keys), figsize=(width * len(keys), 4.5), squeeze=False)
        for ax, key in zip(axes[0], keys):
            draw(ax, [r for r in rows if (r["dataset"], r["encoder"]) == key])
            ax.set_title(f"{key[0]} ({key[1]})")
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    regularizers = sorted({r["regularizer"] for r in rows} - {"none"})
    palette = {"none": "0.5", **{name: f"C{i % 10}" for i, name in enumerate(regularizers)}}

    def bars(ax, subset):
        labels = [r["regularizer"] + ("" if r["kl"] == "—" else f"/{r['kl']}") +
                  ("" if r["strength"] == "default" else f" {r['strength']}") for r in subset]
        means = [0 if math.isnan(r["dev_f1_mean"]) else r["dev_f1_mean"] for r in subset]
        errors = [0 if math.isnan(r["dev_f1_std"]) else r["dev_f1_std"] for r in subset]
        ax.bar(range(len(subset)), means, yerr=errors, capsize=3, color=[palette[r["regularizer"]] for r in subset])
        ax.set_xticks(range(len(subset)), labels, fontsize=7, rotation=55, ha="right")
        ax.set_ylabel("dev F1 (mean ± std over seeds)")
        finite = [m for m in means if m > 0]
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.03))

    def strength(ax, subset):
        series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for r in subset:
            x = _numeric_strength(r["strength"])
            if r["regularizer"] == "none" and not math.isnan(r["dev_f1_mean"]):
                ax.axhline(r["dev_f1_mean"], color="0.4", linestyle="--", label="none")
            elif x is not None and not math.isnan(r["dev_f1_mean"]):
                std = 0 if math.isnan(r["dev_f1_std"]) else r["dev_f1_std"]
                series[f"{r['regularizer']}/{r['kl']} ({r['strength'].split('=')[0]})"].append((x, r["dev_f1_mean"], std))
        for label, points in sorted(series.items()):
            points.sort()
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                        capsize=3, label=label)
        if series:
            ax.set_xscale("log")
        ax.set_xlabel("strength (the knob that varies)")
        ax.set_ylabel("dev F1")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)

    def cost_gain(ax, subset):
        for r in subset:
            if r["regularizer"] == "none" or math.isnan(r["cost_ratio"]) or math.isnan(r["delta_vs_none"]):
                continue
            ax.scatter(r["cost_ratio"], r["delta_vs_none"])
            ax.annotate(f"{r['regularizer']}/{r['kl']}/{r['strength']}", (r["cost_ratio"], r["delta_vs_none"]), fontsize=6)
        ax.axhline(0, color="0.4", linestyle="--")
        ax.set_xlabel("time per step relative to none")
        ax.set_ylabel("Δ dev F1 vs none")

    panels("f1_by_regularizer.png", bars, width=max(6.0, 0.5 * max(len(rows) // max(len(keys), 1), 1)))
    panels("f1_vs_strength.png", strength)
    panels("cost_vs_gain.png", cost_gain)
    return written


def build_report(directories: list[str | Path], out_dir: str | Path | None = None, title: str = "regner report",
                 preamble: str = "", plots: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """Collect, aggregate and write ``report.md``, ``report.csv`` and the PNGs into ``out_dir``."""
    from regner.runio import atomic_write_text

    records = collect_runs(directories)
    rows = summarize(group_runs(records))
    text = markdown_report(rows, records, title, preamble)
    out = Path(out_dir if out_dir is not None else directories[0])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.csv", csv_text(rows))
    if plots and rows:
        plot(rows, out)
    return text, rows

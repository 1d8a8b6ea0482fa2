"""The report's figures: F1 per regularizer, F1 against strength, cost against gain."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any


def _numeric_strength(strength: str) -> float | None:
    """The value of a single varying numeric knob ("alpha=4" -> 4.0), else None."""
    if "," in strength or "=" not in strength or strength.endswith("(unused)"):
        return None
    try:
        return float(strength.split("=", 1)[1])
    except ValueError:
        return None


def plot(rows: list[dict[str, Any]], out_dir: Path, notes: list[str] | None = None) -> list[Path]:
    """F1 by regularizer (error bars), F1 vs strength, and cost vs gain, one panel per setting. A
    plot that would be empty is not drawn; ``notes`` says which and why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(r["setting"] for r in rows))
    if not keys:
        return []
    written = []

    def panels(name: str, draw, width: float = 6.0):
        fig, axes = plt.subplots(1, len(keys), figsize=(width * len(keys), 4.5), squeeze=False)
        for ax, key in zip(axes[0], keys):
            draw(ax, [r for r in rows if r["setting"] == key])
            ax.set_title(key, fontsize=9)
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
        baseline_drawn = False
        for r in subset:
            x = _numeric_strength(r["strength"])
            if r["regularizer"] == "none" and not math.isnan(r["dev_f1_mean"]):
                ax.axhline(r["dev_f1_mean"], color="0.4", linestyle="--", label=None if baseline_drawn else "none")
                baseline_drawn = True
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
        ax.set_ylabel("Δ F1 vs none (test where available)")

    notes = notes if notes is not None else []
    panels("f1_by_regularizer.png", bars, width=max(6.0, 0.5 * max(len(rows) // max(len(keys), 1), 1)))
    strengths: dict[tuple, set] = defaultdict(set)
    for r in rows:
        x = _numeric_strength(r["strength"])
        if r["regularizer"] != "none" and x is not None and not math.isnan(r["dev_f1_mean"]):
            strengths[(r["setting"], r["regularizer"], r["kl"], r["strength"].split("=")[0])].add(x)
    if any(len(xs) > 1 for xs in strengths.values()):
        panels("f1_vs_strength.png", strength)
    else:
        notes.append("f1_vs_strength.png not drawn: no regularizer was run at two or more strengths of one knob")
    if any(r["regularizer"] != "none" and not math.isnan(r["cost_ratio"]) and not math.isnan(r["delta_vs_none"])
           for r in rows):
        panels("cost_vs_gain.png", cost_gain)
    else:
        notes.append("cost_vs_gain.png not drawn: no regularizer row has both a cost ratio and a Δ vs none "
                     "(they need `none` runs of the same sweep and setting)")
    for stale in ("f1_vs_strength.png", "cost_vs_gain.png"):
        if out_dir / stale not in written:
            (out_dir / stale).unlink(missing_ok=True)  # an earlier report's plot would no longer match
    return written

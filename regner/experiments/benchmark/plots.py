"""The benchmark report's figures: F1 against strength, cost against gain (with the Pareto front)."""

from __future__ import annotations

import math
from pathlib import Path

from regner.experiments.benchmark.profile import Profile
from regner.experiments.benchmark.selection import relative_strength
from regner.experiments.report.plots import COLLAPSED_STYLE, strength_axis
from regner.experiments.report.records import COLLAPSE_F1


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and gain (higher), by cost."""
    front = []
    for cost, gain in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or gain > front[-1][1]:
            front.append((cost, gain))
    return front


def plots(out: Path, rows: list[dict], tune_rows: list[dict], profile: Profile,
          throughput: dict[str, dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    panels = sorted({(r["_dataset"], r["_regime"]) for r in rows} | {(r["dataset"], r["regime"]) for r in tune_rows})
    tune_panels = [p for p in panels if any((r["dataset"], r["regime"]) == p for r in tune_rows)]
    if tune_panels:
        fig, axes = plt.subplots(1, len(tune_panels), figsize=(6 * len(tune_panels), 4.5), squeeze=False)
        for ax, (dataset, regime) in zip(axes[0], tune_panels):
            drawn: list[float] = []
            collapsed_labelled = False
            for method in profile.methods.values():
                points = sorted((relative_strength(method, r["value"]), r["dev_f1"]) for r in tune_rows
                                if (r["dataset"], r["regime"], r["method"]) == (dataset, regime, method.name)
                                and method.tuned and not math.isnan(r["dev_f1"]))
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method.name)
                    drawn += [p[0] for p in points]
                    lost = [p for p in points if p[1] < COLLAPSE_F1]
                    if lost:  # a collapsed grid point is a red ×, not just a low dot
                        ax.scatter([p[0] for p in lost], [p[1] for p in lost], **COLLAPSED_STYLE,
                                   label=None if collapsed_labelled else f"collapsed (dev F1 < {COLLAPSE_F1})")
                        collapsed_labelled = True
            none = [r["dev_f1"] for r in tune_rows if (r["dataset"], r["regime"], r["method"]) == (dataset, regime, "none")]
            if none and not math.isnan(none[0]):
                ax.axhline(none[0], color="0.4", linestyle="--", label="none")
            if drawn:
                strength_axis(ax, drawn)  # the grid's values, no crowded minors
            ema = any(m.tuned and m.key and m.key.startswith("trainer.ema") for m in profile.methods.values())
            ax.set_xlabel("strength relative to the default" + (" (EMA: averaging horizon)" if ema else ""))
            ax.set_ylim(0.0, 1.05)
            ax.set_ylabel("dev F1 (stage 1)")
            ax.set_title(f"{dataset} — {regime}", fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
        fig.tight_layout()
        written.append(out / "f1_vs_strength.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    final_panels = [p for p in panels if any((r["_dataset"], r["_regime"]) == p for r in rows)]
    if final_panels and throughput:
        fig, axes = plt.subplots(1, len(final_panels), figsize=(6 * len(final_panels), 4.5), squeeze=False)
        for ax, (dataset, regime) in zip(axes[0], final_panels):
            points, lost = [], []
            for r in rows:
                spec = profile.methods.get(r["_method"])
                bench = throughput.get((spec.throughput if spec else None) or r["_method"])
                if (r["_dataset"], r["_regime"]) != (dataset, regime) or bench is None:
                    continue
                gain = 0.0 if r["_method"] == "none" else r["delta_vs_none"]
                collapsed = r.get("collapsed", 0)
                if math.isnan(gain):
                    if collapsed:  # every seed collapsed: no Δ, but the method must not vanish from the plot
                        lost.append((bench["cost"], f"{r['_method']} (collapsed: no Δ)"))
                    continue
                low, high = r.get("delta_ci_low", math.nan), r.get("delta_ci_high", math.nan)
                error = [[gain - low], [high - gain]] if not math.isnan(low) else None
                ax.errorbar([bench["cost"]], [gain], yerr=error, marker="o", capsize=3,
                            color="0.4" if r["_method"] == "none" else "red" if collapsed else None)
                label = r["_method"] + (f" ({r['collapsed']} of {r['judged_runs']} collapsed)" if collapsed else "")
                ax.annotate(label, (bench["cost"], gain), fontsize=7, xytext=(3, 3), textcoords="offset points",
                            color="red" if collapsed else "black")
                points.append((bench["cost"], gain))
            floor = min([p[1] for p in points] + [0.0]) - 0.02
            for cost, label in lost:
                ax.scatter([cost], [floor], **COLLAPSED_STYLE)
                ax.annotate(label, (cost, floor), fontsize=7, xytext=(3, 3), textcoords="offset points", color="red")
            front = pareto_front(points)
            if len(front) > 1:
                ax.plot([p[0] for p in front], [p[1] for p in front], color="C3", linestyle=":", label="Pareto front")
                ax.legend(fontsize=7)
            ax.axhline(0, color="0.6", linestyle="--")
            ax.set_xlabel("time per training step relative to none (bench_throughput)")
            ax.set_ylabel("Δ test F1 vs none (95 % CI)")
            ax.set_title(f"{dataset} — {regime}", fontsize=9)
        fig.tight_layout()
        written.append(out / "cost_vs_gain.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written

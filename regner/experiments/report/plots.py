"""The report's figures: F1 per regularizer, F1 against strength, cost against gain.

What they show is what the verdicts use: each panel plots test F1 when every row of it is judged on
test (dev F1 otherwise, and its axis says so), as the mean over *all* finished seeds with collapsed
ones counted at their F1 (the report's rule: collapse counts against a method), every seed as a dot
and a collapsed seed as a red ×. Bars start at 0; an error bar (± std) is drawn only from two seeds on,
and each bar says its n.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

COLLAPSED_STYLE = {"marker": "x", "color": "red", "s": 36, "zorder": 4}


def _numeric_strength(strength: str) -> float | None:
    """The value of a single varying numeric knob ("alpha=4" -> 4.0), else None."""
    if "," in strength or "=" not in strength or strength.endswith("(unused)"):
        return None
    try:
        return float(strength.split("=", 1)[1])
    except ValueError:
        return None


def strength_axis(ax, values: list[float]) -> None:
    """A log x axis labelled at exactly the strengths that ran (as 0.3, 1, 4), with no minor labels to
    crowd them."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(values))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def panel_metric(subset: list[dict[str, Any]]) -> str:
    """``test`` when every row of a panel is judged on test F1, else ``dev``."""
    return "test" if subset and all(r.get("judged_on") == "test" for r in subset) else "dev"


def seed_values(row: dict[str, Any], metric: str) -> list[tuple[float, bool]]:
    """(F1, collapsed) of each finished run of a row: a diverged run counts as F1 0."""
    values = []
    for run in row.get("_runs", []):
        if run.status not in ("completed", "diverged"):
            continue
        value = 0.0 if run.status == "diverged" else getattr(run, f"{metric}_f1")
        if not math.isnan(value):
            values.append((value, run.collapsed))
    return values


def _label(r: dict[str, Any]) -> str:
    return (r["regularizer"] + ("" if r["kl"] == "—" else f"/{r['kl']}")
            + ("" if r["strength"] == "default" else f" {r['strength']}"))


def _ylabel(metric: str, what: str = "") -> str:
    return f"{metric} F1{what}" + ("" if metric == "test" else "\n(no test split in every row)")


def draw_bars(ax, subset: list[dict[str, Any]], palette: dict[str, str]) -> None:
    metric = panel_metric(subset)
    for i, r in enumerate(subset):
        values = seed_values(r, metric)
        scores = [v for v, _ in values]
        mean = statistics.fmean(scores) if scores else 0.0
        std = statistics.stdev(scores) if len(scores) >= 2 else None
        ax.bar(i, mean, yerr=std, capsize=3, color=palette.get(r["regularizer"], "C0"), alpha=0.85)
        spread = [i + 0.25 * ((k + 0.5) / len(values) - 0.5) for k in range(len(values))]
        kept = [(x, v) for x, (v, bad) in zip(spread, values) if not bad]
        lost = [(x, v) for x, (v, bad) in zip(spread, values) if bad]
        if kept:
            ax.scatter([x for x, _ in kept], [v for _, v in kept], color="black", s=9, zorder=3)
        if lost:
            ax.scatter([x for x, _ in lost], [v for _, v in lost], **COLLAPSED_STYLE)
        note = f"n={len(scores)}" if scores else "no runs"
        if lost:
            note += f"\n{len(lost)} collapsed"
        ax.text(i, min(mean + (std or 0), 1.0) + 0.02, note, ha="center", va="bottom", fontsize=6,
                color="red" if lost else "black")
    ax.set_xticks(range(len(subset)), [_label(r) for r in subset], fontsize=7, rotation=55, ha="right")
    ax.set_ylim(0.0, 1.12)
    ax.set_ylabel(_ylabel(metric, " (mean over seeds)\ndots: seeds, ×: collapsed"), fontsize=8)


def draw_strength(ax, subset: list[dict[str, Any]]) -> None:
    metric = panel_metric(subset)
    series: dict[str, list[tuple[float, float, float | None, bool]]] = defaultdict(list)
    baseline_drawn = False
    for r in subset:
        values = seed_values(r, metric)
        scores = [v for v, _ in values]
        if not scores:
            continue
        mean = statistics.fmean(scores)
        if r["regularizer"] == "none":
            ax.axhline(mean, color="0.4", linestyle="--", label=None if baseline_drawn else "none")
            baseline_drawn = True
        elif (x := _numeric_strength(r["strength"])) is not None:
            std = statistics.stdev(scores) if len(scores) >= 2 else None
            collapsed = any(bad for _, bad in values)
            series[f"{r['regularizer']}/{r['kl']} ({r['strength'].split('=')[0]})"].append((x, mean, std, collapsed))
    xs = sorted({p[0] for points in series.values() for p in points})
    collapsed_labelled = False
    for label, points in sorted(series.items()):
        points.sort()
        ax.errorbar([p[0] for p in points], [p[1] for p in points],
                    yerr=[0.0 if p[2] is None else p[2] for p in points], marker="o", capsize=3, label=label)
        lost = [p for p in points if p[3]]
        if lost:
            ax.scatter([p[0] for p in lost], [p[1] for p in lost], **COLLAPSED_STYLE,
                       label=None if collapsed_labelled else "collapsed seed(s)")
            collapsed_labelled = True
    if xs and min(xs) > 0:
        strength_axis(ax, xs)
        for tick in ax.get_xticklabels():
            tick.set_rotation(45)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("strength (the knob that varies)")
    ax.set_ylabel(_ylabel(metric, " (mean over seeds)"))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)


def draw_cost_gain(ax, subset: list[dict[str, Any]]) -> None:
    plotted = [r for r in subset if r["regularizer"] != "none" and not math.isnan(r["cost_ratio"])]
    gains = [r["delta_vs_none"] for r in plotted if not math.isnan(r["delta_vs_none"])]
    floor = min([*gains, 0.0]) - 0.02  # where a method without a Δ (all seeds collapsed) is marked
    for r in plotted:
        collapsed = r.get("collapsed", 0)
        name = f"{r['regularizer']}/{r['kl']}/{r['strength']}"
        if math.isnan(r["delta_vs_none"]):
            if collapsed:
                ax.scatter(r["cost_ratio"], floor, **COLLAPSED_STYLE)
                ax.annotate(f"{name} (collapsed: no Δ)", (r["cost_ratio"], floor), fontsize=6, color="red")
            continue
        ax.scatter(r["cost_ratio"], r["delta_vs_none"], color="red" if collapsed else None)
        ax.annotate(name + (f" ({r['collapsed']} of {r['judged_runs']} collapsed)" if collapsed else ""),
                    (r["cost_ratio"], r["delta_vs_none"]), fontsize=6, color="red" if collapsed else "black")
    ax.axhline(0, color="0.4", linestyle="--")
    ax.set_xlabel("time per step relative to none")
    ax.set_ylabel("Δ F1 vs none (test where available; red: seeds collapsed)")


def _drawable_strengths(rows: list[dict[str, Any]]) -> bool:
    """Whether some regularizer ran (to the end: collapsed runs count) at two or more strengths of one knob."""
    strengths: dict[tuple, set] = defaultdict(set)
    for r in rows:
        x = _numeric_strength(r["strength"])
        if r["regularizer"] != "none" and x is not None and seed_values(r, panel_metric([r])):
            strengths[(r["setting"], r["regularizer"], r["kl"], r["strength"].split("=")[0])].add(x)
    return any(len(xs) > 1 for xs in strengths.values())


def figures(rows: list[dict[str, Any]], notes: list[str] | None = None) -> dict[str, Any]:
    """The figures by file name (matplotlib Figure objects, one panel per setting); a figure that
    would be empty is left out and ``notes`` says which and why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes = notes if notes is not None else []
    keys = list(dict.fromkeys(r["setting"] for r in rows))
    if not keys:
        return {}

    def panels(draw, width: float = 6.0):
        fig, axes = plt.subplots(1, len(keys), figsize=(width * len(keys), 4.5), squeeze=False)
        for ax, key in zip(axes[0], keys):
            draw(ax, [r for r in rows if r["setting"] == key])
            ax.set_title(key, fontsize=9)
        fig.tight_layout()
        return fig

    regularizers = sorted({r["regularizer"] for r in rows} - {"none"})
    palette = {"none": "0.6", **{name: f"C{i % 10}" for i, name in enumerate(regularizers)}}
    out = {"f1_by_regularizer.png": panels(lambda ax, subset: draw_bars(ax, subset, palette),
                                           width=max(6.0, 0.5 * max(len(rows) // max(len(keys), 1), 1)))}
    if _drawable_strengths(rows):
        out["f1_vs_strength.png"] = panels(draw_strength)
    else:
        notes.append("f1_vs_strength.png not drawn: no regularizer was run at two or more strengths of one knob")
    if any(r["regularizer"] != "none" and not math.isnan(r["cost_ratio"])
           and (not math.isnan(r["delta_vs_none"]) or r.get("collapsed")) for r in rows):
        out["cost_vs_gain.png"] = panels(draw_cost_gain)
    else:
        notes.append("cost_vs_gain.png not drawn: no regularizer row has both a cost ratio and a Δ vs none "
                     "(they need `none` runs of the same sweep and setting)")
    return out


def plot(rows: list[dict[str, Any]], out_dir: Path, notes: list[str] | None = None) -> list[Path]:
    """Write :func:`figures` as PNGs into ``out_dir``; an earlier report's plot that is no longer drawn is removed."""
    import matplotlib.pyplot as plt

    written = []
    for name, fig in figures(rows, notes).items():
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    for stale in ("f1_vs_strength.png", "cost_vs_gain.png"):
        if out_dir / stale not in written:
            (out_dir / stale).unlink(missing_ok=True)  # an earlier report's plot would no longer match
    return written

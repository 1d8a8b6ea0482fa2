"""Learning curves: each method's difference from none against the number of labeled training sentences,
for the profile's datasets that are one corpus at several sizes (``curves: {cluener: [cluener_300,
cluener_1000]}``; each size is the dataset's ``data.max_train_samples=N``). The numbers are the rows'
own (Δ and its 95 % interval at the seeds each row reached): a table in the report and
``learning_curve.png`` beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regner.experiments.compare.formatting import points

SIZE_KEY = "data.max_train_samples="


def parse_curves(value: Any, datasets: dict[str, list[str]], fail) -> dict[str, list[tuple[int, str]]]:
    """The profile's ``curves``: {name: [dataset, ...]} → {name: [(labeled size, dataset), ...]} by size."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail("curves", f"a mapping {{name: [dataset, dataset, ...]}} of one corpus at several sizes, got {value!r}")
    found = {}
    for name, members in value.items():
        where = f"curves.{name}"
        if not isinstance(members, list) or len(members) < 2 or any(m not in datasets for m in members):
            raise fail(where, f"two or more of the profile's datasets ({', '.join(datasets)}), got {members!r}")
        sizes = []
        for member in members:
            given = [o[len(SIZE_KEY):] for o in datasets[member] if o.startswith(SIZE_KEY)]
            if not given or not given[-1].isdigit():
                raise fail(where, f"{member} sets no {SIZE_KEY}N: a curve's sizes are its datasets' labeled sizes")
            sizes.append((int(given[-1]), member))
        if len({s for s, _ in sizes}) != len(sizes):
            raise fail(where, f"two datasets of one size: {sorted(sizes)}")
        found[str(name)] = sorted(sizes)
    return found


def curve_rows(curves: dict[str, list[tuple[int, str]]], table: list[dict]) -> list[dict[str, Any]]:
    """One entry per (curve, regime, method): its (size, Δ, CI low, CI high, seeds) points."""
    found = []
    for name, sizes in curves.items():
        regimes = dict.fromkeys(r["regime"] for r in table if r["dataset"] in {d for _, d in sizes})
        for regime in regimes:
            methods = dict.fromkeys(r["method"] for r in table if r["regime"] == regime and
                                    r["dataset"] in {d for _, d in sizes})
            for method in methods:
                marks = []
                for size, dataset in sizes:
                    row = next((r for r in table if (r["dataset"], r["regime"], r["method"]) ==
                                (dataset, regime, method)), None)
                    if row is not None and row["seeds"] >= 2:
                        marks.append((size, row["delta"], row["ci"][0], row["ci"][1], row["seeds"]))
                found.append({"curve": name, "regime": regime, "method": method, "points": marks})
    return found


def markdown_lines(curves: dict[str, list[tuple[int, str]]], entries: list[dict[str, Any]]) -> list[str]:
    if not curves:
        return []
    lines = ["## Learning curves", "", "Δ F1 points (method − none) at each labeled size, with the row's 95 % "
             "interval and seeds; `learning_curve.png` draws them.", ""]
    for name, sizes in curves.items():
        for regime in dict.fromkeys(e["regime"] for e in entries if e["curve"] == name):
            header = " | ".join(f"{size:,} labeled ({dataset})" for size, dataset in sizes)
            lines += [f"**{name}, {regime}**", "", f"| method | {header} |", "|---" * (len(sizes) + 1) + "|"]
            for e in (e for e in entries if e["curve"] == name and e["regime"] == regime):
                by_size = {p[0]: p for p in e["points"]}
                cells = [f"{points(by_size[s][1])} [{points(by_size[s][2])}, {points(by_size[s][3])}] "
                         f"({by_size[s][4]})" if s in by_size else "—" for s, _ in sizes]
                lines.append(f"| {e['method']} | {' | '.join(cells)} |")
            lines.append("")
    return lines


MARKERS = "osD^vPX<>*"


def styles(count: int) -> list[tuple[int, str]]:
    """(tab20 colour index, marker) per method: all distinct up to 20 methods (a comparison has 14), so no two
    methods share a look, as they did with the 10 default colours; the markers tell them apart in grey too."""
    return [(i % 20, MARKERS[i % len(MARKERS)]) for i in range(count)]


def plot(entries: list[dict[str, Any]], path: Path) -> Path | None:
    """learning_curve.png: one panel per (curve, regime), Δ vs labeled size (log) per method, 95 % bars."""
    panels = list(dict.fromkeys((e["curve"], e["regime"]) for e in entries if e["points"]))
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20").colors
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 4.8), squeeze=False)
    for ax, (name, regime) in zip(axes[0], panels):
        members = [e for e in entries if (e["curve"], e["regime"]) == (name, regime) and e["points"]]
        for i, (e, (colour, marker)) in enumerate(zip(members, styles(len(members)))):
            shift = 1 + 0.025 * (i - (len(members) - 1) / 2)  # side by side on the log axis
            xs = [p[0] * shift for p in e["points"]]
            ys = [100 * p[1] for p in e["points"]]
            low = [100 * (p[1] - p[2]) for p in e["points"]]
            high = [100 * (p[3] - p[1]) for p in e["points"]]
            ax.errorbar(xs, ys, yerr=[low, high], marker=marker, color=colours[colour], capsize=3, label=e["method"])
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        sizes = sorted({p[0] for e in members for p in e["points"]})
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("labeled training sentences")
        ax.set_ylabel("Δ F1 vs none (points, 95 % interval)")
        ax.set_title(f"{name}, {regime}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside, not over, the bars
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

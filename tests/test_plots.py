"""The report's and the benchmark's figures, read back from the matplotlib objects: axes from 0, the
metric the verdict uses, collapsed seeds marked, no error bar from one seed, readable strength ticks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib
import pytest

from regner.experiments.benchmark.plots import plots as benchmark_plots
from regner.experiments.benchmark.profile import Method
from regner.experiments.report.plots import figures

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run(f1: float, test: float | None = None, status: str = "completed"):
    test = f1 if test is None else test
    return SimpleNamespace(status=status, dev_f1=f1, test_f1=test, collapsed=status == "diverged" or f1 < 0.05)


def row(regularizer: str, runs: list, strength: str = "default", judged_on: str = "test", **extra):
    base = {"setting": "demo / tiny", "regularizer": regularizer, "kl": "—" if regularizer == "none" else "globalpointer",
            "strength": strength, "judged_on": judged_on, "_runs": runs, "cost_ratio": 2.0,
            "delta_vs_none": math.nan, "collapsed": sum(r.collapsed for r in runs),
            "judged_runs": len(runs)}
    return {**base, **extra}


def red_crosses(ax) -> list:
    return [c for c in ax.collections if len(c.get_offsets()) and len(c.get_facecolor())
            and tuple(c.get_facecolor()[0][:3]) == (1.0, 0.0, 0.0)]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_bars_start_at_zero_show_the_verdicts_metric_and_mark_collapsed_seeds():
    rows = [row("none", [run(0.90, 0.88), run(0.92, 0.90)]),
            row("rdrop", [run(0.91, 0.89), run(0.0, 0.0)], strength="alpha=4"),
            row("vat", [run(0.93, 0.91)], strength="alpha=1")]
    ax = figures(rows)["f1_by_regularizer.png"].axes[0]
    assert ax.get_ylim()[0] == 0.0  # differences are not magnified by a cut axis
    assert ax.get_ylabel().startswith("test F1")  # every row is judged on test F1: the bars are test F1
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == pytest.approx([0.89, (0.89 + 0.0) / 2, 0.91])  # the collapsed seed counts against R-Drop
    crosses = red_crosses(ax)
    assert len(crosses) == 1 and list(crosses[0].get_offsets()[0])[1] == 0.0
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["n=2", "n=2\n1 collapsed", "n=1"]
    bars = [c for c in ax.containers if hasattr(c, "errorbar")]
    assert bars[0].errorbar is not None and bars[2].errorbar is None  # no ± from a single seed


def test_bars_fall_back_to_dev_f1_and_say_so():
    rows = [row("none", [run(0.9)], judged_on="dev"), row("fgm", [run(0.8)], judged_on="dev")]
    ax = figures(rows)["f1_by_regularizer.png"].axes[0]
    assert ax.get_ylabel().startswith("dev F1") and "no test split" in ax.get_ylabel()
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.9, 0.8])


def test_strength_plot_counts_collapsed_runs_and_labels_only_the_strengths_that_ran():
    notes: list[str] = []
    rows = [row("none", [run(0.9)]), row("rdrop", [run(0.91)], strength="alpha=1"),
            row("rdrop", [run(0.0)], strength="alpha=4"), row("rdrop", [run(0.89)], strength="alpha=2")]
    drawn = figures(rows, notes)
    assert "f1_vs_strength.png" in drawn, notes  # one of the two strengths collapsed: still two strengths
    ax = drawn["f1_vs_strength.png"].axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4"]
    assert ax.get_xticklabels(minor=True) == [] or all(not t.get_text() for t in ax.get_xticklabels(minor=True))
    assert len(red_crosses(ax)) == 1
    assert "EMA" not in ax.get_xlabel()


def test_cost_vs_gain_keeps_a_method_whose_seeds_all_collapsed():
    rows = [row("none", [run(0.9)]), row("fgm", [run(0.92)], delta_vs_none=0.02),
            row("rdrop", [run(0.0), run(0.01)], strength="alpha=16")]
    ax = figures(rows)["cost_vs_gain.png"].axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert any(label.startswith("rdrop") and "collapsed" in label for label in labels), labels
    assert len(red_crosses(ax)) == 1


def test_benchmark_strength_axis_names_ema_only_when_ema_is_tuned(tmp_path):
    profile = SimpleNamespace(methods={"none": Method("none", ["regularizer=none"]),
                                       "rdrop": Method("rdrop", ["regularizer=rdrop"], "alpha", [0.3, 1, 3], 1)})
    tune = [{"dataset": "demo", "regime": "tiny", "method": "none", "value": None, "dev_f1": 0.9}] + [
        {"dataset": "demo", "regime": "tiny", "method": "rdrop", "value": v, "dev_f1": f}
        for v, f in ((0.3, 0.9), (1, 0.91), (3, 0.0))]
    captured = {}
    original = plt.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        captured[path.name] = fig
        return original(fig, path, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        benchmark_plots(tmp_path, [], tune, profile, {})
    finally:
        plt.Figure.savefig = original
    ax = captured["f1_vs_strength.png"].axes[0]
    assert "EMA" not in ax.get_xlabel() and ax.get_ylim()[0] == 0.0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.3", "1", "3"]
    assert len(red_crosses(ax)) == 1  # the collapsed grid point

"""Aggregate finished runs into one table: which regularizer helps, by how much, at what cost.

Runs are found by their ``status.json`` under the given directories; each run's resolved
``config.yaml`` says what it was. Rules, each there because a report must not call noise a result:

- **Groups never pool unlike runs.** Every config key that differs between the runs (apart from the
  seed and keys that cannot change results, such as progress bars or the cache path) splits them:
  the regularizer keys into rows, every other key (dataset, encoder, head, precision, learning rate,
  batch size, epochs, max length, ...) into separate settings. Each row is compared only with the
  ``none`` runs of exactly its setting, and its cost only with those ``none`` runs of the same sweep.
- **Verdicts are tests.** With seeds shared between a row and ``none`` (same seed = same init and
  data order), a paired t test on the per-seed differences; otherwise Welch's t test with
  Welch–Satterthwaite degrees of freedom. The p-values of all rows of one report are Holm-corrected
  and a row is *better*/*worse* only when its adjusted p < 0.05. Test F1 is judged where every run
  has a test split (dev F1 picked the checkpoint, so it is optimistic); otherwise dev, and the
  report says so.
- **Collapse counts against a method.** A run whose dev F1 < 0.05 or that stopped on a non-finite
  loss is collapsed; a row with any collapsed seed is *unstable (k of n collapsed)* whatever its
  survivors score, and its mean over all seeds (a diverged run counting as 0) is shown next to the
  mean of the survivors.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regner.runio import METRICS_FILE, STATUS_FILE
from regner.stats import compare_seeds, holm

COLLAPSE_F1 = 0.05
SIGNIFICANCE = 0.05  # family-wise, after Holm's correction over the rows of one report
# Keys that do not change what a run computes: never a reason to split groups.
INERT_KEYS = {"seed", "resume", "ckpt", "alpha", "regularizer._target_", "regularizer.name", "data.root",
              "trainer.progress", "trainer.num_workers", "trainer.feature_cache", "trainer.save_every_steps",
              "trainer.log_every", "trainer.check_every", "trainer.resume", "trainer.eval_batch_size",
              "trainer.loggers", "trainer.mlflow.tracking_uri", "trainer.mlflow.experiment",
              "trainer.num_threads"}  # CPU threads change only the order of float sums, not the method
TREATMENT_PREFIXES = ("regularizer.", "kl.", "trainer.ema.")  # EMA is compared as a method: "fgm+ema" vs "none"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values (as JSON, so they compare and hash)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(tree, sort_keys=True) if isinstance(tree, list) else tree}


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
    alpha: Any = None
    config: dict[str, Any] = field(default_factory=dict)  # flattened resolved config
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

    @functools.cached_property
    def relevant(self) -> dict[str, Any]:
        """The config keys that can change the result: no inert keys, no KL keys if no KL is used."""
        return {k: v for k, v in self.config.items()
                if k not in INERT_KEYS and not (self.kl is None and k.startswith("kl."))}


@dataclass
class Group:
    dataset: str
    encoder: str
    regularizer: str
    kl: str | None
    strength: str
    setting: tuple = ()  # (key, value) pairs of the non-regularizer keys that vary across the report
    runs: list[RunRecord] = field(default_factory=list)
    order: tuple = ()  # sort key of the strength: numbers compare as numbers

    @property
    def good(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == "completed" and not r.collapsed]

    @property
    def counted(self) -> list[RunRecord]:
        """Runs that finished (completed or diverged): what a user would have got."""
        return [r for r in self.runs if r.status in ("completed", "diverged")]

    def values(self, attribute: str) -> list[float]:
        return [getattr(r, attribute) for r in self.good if not math.isnan(getattr(r, attribute))]

    def per_seed(self, attribute: str) -> dict[Any, float]:
        """Mean value per seed (runs repeated with one seed and an inert difference are replicates)."""
        by_seed: dict[Any, list[float]] = defaultdict(list)
        for r in self.good:
            value = getattr(r, attribute)
            if not math.isnan(value):
                by_seed[json.dumps(r.seed)].append(value)
        return {seed: statistics.fmean(v) for seed, v in by_seed.items()}


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _minimal_config(run: dict[str, Any]) -> dict[str, Any]:
    """What a run without config.yaml (an old or hand-made one) can still be told apart by."""
    config = {"data.name": run.get("dataset"), "encoder.name": run.get("encoder"),
              "regularizer.name": run.get("regularizer"), "kl.name": run.get("kl")}
    config.update({f"regularizer.{k}": v for k, v in flatten(run.get("regularizer_config") or {}).items()})
    for key in ("head", "precision"):
        if run.get(key) is not None:
            config[f"{key}.type" if key == "head" else "trainer.precision"] = run[key]
    return config


def _record(run_dir: Path) -> RunRecord | None:
    status = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else None
    run = (metrics or {}).get("run") or status.get("run")
    if not run or "regularizer" not in run or (metrics or {}).get("kind") == "evaluation":
        return None  # failed before its config was read, or not a training run (e.g. regner evaluate)
    state = status.get("status", "unknown")
    if state == "failed" and status.get("diverged"):
        state = "diverged"
    if state == "completed" and metrics is None:
        state = "incomplete"
    config_file = run_dir / "config.yaml"
    if config_file.exists():
        from omegaconf import OmegaConf

        config = flatten(OmegaConf.to_container(OmegaConf.load(config_file), resolve=False))
    else:
        config = _minimal_config(run)
    method = run["regularizer"] + ("+ema" if config.get("trainer.ema.decay") or run.get("ema_decay") else "")
    record = RunRecord(run_dir, dataset_label(run.get("dataset", "?"), config), run.get("encoder", "?"), method, run.get("kl"),
                       run.get("regularizer_config", {}), run.get("seed"), state, status.get("reason", ""),
                       run.get("alpha"), config)
    if metrics:
        record.dev_f1 = float(metrics["dev"]["f1"])
        record.test_f1 = float(metrics["test"]["f1"]) if metrics.get("test") else math.nan
        train = metrics.get("train", {})
        record.sec_per_step = 1 / train["steps_per_s"] if train.get("steps_per_s") else math.nan
        if str(train.get("device", "")).startswith("cuda") and train.get("peak_memory_mb") is not None:
            record.peak_memory_mb = float(train["peak_memory_mb"])  # CPU runs have no per-run figure
    return record


def dataset_label(name: str, config: dict[str, Any]) -> str:
    """A dataset is its name *and* its files: ``jsonl`` or ``conll`` names every user file alike."""
    files = [Path(str(config[f"data.{k}"])).name for k in ("train", "dev", "test")
             if isinstance(config.get(f"data.{k}"), str) and config.get(f"data.{k}")]
    if config.get("data.path"):
        files = [str(config["data.path"])]
    return f"{name} ({', '.join(files)})" if files else name


def collect_runs(directories: list[str | Path], skipped: list[Path] | None = None) -> list[RunRecord]:
    """Every training run under ``directories``; other directories with a status.json (``regner
    evaluate`` outputs, runs that failed before reading their config) go to ``skipped``."""
    records = []
    for directory in directories:
        directory = Path(directory)
        if not directory.exists():
            raise FileNotFoundError(f"{directory}: no such directory")
        for status_file in sorted(directory.rglob(STATUS_FILE)):
            record = _record(status_file.parent)
            if record is not None:
                records.append(record)
            elif skipped is not None:
                skipped.append(status_file.parent)
    _attach_cost_ratios(records)
    return records


def varying_keys(records: list[RunRecord]) -> list[str]:
    """Relevant config keys whose value is not the same in every run (a missing key counts as a value)."""
    keys = sorted({k for r in records for k in r.relevant})
    return [k for k in keys if len({json.dumps(r.relevant.get(k), sort_keys=True, default=str) for r in records}) > 1]


def _is_treatment(key: str) -> bool:
    return key.startswith(TREATMENT_PREFIXES)


def setting_of(record: RunRecord, keys: list[str]) -> tuple:
    """The run's values of the varying non-regularizer keys: runs compare only within one setting."""
    relevant = record.relevant
    return tuple((k, relevant.get(k)) for k in keys if not _is_treatment(k))


def _attach_cost_ratios(records: list[RunRecord]) -> None:
    keys = varying_keys(records)
    baseline: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if r.regularizer == "none" and r.status == "completed" and not math.isnan(r.sec_per_step):
            baseline[(r.sweep, setting_of(r, keys))].append(r.sec_per_step)
    for r in records:
        base = baseline.get((r.sweep, setting_of(r, keys)))
        if base and not math.isnan(r.sec_per_step):
            r.cost_ratio = r.sec_per_step / statistics.fmean(base)


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sort_value(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0.0, str(value))


def strength_labels(records: list[RunRecord], orders: dict[int, tuple] | None = None) -> dict[int, str]:
    """Label each run by the regularizer/KL keys that vary among the runs of its regularizer (the KL
    name has its own column), e.g. ``alpha=4`` or ``epsilon=0.1, relative=True``."""
    by_regularizer: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        by_regularizer[r.regularizer].append(r)
    labels = {}
    for runs in by_regularizer.values():
        varying = [k for k in varying_keys(runs) if _is_treatment(k) and k != "kl.name"]
        for r in runs:
            relevant = r.relevant
            parts = [f"{k.split('.', 1)[1] if k.startswith('regularizer.') else k}={_format_value(relevant.get(k))}"
                     for k in varying]
            labels[id(r)] = ", ".join(parts) or "default"
            if orders is not None:
                orders[id(r)] = tuple(_sort_value(relevant.get(k)) for k in varying)
    return labels


def group_runs(records: list[RunRecord]) -> list[Group]:
    orders: dict[int, tuple] = {}
    labels, keys = strength_labels(records, orders), varying_keys(records)
    groups: dict[tuple, Group] = {}
    for r in records:
        setting = setting_of(r, keys)
        key = (setting, r.dataset, r.encoder, r.regularizer, r.kl or "", labels[id(r)])
        group = groups.setdefault(key, Group(r.dataset, r.encoder, r.regularizer, r.kl, labels[id(r)], setting,
                                             order=orders[id(r)]))
        group.runs.append(r)
    first = {"none": 0}
    return sorted(groups.values(), key=lambda g: (json.dumps(g.setting, default=str), g.dataset, g.encoder,
                                                  first.get(g.regularizer, 1), g.regularizer, g.kl or "", g.order))


def setting_label(group: Group) -> str:
    """How a setting reads in a header: dataset, encoder, then the other keys that vary."""
    extra = [f"{k}={_format_value(v)}" for k, v in group.setting if k not in ("data.name", "encoder.name")]
    return f"{group.dataset} — encoder {group.encoder}" + (f" — {', '.join(extra)}" if extra else "")


def collapse_count(row: dict[str, Any]) -> str:
    """"k of n" for a summary row's collapsed seeds: n counts the runs judged (completed or diverged),
    not the failed ones."""
    return f"{row['collapsed']} of {row['judged_runs']}"


def collapse_note(row: dict[str, Any]) -> str:
    """"k of n collapsed" (see ``collapse_count``)."""
    return f"{collapse_count(row)} collapsed"


def is_unstable(verdict: str) -> bool:
    """Whether a row's verdict says some of its seeds collapsed ("unstable (k of n collapsed)")."""
    return verdict.startswith("unstable")


def summarize(groups: list[Group]) -> list[dict[str, Any]]:
    """One row per group; each non-baseline row tested against the ``none`` runs of its setting,
    with Holm's correction over all tested rows."""
    baselines = {g.setting: g for g in groups if g.regularizer == "none"}
    rows = []
    for g in groups:
        dev_mean, dev_std = _mean_std(g.values("dev_f1"))
        test_mean, test_std = _mean_std(g.values("test_f1"))
        counted = g.counted
        collapsed = sum(r.collapsed for r in g.runs)
        base = baselines.get(g.setting)
        # Test F1 only when this group and its baseline all have one (a diverged run has no metrics at all).
        with_test = all(not math.isnan(r.test_f1) or r.status == "diverged" for r in counted)
        base_with_test = base is None or all(not math.isnan(r.test_f1) for r in base.good)
        judge = "test" if counted and with_test and base_with_test else "dev"
        attribute = f"{judge}_f1"
        all_seeds = [0.0 if r.status == "diverged" else getattr(r, attribute) for r in counted]
        ratios = [r.cost_ratio for r in g.runs if not math.isnan(r.cost_ratio)]
        memory = g.values("peak_memory_mb")
        row = {
            "setting": setting_label(g), "dataset": g.dataset, "encoder": g.encoder, "regularizer": g.regularizer,
            "kl": g.kl or "—", "strength": g.strength, "n": len(g.per_seed("dev_f1")), "runs": len(g.runs),
            "judged_runs": len(counted), "collapsed": collapsed,
            "failed": sum(r.status not in ("completed", "diverged") for r in g.runs),
            "dev_f1_mean": dev_mean, "dev_f1_std": dev_std, "dev_f1_best": max(g.values("dev_f1"), default=math.nan),
            "test_f1_mean": test_mean, "test_f1_std": test_std,
            "judged_on": judge, "f1_all_seeds_mean": statistics.fmean(all_seeds) if all_seeds else math.nan,
            "cost_ratio": statistics.fmean(ratios) if ratios else math.nan,
            "peak_memory_mb": max(memory, default=math.nan),
            "delta_vs_none": math.nan, "delta_ci_low": math.nan, "delta_ci_high": math.nan,
            "test": "", "p": math.nan, "p_holm": math.nan, "verdict": "",
            "_runs": g.runs,  # not written to report.csv (keys starting with _)
        }
        if g.regularizer == "none":
            row["verdict"] = "baseline"
        elif base is None:
            row["verdict"] = "no none runs in this setting"
        else:
            group_values, base_values = g.per_seed(attribute), base.per_seed(attribute)
            if group_values and base_values:
                result = compare_seeds(group_values, base_values)
                row.update(delta_vs_none=result.delta, delta_ci_low=result.ci[0], delta_ci_high=result.ci[1],
                           test=result.test, p=result.p)
            if collapsed:
                row["verdict"] = f"unstable ({collapse_note(row)})"
            elif not group_values or not base_values:
                row["verdict"] = "no data"
            elif math.isnan(row["p"]):
                row["verdict"] = "n<2: cannot tell"
        rows.append(row)
    tested = [r for r in rows if r["verdict"] == "" and not math.isnan(r["p"])]
    for row, adjusted in zip(tested, holm([r["p"] for r in tested])):
        row["p_holm"] = adjusted
        row["verdict"] = ("better" if row["delta_vs_none"] > 0 else "worse") if adjusted < SIGNIFICANCE else "within noise"
    return rows


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _num(value: float, fmt: str) -> str:
    return "—" if math.isnan(value) else format(value, fmt)


COLUMNS = ["regularizer", "kl", "strength", "n", "dev F1 (mean ± std)", "best dev F1", "test F1 (mean ± std)",
           "F1 all seeds", "Δ F1 vs none", "p (Holm)", "verdict", "time/step vs none", "peak GPU MB", "collapsed"]


def _p(value: float) -> str:
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
        cells = [r["regularizer"], r["kl"], r["strength"], str(r["n"]), _pm(r["dev_f1_mean"], r["dev_f1_std"]),
                 _num(r["dev_f1_best"], ".4f"), _pm(r["test_f1_mean"], r["test_f1_std"]),
                 _num(r["f1_all_seeds_mean"], ".4f") if r["collapsed"] else "=",
                 delta, _p(r["p_holm"]), r["verdict"],
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
                f"{r['judged_on']} F1, Holm p {_p(r['p_holm'])})"
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


def build_report(directories: list[str | Path], out_dir: str | Path | None = None, title: str = "regner report",
                 preamble: str = "", plots: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """Collect, aggregate and write ``report.md``, ``report.csv`` and the PNGs into ``out_dir``."""
    from regner.runio import atomic_write_text

    skipped: list[Path] = []
    records = collect_runs(directories, skipped)
    rows = summarize(group_runs(records))
    text = markdown_report(rows, records, title, preamble)
    if skipped:
        text += (f"\nSkipped {len(skipped)} director{'y' if len(skipped) == 1 else 'ies'} with a status.json that "
                 "are not training runs (regner evaluate outputs, or runs that failed before reading their config).\n")
    out = Path(out_dir if out_dir is not None else directories[0])
    out.mkdir(parents=True, exist_ok=True)
    if plots and rows:
        notes: list[str] = []
        written = plot(rows, out, notes)
        text += "\n## Plots\n\n" + "".join(f"- ![{p.stem}]({p.name})\n" for p in written) + \
            "".join(f"- {note}\n" for note in notes)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.csv", csv_text(rows))
    return text, rows

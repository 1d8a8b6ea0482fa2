"""Writing the benchmark report (report.md, report.csv, stage1.csv, plots) from what has run."""

from __future__ import annotations

from pathlib import Path

from regner.experiments.benchmark.plots import plots
from regner.experiments.benchmark.profile import Profile, value_label
from regner.experiments.benchmark.reading import conclusions
from regner.experiments.benchmark.runs import FINISHED, job_of
from regner.experiments.benchmark.selection import select
from regner.experiments.benchmark.tables import final_table, load_throughput, tune_table
from regner.runs.archive import expanded


def _relative(path: Path, out: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def build(out: Path, profile: Profile, preamble: str = "") -> tuple[str, list[dict]]:
    """Write ``report.md``, ``report.csv``, ``stage1.csv`` and the plots into ``out`` from what has run
    (the run directories under ``out``, or its compacted ``runs.jsonl.gz``: :mod:`regner.runs.archive`)."""
    with expanded(out) as runs_root:
        return _build(out, runs_root, profile, preamble)


def _build(out: Path, runs_root: Path, profile: Profile, preamble: str) -> tuple[str, list[dict]]:
    from regner.experiments.report.grouping import group_runs
    from regner.experiments.report.records import collect_runs
    from regner.experiments.report.summary import summarize
    from regner.experiments.report.tables import csv_text
    from regner.runs.io import atomic_write_text

    final_dirs = [runs_root / d / "final" for d in profile.datasets if (runs_root / d / "final").exists()]
    records = collect_runs(final_dirs) if final_dirs else []
    # a partial report: runs still in flight (or interrupted) are listed, not tabled as rows without data
    in_flight = [r for r in records if r.status not in FINISHED]
    rows = summarize(group_runs([r for r in records if r.status in FINISHED]))  # Holm over every row of the report
    for row in rows:
        row["_dataset"], row["_regime"], row["_method"], _ = job_of(row["_runs"][0].path)
    order = {name: i for i, name in enumerate(profile.methods)}
    rows.sort(key=lambda r: (list(profile.datasets).index(r["_dataset"]) if r["_dataset"] in profile.datasets else 99,
                             list(profile.regimes).index(r["_regime"]) if r["_regime"] in profile.regimes else 99,
                             order.get(r["_method"], 99)))
    throughput = load_throughput(out / "throughput.json")
    tune_rows, chosen = [], {}
    for dataset in profile.datasets:
        if (runs_root / dataset / "tune").exists():
            picked, stage1 = select(profile, runs_root, dataset)
            tune_rows += stage1
            chosen.update({(dataset, *k): v for k, v in picked.items()})
    parts = [f"# regner benchmark v2 — profile `{profile.name}`", ""]
    if preamble:
        parts += [preamble, ""]
    parts += [
        "Protocol: [docs/benchmarks/PROTOCOL.md](../PROTOCOL.md). Stage 1 tunes each method's strength on dev "
        f"(seeds {', '.join(map(str, profile.tune_seeds))}, regimes {', '.join(profile.tune_regimes)}); stage 2 runs "
        f"`none` and every method at its chosen strength with seeds {', '.join(map(str, profile.final_seeds))} "
        "(same seed = same initialisation and data order). **Δ F1 vs none** is the mean per-seed difference "
        "of test F1 (dev where a dataset has no test split, marked), with its 95 % t interval (unadjusted); the "
        "verdict is *better*/*worse* only when the paired t test's p, Holm-corrected over every row of this "
        "report, is below 0.05. A run with dev F1 < 0.05 or a non-finite loss is *collapsed* and makes its row "
        "*unstable*. **Hit epoch cap**: runs that used every allowed epoch without early stopping (then more "
        "epochs might have helped). **Cost ×** and **memory ×**: time per training step and peak memory relative "
        "to `none`, measured alone in one process by `scripts/bench_throughput.py` "
        f"({'`throughput.md`' if throughput else 'not measured yet'}).", ""]
    for dataset in profile.datasets:
        for regime in profile.regimes:
            subset = [r for r in rows if (r["_dataset"], r["_regime"]) == (dataset, regime)]
            tune = tune_table(tune_rows, dataset, regime)
            if not subset and not tune:
                continue
            parts += [f"## {dataset} — {regime}", ""]
            if subset:
                labels = {m: f"{profile.methods[m].key}={value_label(chosen[(dataset, regime, m)])}"
                          for m in profile.methods if (dataset, regime, m) in chosen}
                for r in subset:  # the reading names the strength as the table does (the profile's knob)
                    r["_strength"] = labels.get(r["_method"], r["strength"])
                parts += final_table(subset, profile, labels, throughput) + [""]
            else:
                parts += ["Stage 2 has not run yet for this dataset and regime.", ""]
            if tune:
                source = regime if regime in profile.tune_regimes else profile.tune_regimes[0]
                parts += [f"Stage 1 (strength on dev{'' if source == regime else f', tuned in the {source} regime'}):",
                          ""] + tune + [""]
            elif regime not in profile.tune_regimes:
                parts += [f"Strengths tuned in the {profile.tune_regimes[0]} regime (stage 1 there).", ""]
    if rows:
        parts += ["## Reading", ""] + conclusions(rows, profile) + [""]
    written = plots(out, rows, tune_rows, profile, throughput) if (rows or tune_rows) else []
    if written:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in written] + [""]
    failed = [r for row in rows for r in row["_runs"] if r.status not in ("completed", "diverged")]
    for title, runs in (("Failed runs", failed), ("Unfinished runs (resumed by `make benchmark`)", in_flight)):
        if runs:
            parts += [f"## {title}", ""] + [f"- `{_relative(r.path, runs_root)}`: {r.status}" + (f": {r.reason}" if r.reason else "")
                                                 for r in runs] + [""]
    text = "\n".join(parts)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.csv", csv_text([{"regime": r["_regime"], "method": r["_method"], **r}
                                                     for r in rows]) if rows else "")
    if tune_rows:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(tune_rows[0]))
        writer.writeheader()
        writer.writerows(tune_rows)
        atomic_write_text(out / "stage1.csv", buffer.getvalue())
    return text, rows

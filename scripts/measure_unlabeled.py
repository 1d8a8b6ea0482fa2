#!/usr/bin/env python
"""Which ``unlabeled.rampup_epochs`` and ``unlabeled.threshold`` should semi-supervised training default to?
The measurement behind those two defaults.

    python scripts/measure_unlabeled.py [--jobs 2] [--out docs/benchmarks/DATE-unlabeled-knobs-cpu.md]

Trains ``regner train`` on the demo corpus with ``--labeled`` labeled sentences and the rest of its training
split as unlabeled text (``data.unlabeled_from_train=true``, μ = 1), for every (method, rampup_epochs,
threshold) of the grid and every seed, one thread per run, ``--jobs`` runs side by side; plus supervised
``none`` on the same seeds for context. Each cell reports mean dev and test F1 over the seeds and the paired
mean difference in dev F1 against the cell without a ramp and without a threshold (same seed = same
initialisation and data order), with its standard error. Defaults are read on dev F1, never on test.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measuring import measure, regner_train  # noqa: E402

from regner.experiments.benchmark.execution import machine_description  # noqa: E402

METHODS = ("rdrop", "vat", "mean_teacher")
BASE = (0.0, None)  # (rampup_epochs, threshold) every other cell is compared with


def overrides(args) -> list[str]:
    return [f"data.max_train_samples={args.labeled}",
            f"trainer.batch_size={args.batch_size}", f"trainer.max_epochs={args.epochs}",
            f"trainer.patience={args.patience}"]


def cells(args) -> list[tuple]:
    knobs = list(itertools.product(METHODS, args.rampups, [None if t <= 0 else t for t in args.thresholds]))
    return [("none", None, None, seed) for seed in args.seeds] + [
        (method, rampup, threshold, seed) for (method, rampup, threshold), seed in itertools.product(knobs, args.seeds)]


def train(cell: tuple, args, root: Path) -> dict:
    method, rampup, threshold, seed = cell
    out = root / f"{method}-r{rampup}-t{threshold}-s{seed}"
    command = [f"seed={seed}", f"regularizer={method}", *overrides(args)]
    if method != "none":
        command += ["data.unlabeled_from_train=true", f"unlabeled.ratio={args.ratio}",
                    f"unlabeled.rampup_epochs={rampup}",
                    "unlabeled.threshold=null" if threshold is None else f"unlabeled.threshold={threshold}"]
    metrics = regner_train(out, command)
    return {"method": method, "rampup_epochs": rampup, "threshold": threshold, "seed": seed,
            "dev_f1": metrics["dev"]["f1"], "test_f1": metrics["test"]["f1"],
            "train_s": metrics["train"]["train_time_s"], "steps": metrics["train"]["steps"]}


def paired(rows: list[dict], method: str, cell: tuple) -> tuple[float, float] | None:
    """Mean and standard error of dev F1(cell) − dev F1(BASE) over the seeds both have."""
    def by_seed(knobs):
        return {r["seed"]: r["dev_f1"] for r in rows
                if r["method"] == method and (r["rampup_epochs"], r["threshold"]) == knobs}
    this, base = by_seed(cell), by_seed(BASE)
    differences = [this[s] - base[s] for s in sorted(set(this) & set(base))]
    if len(differences) < 2:
        return None
    return statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(len(differences))


def markdown(rows: list[dict], args, date: str) -> str:
    seeds = len(args.seeds)
    lines = [f"# Semi-supervised ramp-up and confidence threshold on the demo corpus ({date})", "",
             f"{machine_description()}; `scripts/measure_unlabeled.py`: `regner train` on the demo corpus (tiny "
             f"random-init BERT) with {args.labeled} labeled training sentences and the other "
             f"{1500 - args.labeled} as unlabeled text (μ = {args.ratio}), batch {args.batch_size}, ≤ {args.epochs} "
             f"epochs with early stopping (patience {args.patience}), seeds {', '.join(map(str, args.seeds))}, one "
             "thread per run. Cells: mean over the seeds; Δ dev = paired mean difference in dev F1 against the same "
             "method without ramp and threshold (± its standard error), in F1 points.", ""]
    none = [r for r in rows if r["method"] == "none"]
    if none:
        lines += [f"Supervised `none` on the {args.labeled} labeled sentences: dev F1 "
                  f"{statistics.fmean(r['dev_f1'] for r in none):.4f}, test F1 "
                  f"{statistics.fmean(r['test_f1'] for r in none):.4f} (mean of {len(none)} seeds).", ""]
    lines += ["| method | rampup_epochs | threshold | dev F1 | test F1 | Δ dev (points) | train s |",
              "|---|---|---|---|---|---|---|"]
    knobs = sorted({(r["rampup_epochs"], r["threshold"]) for r in rows if r["method"] != "none"},
                   key=lambda k: (k[0], -1 if k[1] is None else k[1]))
    for method in METHODS:
        for cell in knobs:
            mine = [r for r in rows if r["method"] == method and (r["rampup_epochs"], r["threshold"]) == cell]
            if not mine:
                continue
            difference = paired(rows, method, cell) if cell != BASE else None
            delta = "—" if difference is None else f"{100 * difference[0]:+.2f} ± {100 * difference[1]:.2f}"
            lines.append(f"| {method} | {cell[0]:g} | {'—' if cell[1] is None else f'{cell[1]:g}'} | "
                         f"{statistics.fmean(r['dev_f1'] for r in mine):.4f} | "
                         f"{statistics.fmean(r['test_f1'] for r in mine):.4f} | {delta} | "
                         f"{statistics.fmean(r['train_s'] for r in mine):.0f} |")
    lines += ["", f"Pooled over the {len(METHODS)} methods (paired, {seeds} seeds each):", ""]
    for cell in knobs:
        if cell == BASE:
            continue
        found = [paired(rows, method, cell) for method in METHODS]
        found = [f for f in found if f is not None]
        if found:
            mean = statistics.fmean(f[0] for f in found)
            error = math.sqrt(sum(f[1] ** 2 for f in found)) / len(found)
            lines.append(f"- rampup_epochs {cell[0]:g}, threshold {'—' if cell[1] is None else f'{cell[1]:g}'}: "
                         f"Δ dev {100 * mean:+.2f} ± {100 * error:.2f} points")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labeled", type=int, default=100)
    parser.add_argument("--ratio", type=int, default=1)
    parser.add_argument("--rampups", type=float, nargs="+", default=[0.0, 5.0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.9], help="0 = no threshold")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", help="markdown result (a .json beside it)")
    args = parser.parse_args(argv)
    return measure(cells(args), lambda cell, root: train(cell, args, root),
                   lambda rows, date: markdown(rows, args, date), args.jobs, args.out)

if __name__ == "__main__":
    sys.exit(main())

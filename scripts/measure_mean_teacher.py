#!/usr/bin/env python
"""The mean teacher's default weight and its average's warm-up: the measurement behind
``conf/regularizer/mean_teacher.yaml``.

    python scripts/measure_mean_teacher.py [--jobs 2] [--out docs/benchmarks/DATE-mean-teacher-cpu.md]

Trains ``regner train regularizer=mean_teacher`` on the demo corpus (tiny random-init BERT: the hardest case
for a teacher that averages a fast-moving student) with ``--labeled`` labeled sentences and the rest of the
training split as unlabeled text (μ = 1), for every consistency weight of ``--weights`` with the warm-up of
the average on, the default weight with it off, and supervised ``none`` on the same seeds. Each row: mean
dev and test F1 over the seeds, the paired mean difference in dev F1 against ``none`` (same seed = same
initialisation and data order) with its standard error, and the best epoch (a teacher still improving at
the last epoch lags the student). Read on dev F1, never on test.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measuring import measure, regner_train  # noqa: E402

from regner.experiments.benchmark.execution import machine_description  # noqa: E402


def cells(args) -> list[tuple]:
    """(weight or None for none, warmup, seed)."""
    grid = [(w, True) for w in args.weights] + [(args.default, False)]
    return [(None, None, s) for s in args.seeds] + [(w, warm, s) for w, warm in grid for s in args.seeds]


def train(cell: tuple, args, root: Path) -> dict:
    weight, warmup, seed = cell
    command = [f"seed={seed}", f"data.max_train_samples={args.labeled}", f"trainer.batch_size={args.batch_size}",
               f"trainer.max_epochs={args.epochs}", f"trainer.patience={args.patience}"]
    if weight is None:
        command.append("regularizer=none")
    else:
        command += ["regularizer=mean_teacher", f"regularizer.alpha={weight}", f"regularizer.warmup={warmup}",
                    "data.unlabeled_from_train=true", f"unlabeled.ratio={args.ratio}"]
    metrics = regner_train(root / f"{weight}-{warmup}-{seed}", command)
    return {"weight": weight, "warmup": warmup, "seed": seed, "dev_f1": metrics["dev"]["f1"],
            "test_f1": metrics["test"]["f1"], "best_epoch": metrics.get("best_epoch"),
            "train_s": metrics["train"]["train_time_s"]}


def markdown(rows: list[dict], args, date: str) -> str:
    none = {r["seed"]: r["dev_f1"] for r in rows if r["weight"] is None}
    lines = [f"# Mean teacher: consistency weight and the average's warm-up on the demo corpus ({date})", "",
             f"{machine_description()}; `scripts/measure_mean_teacher.py`: `regner train regularizer=mean_teacher` "
             f"on the demo corpus (tiny random-init BERT) with {args.labeled} labeled training sentences and the other "
             f"{1500 - args.labeled} as unlabeled text (μ = {args.ratio}), decay 0.99, teacher evaluated, batch "
             f"{args.batch_size}, ≤ {args.epochs} epochs with early stopping (patience {args.patience}), seeds "
             f"{', '.join(map(str, args.seeds))}, one thread per run. Δ dev: paired mean difference in dev F1 against "
             "supervised `none` (± its standard error), in F1 points.", "",
             "| method | weight | warm-up | dev F1 | test F1 | Δ dev vs none (points) | best epochs | train s |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["weight"], row["warmup"]), []).append(row)
    for (weight, warmup), mine in groups.items():
        if weight is None:
            delta, name = "—", "none"
        else:
            differences = [r["dev_f1"] - none[r["seed"]] for r in mine if r["seed"] in none]
            error = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else math.nan
            delta, name = f"{100 * statistics.fmean(differences):+.2f} ± {100 * error:.2f}", "mean_teacher"
        lines.append(f"| {name} | {'—' if weight is None else f'{weight:g}'} | "
                     f"{'—' if warmup is None else ('on' if warmup else 'off')} | "
                     f"{statistics.fmean(r['dev_f1'] for r in mine):.4f} | "
                     f"{statistics.fmean(r['test_f1'] for r in mine):.4f} | {delta} | "
                     f"{', '.join(str(r['best_epoch']) for r in mine)} | "
                     f"{statistics.fmean(r['train_s'] for r in mine):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labeled", type=int, default=100)
    parser.add_argument("--ratio", type=int, default=1)
    parser.add_argument("--weights", type=float, nargs="+", default=[100.0, 10.0, 3.0, 1.0])
    parser.add_argument("--default", type=float, default=3.0, help="the weight also run without the warm-up")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
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

#!/usr/bin/env python
"""Does a ramp-up of the R-Drop / VAT weight keep a strong weight from killing training, and does it
cost anything at the default strength? The measurement behind ``regularizer.rampup_steps``.

    python scripts/measure_rampup.py [--jobs 2] [--out docs/benchmarks/DATE-rampup-cpu.md]

Trains ``regner train`` on the demo corpus (the README's default: tiny random-init BERT) for every
(method, alpha, rampup_steps, epochs) of the grid below, one thread per run, ``--jobs`` runs side by
side, seed 42, and reports dev F1 per cell (F1 < 0.05 = collapsed). Short runs (2 epochs: what a
newcomer's first sweep is) show the collapse; full runs (the default 10 epochs) show the price.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measuring import measure, regner_train  # noqa: E402

from regner.experiments.benchmark.execution import machine_description  # noqa: E402

METHODS = ("rdrop", "vat")


def grid(args) -> list[tuple[str, float, int, int]]:
    short = itertools.product(METHODS, args.alphas, args.rampups, [args.short_epochs])
    full = itertools.product(METHODS, args.full_alphas, args.rampups, [args.full_epochs])
    return [*short, *full]


def train(cell: tuple[str, float, int, int], root: Path) -> dict:
    method, alpha, rampup, epochs = cell
    out = root / f"{method}-a{alpha}-r{rampup}-e{epochs}"
    metrics = regner_train(out, [f"regularizer={method}", f"alpha={alpha}", f"regularizer.rampup_steps={rampup}",
                                 f"trainer.max_epochs={epochs}"])
    steps = sum(1 for _ in (out / "history.jsonl").read_text().splitlines())
    return {"method": method, "alpha": alpha, "rampup_steps": rampup, "epochs": epochs, "evaluations": steps,
            "steps": metrics["train"].get("steps"), "dev_f1": metrics["dev"]["f1"],
            "train_s": metrics["train"]["train_time_s"]}


def markdown(rows: list[dict], date: str) -> str:
    lines = [f"# Consistency-weight ramp-up on the demo corpus ({date})", "",
             f"{machine_description()}; `scripts/measure_rampup.py`: `regner train` (demo data, tiny random-init "
             "BERT, seed 42, batch 32 = 47 steps per epoch, 1 thread per run) per method × `alpha` (multiplier of "
             "the default weight 100) × `regularizer.rampup_steps` (0 = none). Cells: best dev F1 "
             "(**collapsed** < 0.05).", ""]
    rampups = sorted({r["rampup_steps"] for r in rows})
    for epochs in sorted({r["epochs"] for r in rows}):
        lines += [f"## {epochs} epoch(s)", "", "| method | alpha | " + " | ".join(f"rampup {r}" for r in rampups) + " |",
                  "|---|---|" + "---|" * len(rampups)]
        for method, alpha in sorted({(r["method"], r["alpha"]) for r in rows if r["epochs"] == epochs}):
            cells = []
            for rampup in rampups:
                match = [r for r in rows if (r["method"], r["alpha"], r["rampup_steps"], r["epochs"])
                         == (method, alpha, rampup, epochs)]
                f1 = match[0]["dev_f1"] if match else None
                cells.append("—" if f1 is None else f"**collapsed** ({f1:.3f})" if f1 < 0.05 else f"{f1:.4f}")
            lines.append(f"| {method} | {alpha:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[1, 4, 16])
    parser.add_argument("--full-alphas", type=float, nargs="+", default=[1, 16])
    parser.add_argument("--rampups", type=int, nargs="+", default=[0, 100, 300])
    parser.add_argument("--short-epochs", type=int, default=2)
    parser.add_argument("--full-epochs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", help="markdown result (a .json beside it)")
    args = parser.parse_args(argv)
    return measure(grid(args), train, markdown, args.jobs, args.out)

if __name__ == "__main__":
    sys.exit(main())

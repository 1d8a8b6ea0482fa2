#!/usr/bin/env python
"""Keep a `regner compare` directory's finished runs in the repository, compactly, so that a later session (or
machine) continues the comparison from them:

    python scripts/archive_comparison.py outputs/compare/semi-cpu docs/benchmarks/2026-12-06-semi-cpu

DEST gets the comparison's record (``comparison.yaml``: its design and the encoder's fingerprint, which the run
cache needs to recognise the runs), its ``report.md``/``summary.json``/``learning_curve.png`` and its wall-time
ledger ``timing.json`` when there are any, every finished run's (completed, or diverged: the results the run
cache reuses, a diverged one as F1 0)
four small files in one ``runs.jsonl.gz`` (regner/runs/archive.py; unfinished runs are left out: their saved
state holds weights) and ``runs.md``, a table of those runs (per dataset, regime and method: each seed's dev and
test F1, epochs and wall time, and the paired test-F1 difference to the same regime's ``none`` on the seeds both
have) — the numbers of a partial comparison before its first look is complete. Add DEST to the profile's
``cache`` to reuse them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regner.experiments.benchmark.runs import run_state  # noqa: E402
from regner.runs.archive import ARCHIVE, RUN_FILES, pack  # noqa: E402

RECORDS = ("comparison.yaml", "report.md", "summary.json", "timing.json", "learning_curve.png")
# the states whose runs are results, as the comparison's run cache reuses them (a diverged run counts as F1 0)
FINISHED = ("completed", "diverged")


def table(runs: dict[Path, str], root: Path) -> str:
    """Per (dataset, regime, method): each seed's numbers, and the paired test-F1 difference to none of the same
    dataset and regime; ``runs`` maps each finished run's directory to its state."""
    cells: dict[tuple[str, str, str], dict[int, dict]] = defaultdict(dict)
    for run, state in runs.items():
        name, seed = run.relative_to(root).parts[-2:]
        dataset, regime, method, *strength = name.split(".", 3)  # a raced run: <method>.<strength value>
        cell = cells[(dataset, regime, f"{method}@{strength[0]}" if strength else method)]
        if state == "diverged":
            cell[int(seed.split("-")[1])] = {"test": 0.0, "diverged": True}
            continue
        metrics = json.loads((run / "metrics.json").read_text())
        cell[int(seed.split("-")[1])] = {
            "dev": metrics["dev"]["f1"], "test": (metrics.get("test") or {}).get("f1", float("nan")),
            "epochs": metrics.get("epochs"), "best": metrics.get("best_epoch"),
            "minutes": metrics["train"]["wall_time_s"] / 60}
    lines = ["| dataset | regime | method | seed: test F1 (dev F1; best/epochs; minutes) | "
             "paired Δ test F1 vs none (points) |", "|---|---|---|---|---|"]
    for (dataset, regime, method), seeds in sorted(cells.items()):
        shown = "; ".join(f"{s}: diverged (F1 0)" if r.get("diverged") else
                          f"{s}: {r['test']:.4f} ({r['dev']:.4f}; {r['best']}/{r['epochs']}; {r['minutes']:.1f})"
                          for s, r in sorted(seeds.items()))
        none = cells.get((dataset, regime, "none"), {})
        shared = sorted(set(seeds) & set(none))
        if method == "none":
            delta = "—"
        elif not none:
            delta = "— (none's runs are not in this directory: the comparison read them from its cache)"
        elif not shared:
            delta = "— (no seed shared with none)"
        else:
            delta = (f"{100 * statistics.fmean(seeds[s]['test'] - none[s]['test'] for s in shared):+.2f} "
                     f"(seeds {', '.join(map(str, shared))})")
        lines.append(f"| {dataset} | {regime} | {method} | {shown} | {delta} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the comparison's directory (its out=)")
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    if not (args.out / "comparison.yaml").is_file():
        parser.error(f"{args.out} holds no comparison (no comparison.yaml)")
    states = {p.parent: run_state(p.parent) for p in sorted((args.out / "runs").rglob("status.json"))}
    runs = {run: state for run, state in states.items() if state in FINISHED}
    if not runs:
        parser.error(f"{args.out} has no finished run yet")
    args.dest.mkdir(parents=True, exist_ok=True)
    for name in RECORDS:
        if (args.out / name).is_file():
            shutil.copy(args.out / name, args.dest / name)
    with tempfile.TemporaryDirectory() as scratch:
        for run in runs:
            target = Path(scratch) / run.relative_to(args.out)
            target.mkdir(parents=True)
            for name in RUN_FILES:
                if (run / name).is_file():
                    shutil.copy(run / name, target / name)
        shutil.move(str(pack(scratch)), args.dest / ARCHIVE)
    (args.dest / "runs.md").write_text(table(runs, args.out / "runs") + "\n", encoding="utf-8")
    print(f"{len(runs)} finished run(s) of {args.out} in {args.dest / ARCHIVE}; their table in {args.dest / 'runs.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Check that every regularizer's *default* settings train without collapsing on every shared dataset.

    python scripts/check_defaults.py                       # CLUENER, Weibo, MSRA, People's Daily
    python scripts/check_defaults.py --datasets weibo --max-epochs 4 --out /tmp/check
    python scripts/check_defaults.py --chosen outputs/compare/cpu/summary.json   # also the raced strengths
    make check-defaults

For each dataset it trains `none` and each regularizer with nothing but its defaults (one seed, the
default tiny encoder, a fixed training subset) and fails when a regularizer collapses: dev F1 below
0.05, below half of `none`'s, or a non-finite loss. Defaults are what a new user runs first, on data
nobody tuned them for; a default that collapses somewhere is a bug. Calls are resumable (a finished run,
completed, diverged or failed, is not repeated; a run a stopped call left unfinished continues from its saved
state) and the table goes to <out>/defaults.md. `scripts/benchmark.py` runs this check before its matrix.

`--chosen SUMMARY` (a `regner compare` summary.json) adds every strength the comparison's racing chose,
as `method@value` rows under <out>/chosen/: a raced strength is a user's next setting, so it must not
collapse on any shared dataset either.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regner.experiments.benchmark.runs import FINISHED, run_state  # noqa: E402
from regner.experiments.report.records import COLLAPSE_F1, collect_runs  # noqa: E402

DATASETS = {"cluener": "cluener/train.json", "weibo": "weibo/weiboNER_2nd_conll.train",
            "msra": "msra/msra_train_bio", "people_daily": "people_daily/dev.txt"}
REGULARIZERS = ["none", "rdrop", "vat", "fgm", "gp", "noise", "pgd", "awp", "rdrop_fgm"]


def chosen_settings(summary: Path) -> dict[str, list[str]]:
    """{method@value: its overrides} of every strength a comparison's racing chose (summary.json)."""
    import json

    found = {}
    for entry in json.loads(summary.read_text(encoding="utf-8")).get("chosen", []):
        if entry.get("value") is None or not entry.get("key"):
            continue
        found[f"{entry['method']}@{entry['value']}"] = [*entry["overrides"], f"{entry['key']}={entry['value']}"]
    return found


def run_dataset(dataset: str, out: Path, args, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    settings = [(out / dataset / r, [f"regularizer={r}"]) for r in args.regularizers]
    settings += [(out / "chosen" / dataset / label, overrides) for label, overrides in args.chosen.items()]
    with (out / f"{dataset}.log").open("a", encoding="utf-8") as log:
        for run_dir, overrides in settings:
            state = run_state(run_dir)
            if state in FINISHED:  # completed, diverged or failed: its result is the table's, not repeated
                continue
            if state == "running":  # another call is training it right now: leave it to that call
                log.write(f"{run_dir}: being trained by another process; skipped\n")
                continue
            if state == "interrupted":  # a call stopped mid-run: continue that run from its saved state
                command = [sys.executable, "-m", "regner.cli", "train", f"resume={run_dir}", "trainer.progress=false"]
            else:
                if state == "abandoned":  # stopped before its first saved state: nothing to continue, and regner
                    shutil.rmtree(run_dir)  # refuses to start a new run in a directory that holds one
                command = [sys.executable, "-m", "regner.cli", "train", f"data={dataset}", *overrides,
                           f"seed={args.seed}", f"trainer.max_epochs={args.max_epochs}", "trainer.progress=false",
                           f"data.max_train_samples={args.train_samples}",
                           f"data.max_eval_samples={args.eval_samples}", f"hydra.run.dir={run_dir}", *args.overrides]
            log.write("$ " + " ".join(command[2:]) + "\n")
            log.flush()
            subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def verdicts(out: Path, datasets: list[str], regularizers: list[str] = REGULARIZERS,
             chosen: list[str] = ()) -> tuple[str, list[str]]:
    """The table and the problems, from the runs :func:`run_dataset` writes: ``out/<dataset>/<regularizer>/``, and
    ``chosen`` names the method@value runs under ``out/chosen/<dataset>/``. Runs are found by their directory, not
    by the dataset their metrics name (a description such as "weibo (weiboNER_2nd_conll.train, …)")."""
    homes = {out.resolve(), (out / "chosen").resolve()}  # a default is out/<dataset>/<name>, a chosen strength
    by_key = {(r.path.parent.name, r.path.name): r  # out/chosen/<dataset>/<method@value>: one scan finds both
              for r in collect_runs([out]) if r.path.resolve().parent.parent in homes}
    lines = ["| dataset | regularizer | dev F1 | test F1 | vs none (dev) | status |", "|---|---|---|---|---|---|"]
    problems = []
    for dataset in datasets:
        none = by_key.get((dataset, "none"))
        base = none.dev_f1 if none and not math.isnan(none.dev_f1) else math.nan
        for regularizer in [*regularizers, *chosen]:
            record = by_key.get((dataset, regularizer))
            if record is None:
                lines.append(f"| {dataset} | {regularizer} | — | — | — | not run |")
                problems.append(f"{dataset}/{regularizer}: not run")
                continue
            threshold = max(COLLAPSE_F1, 0.5 * base) if regularizer != "none" and not math.isnan(base) else COLLAPSE_F1
            if record.status == "diverged":
                status = "COLLAPSED (non-finite loss)"
            elif record.status != "completed":
                status = f"FAILED ({record.status})"
            elif record.dev_f1 < threshold:
                status = f"COLLAPSED (dev F1 < {threshold:.3f})"
            else:
                status = "ok"
            if status != "ok":
                problems.append(f"{dataset}/{regularizer}: {status}")
            ratio = record.dev_f1 / base if base and not math.isnan(base) and not math.isnan(record.dev_f1) else math.nan
            fmt = lambda v: "—" if math.isnan(v) else f"{v:.4f}"  # noqa: E731
            lines.append(f"| {dataset} | {regularizer} | {fmt(record.dev_f1)} | {fmt(record.test_f1)} | "
                         f"{'—' if math.isnan(ratio) else f'{ratio:.2f}×'} | {status} |")
    return "\n".join(lines), problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma list of data configs")
    parser.add_argument("--out", default=str(REPO / "outputs" / "check-defaults"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--eval-samples", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=2, help="datasets trained in parallel")
    parser.add_argument("--regularizers", type=lambda s: ["none"] + [r for r in s.split(",") if r != "none"],
                        default=REGULARIZERS, help="comma list (none, the reference, is always included)")
    parser.add_argument("--chosen", type=Path, default=None, help="a regner compare summary.json: also check "
                        "every strength its racing chose (method@value rows)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    if args.chosen is not None and not args.chosen.is_file():
        parser.error(f"--chosen: {args.chosen} is not a file (a regner compare summary.json)")
    args.chosen_from, args.chosen = args.chosen, chosen_settings(args.chosen) if args.chosen is not None else {}

    data_root = Path(os.environ.get("REGNER_DATA", REPO.parent / "shared" / "data"))
    datasets = []
    for name in args.datasets.split(","):
        if (data_root / DATASETS.get(name, name)).exists():
            datasets.append(name)
        else:
            print(f"check-defaults: {name} skipped ({data_root / DATASETS.get(name, name)} not found)", file=sys.stderr)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    start = time.time()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(lambda d: run_dataset(d, out, args, threads), datasets))
    table, problems = verdicts(out, datasets, args.regularizers, list(args.chosen))
    raced = f" and the {len(args.chosen)} strength(s) racing chose in {args.chosen_from}" if args.chosen else ""
    header = (f"# Defaults check, {time.strftime('%Y-%m-%d')}\n\nEvery regularizer with its default settings{raced}, seed "
              f"{args.seed}, default tiny encoder, ≤ {args.max_epochs} epochs, ≤ {args.train_samples} training and "
              f"≤ {args.eval_samples} dev/test sentences; collapsed = dev F1 < max({COLLAPSE_F1}, ½·none) or a "
              f"non-finite loss. Took {(time.time() - start) / 60:.1f} min this call. "
              f"Reproduce: `{shlex.join(['python', 'scripts/check_defaults.py', *sys.argv[1:]])}`.\n\n")
    (out / "defaults.md").write_text(header + table + "\n", encoding="utf-8")
    print(table)
    if problems:
        print("\ndefaults that collapse:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

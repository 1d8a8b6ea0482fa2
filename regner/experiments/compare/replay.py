"""A fixed-design benchmark replayed by ``regner compare`` (cache only): does the sequential comparison
reach the fixed design's verdicts, with how many of its stage-2 runs? (``scripts/replay_sequential.py``.)

The comparison's ``summary.json`` gives each row's sequential state and the runs it used; the fixed
design's ``report.csv`` gives its verdict per (dataset, regime, method). Verdicts are compared in the
fixed report's words: *better*, *worse*, *unstable* (a seed collapsed), or *within noise* (everything
else: equivalent, futile, exhausted)."""

from __future__ import annotations

import csv
from pathlib import Path

from regner.experiments.compare.formatting import mde_text, points


def verdict_word(state: str) -> str:
    return state if state in ("better", "worse", "unstable") else "within noise"


def fixed_verdicts(report_csv: Path) -> tuple[dict[tuple[str, str, str], str], int]:
    """{(dataset, regime, method): the fixed design's verdict word}, and its stage-2 runs (none included)."""
    verdicts, runs = {}, 0
    with open(report_csv, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            runs += int(row["runs"])
            if row["method"] == "none":
                continue
            dataset = row["dataset"].split(" ", 1)[0]
            verdict = row["verdict"]
            verdicts[(dataset, row["regime"], row["method"])] = "unstable" if verdict.startswith("unstable") else verdict
    return verdicts, runs


def agreement(summary: dict, fixed: dict[tuple[str, str, str], str]) -> list[dict]:
    rows = []
    for row in summary["rows"]:
        key = (row["dataset"], row["regime"], row["method"])
        if key in fixed:
            rows.append({**row, "fixed": fixed[key], "verdict": verdict_word(row["state"]),
                         "agrees": verdict_word(row["state"]) == fixed[key]})
    return rows


def replay_markdown(summary: dict, fixed: dict[tuple[str, str, str], str], fixed_runs: int, source: str,
                    command: str) -> str:
    """The replay's table and summary, every sentence from the numbers."""
    rows = agreement(summary, fixed)
    agree = sum(r["agrees"] for r in rows)
    used = summary["runs_used_by_stage"]["compare"]
    lines = [f"# Sequential replay of {source}", "",
             f"`{command}` reads the benchmark's finished runs from its `runs.jsonl.gz` (cache only, nothing "
             "trained) and compares every method with `none` on its stage-2 seeds taken in order, as if they arrived "
             "one look at a time; the strengths are the ones stage 1 chose (one tune seed, so racing is its selection). "
             "Design and reasons: docs/benchmarks/PROTOCOL.md, \"Sequential comparison\".", "",
             f"**{agree} of {len(rows)} verdicts agree with the fixed design; {used} of {fixed_runs} stage-2 runs "
             f"({used / fixed_runs:.0%}) were used** (`none` counted once per dataset and regime; the fixed design "
             f"trained {fixed_runs}).", "",
             "| dataset | regime | method | strength | fixed verdict (5 seeds) | sequential state | seeds used | Δ (points) "
             "| 95 % interval | MDE | verdict | agrees |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['regime']} | {r['method']} | {r['strength'] or '—'} | {r['fixed']} | "
                     f"{r['state']} | {r['seeds']} | {points(r['delta'])} | [{points(r['ci'][0])}, "
                     f"{points(r['ci'][1])}] | {mde_text(r['mde']) if r['mde'] is not None else '—'} | "
                     f"{r['verdict']} | {'yes' if r['agrees'] else '**no**'} |")
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["regime"]), []).append(r)
    lines += ["", "Runs used per (dataset, regime) (`none` runs as many seeds as its deepest method):", "",
              "| dataset | regime | runs used | of the fixed design's |", "|---|---|---|---|"]
    for (dataset, regime), members in cells.items():
        count = max(r["seeds"] for r in members) + sum(r["seeds"] for r in members)
        lines.append(f"| {dataset} | {regime} | {count} | {5 * (len(members) + 1)} |")
    missed = [r for r in rows if not r["agrees"]]
    if missed:
        lines += ["", "Disagreements:", *(f"- {r['method']} ({r['dataset']}, {r['regime']}): sequential {r['verdict']} "
                                          f"after {r['seeds']} seeds, fixed {r['fixed']}." for r in missed)]
    return "\n".join(lines) + "\n"

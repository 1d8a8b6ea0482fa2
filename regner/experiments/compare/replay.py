"""Replay finished stage-2 runs through the sequential design: the seeds of each method (and of its
``none``) taken in the profile's seed order, as if they had arrived one look at a time. It answers
"would the sequential comparison have reached the same verdicts, with how many runs?" for a benchmark
that ran the fixed design (the committed 308-run CPU benchmark)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from regner.experiments.benchmark.profile import Profile
from regner.experiments.benchmark.runs import FINISHED, job_of
from regner.experiments.compare.engine import BASELINE, Comparison, Result, result_from_record
from regner.experiments.compare.sequential import Decision, Design
from regner.experiments.report.summary import is_unstable
from regner.runs.archive import expanded


@dataclass
class ReplayRow:
    dataset: str
    regime: str
    method: str
    fixed_verdict: str  # the fixed design's verdict (Holm over the report, 5 seeds)
    decision: Decision  # the sequential design's
    unstable: bool  # a seed it used collapsed (collapse counts against a method, as in the report)
    fixed_runs: int  # this method's stage-2 runs in the fixed design
    collapsed_at: tuple[int, ...] = ()  # 1-based positions (in seed order) of its collapsed seeds, all seeds
    cell_runs: int = 0  # runs its (dataset, regime) comparison asked for, none included

    @property
    def verdict(self) -> str:
        """The sequential verdict in the report's words: unstable, better, worse, or within noise."""
        if self.unstable:
            return "unstable"
        return self.decision.state if self.decision.state in ("better", "worse") else "within noise"

    @property
    def fixed(self) -> str:
        return "unstable" if is_unstable(self.fixed_verdict) else self.fixed_verdict

    @property
    def agrees(self) -> bool:
        return self.verdict == self.fixed


@dataclass
class Cell:
    """One (dataset, regime) of a finished benchmark: its report rows by method, and each finished run
    as a :class:`~regner.experiments.compare.engine.Result`, by (method, seed)."""

    dataset: str
    regime: str
    rows: dict[str, dict]
    results: dict[tuple[str, int], Result]

    def replayable(self, seeds: list[int]) -> list[str]:
        """The methods (not none) that have, with none, a finished run on every one of ``seeds``."""
        return [m for m in self.rows if m != BASELINE
                and all((m, s) in self.results and (BASELINE, s) in self.results for s in seeds)]


def load_cells(out: Path, profile: Profile) -> list[Cell]:
    """The stage-2 runs of the benchmark in ``out`` (run directories or ``runs.jsonl.gz``), read once,
    per (dataset, regime) that has ``none`` runs; each judged on the metric its report row uses."""
    from regner.experiments.report.grouping import group_runs
    from regner.experiments.report.records import collect_runs
    from regner.experiments.report.summary import summarize

    with expanded(out) as root:
        finals = [root / d / "final" for d in profile.datasets if (root / d / "final").exists()]
        records = [r for r in collect_runs(finals) if r.status in FINISHED] if finals else []
        rows = summarize(group_runs(records))
        for row in rows:
            row["_dataset"], row["_regime"], row["_method"], _ = job_of(row["_runs"][0].path)
    by_cell: dict[tuple[str, str], dict[str, dict]] = {}
    for row in rows:
        by_cell.setdefault((row["_dataset"], row["_regime"]), {})[row["_method"]] = row
    cells = []
    for (dataset, regime), by_method in by_cell.items():
        if BASELINE not in by_method:
            continue
        judged = {f"{row['judged_on']}_f1" for row in by_method.values()}
        attribute = judged.pop() if len(judged) == 1 else "dev_f1"
        results = {(name, run.seed): result_from_record(run, attribute) for name, row in by_method.items()
                   for run in row["_runs"] if run.status in ("completed", "diverged")}
        cells.append(Cell(dataset, regime, by_method, results))
    return cells


def replay(cells: list[Cell], seeds: list[int], design: Design) -> list[ReplayRow]:
    """Every replayable method of every cell decided by ``design`` through the rounds of
    :class:`~regner.experiments.compare.engine.Comparison`, one comparison per cell, its runs read from
    what the fixed design trained, seeds in the order given."""
    replayed = []
    for cell in cells:
        methods = cell.replayable(seeds[:design.looks[-1]])
        comparison = Comparison(methods, seeds, design, lambda method, seed, found=cell.results: found[(method, seed)])
        comparison.run_all()
        for method in methods:
            decision = comparison.states[method].decision
            collapsed_at = tuple(i + 1 for i, s in enumerate(seeds)
                                 if (method, s) in cell.results and cell.results[(method, s)].collapsed)
            replayed.append(ReplayRow(cell.dataset, cell.regime, method, cell.rows[method]["verdict"], decision,
                                      any(p <= decision.n for p in collapsed_at), len(cell.rows[method]["_runs"]),
                                      collapsed_at, comparison.runs_used))
    return replayed


def runs_used(rows: list[ReplayRow]) -> tuple[int, int]:
    """(stage-2 runs the sequential rounds asked for, runs the fixed design trained) over the replayed
    rows: per (dataset, regime) the ``none`` runs are shared, so they count once."""
    cells: dict[tuple[str, str], list[ReplayRow]] = {}
    for row in rows:
        cells.setdefault((row.dataset, row.regime), []).append(row)
    sequential = sum(cell[0].cell_runs for cell in cells.values())
    fixed = sum(max(r.fixed_runs for r in cell) + sum(r.fixed_runs for r in cell) for cell in cells.values())
    return sequential, fixed


def replay_markdown(rows: list[ReplayRow], design: Design, source: str) -> str:
    """The replay table and its summary, every sentence from the numbers."""
    used, fixed = runs_used(rows)
    agree = sum(r.agrees for r in rows)
    lines = [f"# Sequential replay of {source}", "",
             f"Design: looks at {', '.join(map(str, design.looks))} seeds, "
             f"{ {'obrien_fleming': 'O’Brien–Fleming-type', 'pocock': 'Pocock-type'}[design.spending]} "
             f"spending, familywise α {design.alpha:g} split over {design.methods} methods, equivalence margin "
             f"±{design.delta:g} at level {design.equivalence_alpha:g}, futility below conditional power "
             f"{design.futility_power:g} (docs/benchmarks/PROTOCOL.md, \"Sequential comparison\"). Each method's "
             "stage-2 seeds are taken in order, as if they arrived one look at a time.", "",
             f"**{agree} of {len(rows)} verdicts agree with the fixed design; {used} of {fixed} stage-2 runs "
             f"({used / fixed:.0%}) would have been trained** (`none` counted once per dataset and regime).", "",
             "| dataset | regime | method | fixed verdict (5 seeds) | sequential state | seeds | Δ | 95 % interval "
             "(unadjusted) | MDE (80 % power) | verdict | agrees |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r.decision
        lines.append(f"| {r.dataset} | {r.regime} | {r.method} | {r.fixed_verdict} | {d.state} | {d.n} | "
                     f"{d.mean:+.4f} | [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}] | {d.mde:.4f} | {r.verdict} | "
                     f"{'yes' if r.agrees else '**no**'} |")
    missed = [r for r in rows if not r.agrees]
    if missed:
        lines += ["", "Disagreements:"]
        for r in missed:
            why = (f"the fixed design saw seed(s) {', '.join(map(str, r.collapsed_at))} collapse, after the sequential "
                   f"design had stopped at {r.decision.n}" if r.fixed == "unstable" and r.collapsed_at
                   and min(r.collapsed_at) > r.decision.n else f"sequential {r.verdict} vs fixed {r.fixed}")
            lines.append(f"- {r.method} ({r.dataset}, {r.regime}): {why}.")
        lines += ["", "A design that stops early cannot see a collapse in a seed it never runs: a rare collapse "
                  "costs more seeds to detect than a difference of means."]
    return "\n".join(lines) + "\n"

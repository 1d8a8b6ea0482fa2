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

from pathlib import Path
from typing import Any

from regner.errors import UserError
from regner.experiments.report.grouping import group_runs
from regner.experiments.report.plots import plot
from regner.experiments.report.records import COLLAPSE_F1, Unreadable, collect_runs
from regner.experiments.report.summary import summarize
from regner.experiments.report.tables import csv_text, markdown_report


def build_report(directories: list[str | Path], out_dir: str | Path | None = None, title: str = "regner report",
                 preamble: str = "", plots: bool = True, details: dict[str, Any] | None = None,
                 ) -> tuple[str, list[dict[str, Any]]]:
    """Collect, aggregate and write ``report.md``, ``report.csv`` and the PNGs into ``out_dir``
    (default: the first directory; for an archive ``runs.jsonl.gz``, ``runs-report/`` beside it). A
    directory may be an archive of runs, or hold one (:mod:`regner.runs.archive`). Runs with a damaged
    file are skipped and listed; with no readable run nothing is written and ``("", [])`` is returned.
    ``details``, if given, receives ``out`` (where the files went) and ``unreadable`` (the skipped runs)."""
    import contextlib

    from regner.runs.archive import expanded
    from regner.runs.io import atomic_write_text

    first = Path(directories[0]) if directories else None
    out = Path(out_dir) if out_dir is not None else first.with_name("runs-report") if first and first.is_file() \
        else first
    for directory in directories:
        path = Path(directory)
        if not path.exists():
            raise FileNotFoundError(f"{directory}: no such directory")
        if path.is_file() and not path.name.endswith(".jsonl.gz"):
            raise UserError(f"{directory} is a file: give a directory of runs (or a runs.jsonl.gz archive)")
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"-o {out} is an existing file: the report is a directory (report.md, report.csv, plots)")
    skipped: list[Path] = []
    unreadable: list[Unreadable] = []
    with contextlib.ExitStack() as stack:
        roots = [stack.enter_context(expanded(d)) for d in directories]
        records = collect_runs(roots, skipped, unreadable)
    if details is not None:
        details.update(out=out, unreadable=unreadable)
    if not records:  # nothing to report: write nothing that looks like a report
        return "", []
    rows = summarize(group_runs(records))
    text = markdown_report(rows, records, title, preamble)
    if skipped:
        text += (f"\nSkipped {len(skipped)} director{'y' if len(skipped) == 1 else 'ies'} with a status.json that "
                 "are not training runs (regner evaluate outputs, or runs that failed before reading their config).\n")
    if unreadable:
        text += ("\n## Unreadable runs (skipped)\n\n" + "".join(f"- `{err.path}`: {err.reason}\n" for err in unreadable))
    out.mkdir(parents=True, exist_ok=True)
    if plots and rows:
        notes: list[str] = []
        written = plot(rows, out, notes)
        if details is not None:
            details["plots"] = written
        text += "\n## Plots\n\n" + "".join(f"- ![{p.stem}]({p.name})\n" for p in written) + \
            "".join(f"- {note}\n" for note in notes)
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.csv", csv_text(rows))
    return text, rows


__all__ = ["COLLAPSE_F1", "build_report", "collect_runs", "csv_text", "group_runs", "markdown_report", "summarize"]

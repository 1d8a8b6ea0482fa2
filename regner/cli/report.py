"""``regner report DIR [DIR...]``: aggregate the runs under DIRs (run directories, or ``runs.jsonl.gz``
archives of them) into report.md, report.csv and plots; the markdown also goes to stdout."""

from __future__ import annotations

import sys

from regner.cli.options import Command, Option, wants_help

COMMAND = Command(
    "report", "usage: regner report DIR [DIR ...] [key=value ...]",
    "Aggregate regner runs into one table. Each DIR is searched recursively for runs (status.json); a runs.jsonl.gz "
    "archive (or a directory holding one) is read as the run directories it stores.",
    (Option("out", None, "where report.md, report.csv and the PNGs go (default: the first DIR; runs-report/ beside an "
                       "archive)"),
     Option("title", "regner report", "the report's title"),
     Option("preamble", "", "text placed under the title (machine, date, profile)"),
     Option("plots", "true", "write the PNG plots (true or false)", kind="bool")),
    positional="DIR (a directory of runs, or a runs.jsonl.gz archive)", aliases={"-o": ("out", None), "--no-plots": ("plots", "false")})


def run(argv: list[str]) -> None:
    if wants_help(argv, COMMAND):
        return
    options = COMMAND.parse(argv)
    from regner.experiments.report import build_report

    directories = options["_args"]
    try:
        details: dict = {}
        text, rows = build_report(directories, options["out"], options["title"], options["preamble"],
                                  plots=options["plots"], details=details)
    except FileNotFoundError as err:
        print(f"regner report: {err}", file=sys.stderr)
        sys.exit(2)
    unreadable, out = details.get("unreadable", []), details.get("out")
    out = out.resolve() if out is not None else out
    for err in unreadable:
        print(f"regner report: warning: skipped {err.path}: {err.reason}", file=sys.stderr)
    if not rows:
        print(f"regner report: no readable runs under {' '.join(directories)}; nothing written", file=sys.stderr)
        sys.exit(1)
    print(text)
    plots = [p.name for p in details.get("plots", [])]
    print(f"regner report: {len(rows)} rows from {sum(r['runs'] for r in rows)} runs"
          f"{f' ({len(unreadable)} unreadable runs skipped)' if unreadable else ''}; wrote {out / 'report.md'}, "
          f"{out / 'report.csv'}" + (f" and {', '.join(plots)} in {out}" if plots else "") + " (the markdown is also "
          "on stdout above)", file=sys.stderr)

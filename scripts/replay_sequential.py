#!/usr/bin/env python
"""Replay the committed CPU benchmark v2 (308 runs, fixed design) through `regner compare` (issue #31):
does the sequential comparison reach the same verdicts, with how many of its stage-2 runs?

    python scripts/replay_sequential.py [--write]

Runs `regner compare compare=cpu-2026-12-01` (cache only: the benchmark's runs.jsonl.gz is read, nothing is
trained; needs the shared datasets, whose content names the runs) into a temporary directory, then
compares its verdicts with the benchmark's report.csv. Prints the table; `--write` also writes it to
docs/benchmarks/2026-12-01-cpu/replay.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regner.experiments.compare.replay import fixed_verdicts, replay_markdown  # noqa: E402

COMMITTED = REPO / "docs" / "benchmarks" / "2026-12-01-cpu"
PROFILE = "cpu-2026-12-01"


def replay_text() -> str:
    command = ["regner", "compare", f"compare={PROFILE}"]
    with tempfile.TemporaryDirectory(prefix="regner-replay-") as scratch:
        subprocess.run([sys.executable, "-m", "regner.cli", *command[1:], f"out={scratch}/out", "progress=false"],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((Path(scratch) / "out" / "summary.json").read_text(encoding="utf-8"))
    fixed, runs = fixed_verdicts(COMMITTED / "report.csv")
    return replay_markdown(summary, fixed, runs, f"`{COMMITTED.relative_to(REPO)}`", " ".join(command))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="also write replay.md into the benchmark's directory")
    args = parser.parse_args(argv)
    text = replay_text()
    print(text)
    if args.write:
        (COMMITTED / "replay.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

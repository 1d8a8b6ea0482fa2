#!/usr/bin/env python
"""Replay a finished benchmark's stage-2 runs through the sequential design (issue #31): would it reach
the same verdicts, with how many runs?

    python scripts/replay_sequential.py [--out docs/benchmarks/2026-12-01-cpu] [--looks 3,4,5] [--write]

Reads the benchmark's run directories or its runs.jsonl.gz; prints the table (``--write``: also
``replay.md`` in the benchmark directory). The family is every replayed row (α split over them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regner.experiments.benchmark.profile import load_profile, profile_path  # noqa: E402
from regner.experiments.compare.replay import load_cells, replay, replay_markdown  # noqa: E402
from regner.experiments.compare.sequential import Design  # noqa: E402

COMMITTED = REPO / "docs" / "benchmarks" / "2026-12-01-cpu"


def replay_text(out: Path = COMMITTED, profile_name: str = "cpu", looks: tuple[int, ...] = (3, 4, 5),
                spending: str = "obrien_fleming", delta: float = 0.01) -> str:
    profile = load_profile(profile_path(profile_name), encoder=str(out / "encoder"))
    cells, seeds = load_cells(out, profile), list(profile.final_seeds)
    family = sum(len(cell.replayable(seeds[:looks[-1]])) for cell in cells)  # every row spends alpha / family
    design = Design(looks=looks, methods=max(1, family), spending=spending, delta=delta)
    source = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    return replay_markdown(replay(cells, seeds, design), design, f"`{source}`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=COMMITTED)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--looks", default="3,4,5")
    parser.add_argument("--spending", default="obrien_fleming", choices=["obrien_fleming", "pocock"])
    parser.add_argument("--delta", type=float, default=0.01, help="equivalence margin (target_mde)")
    parser.add_argument("--write", action="store_true", help="also write replay.md into --out")
    args = parser.parse_args(argv)
    text = replay_text(args.out.resolve(), args.profile, tuple(int(n) for n in args.looks.split(",")), args.spending,
                       args.delta)
    print(text)
    if args.write:
        (args.out / "replay.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The committed CPU benchmark's stage-2 runs replayed through the sequential design (issue #31): the
committed replay.md is what the replay says today, and the replay uses at most 70 % of the runs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docs" / "benchmarks" / "2026-12-01-cpu"


def load_script():
    spec = importlib.util.spec_from_file_location("replay_sequential", REPO / "scripts" / "replay_sequential.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_replay_is_current_and_uses_at_most_70_percent_of_the_runs():
    text = load_script().replay_text()
    assert text == (COMMITTED / "replay.md").read_text(encoding="utf-8")
    agree, rows, used, fixed = map(int, re.search(r"\*\*(\d+) of (\d+) verdicts agree with the fixed design; (\d+) of "
                                                   r"(\d+) stage-2 runs", text).groups())
    assert rows == 44 and fixed == 240  # 4 (dataset, regime) cells × (11 methods + none) × 5 seeds
    assert used / fixed <= 0.70
    assert agree >= 42  # the two others: collapses in seeds the sequential design never ran (listed in the file)
    assert text.count("| **no** |") == rows - agree

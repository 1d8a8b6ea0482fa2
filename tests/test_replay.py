"""The committed CPU benchmark v2 (fixed design, 308 runs) replayed by `regner compare` from its
runs.jsonl.gz, cache only (issue #31): the committed replay.md is what the replay says today, every
verdict agrees with the fixed design's, and the run count is what the file states."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from .conftest import shared

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docs" / "benchmarks" / "2026-12-01-cpu"


def load_script():
    spec = importlib.util.spec_from_file_location("replay_sequential", REPO / "scripts" / "replay_sequential.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_replay_is_current_and_reaches_every_fixed_verdict():
    shared("weibo"), shared("cluener")  # the runs are named by their data files' content
    text = load_script().replay_text()
    assert text == (COMMITTED / "replay.md").read_text(encoding="utf-8")
    agree, rows, used, fixed = map(int, re.search(r"\*\*(\d+) of (\d+) verdicts agree with the fixed design; (\d+) of "
                                                   r"(\d+) stage-2 runs", text).groups())
    assert rows == 44 and fixed == 240  # 4 (dataset, regime) cells × (11 methods + none) × 5 seeds
    assert agree == rows and "| **no** |" not in text
    assert used / fixed <= 0.75  # 172 of 240 (72 %): the collapse watch's price, PROTOCOL.md

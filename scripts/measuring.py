"""What the measurement scripts (scripts/measure_*.py) share: one `regner train` run in a subprocess, and a grid
of them run side by side with the result written as markdown plus the rows as JSON beside it."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def regner_train(out: Path, overrides: list[str]) -> dict:
    """`regner train` into ``out`` with one thread and no progress bar; its metrics.json (exit on a failure)."""
    command = [sys.executable, "-m", "regner", "train", f"hydra.run.dir={out}", "trainer.progress=false",
               "trainer.num_threads=1", *overrides]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=7200)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def measure(cells: list, train: Callable[[object, Path], dict], markdown: Callable[[list[dict], str], str],
            jobs: int, out: str | None) -> int:
    """Train every cell (``train(cell, scratch directory)`` → a row), ``jobs`` at a time, each row on stderr as it
    comes; print ``markdown(rows, date)`` and, with ``out``, write it there and the rows to ``out``'s .json."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch, concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for row in pool.map(lambda cell: train(cell, Path(scratch)), cells):
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    date = datetime.date.today().isoformat()
    text = markdown(rows, date)
    print(text)
    if out:
        Path(out).write_text(text)
        Path(out).with_suffix(".json").write_text(json.dumps({"date": date, "rows": rows}, indent=2) + "\n")
    return 0

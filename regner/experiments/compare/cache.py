"""The comparison's run cache: every run it can reuse, by identity (:mod:`.identity`).

A root is a directory of run directories (a comparison's own ``runs/``, a benchmark directory, any
``regner sweep`` output) or a run archive (``runs.jsonl.gz``, as a committed benchmark keeps its runs).
A root's ``profile.yaml`` or ``comparison.yaml`` may record the fingerprint of the encoder its runs used
(``encoder`` and ``encoder_sha256``): that fingerprint names the encoder where the directory itself is
not on this machine, so runs committed on one machine are found on another.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from regner.experiments.compare.identity import identity_key
from regner.experiments.report.records import COLLAPSE_F1  # a run below this dev F1 learned nothing
from regner.runs.archive import ARCHIVE, read, run_directories

log = logging.getLogger("regner")
IDENTITY_FILE = "identity.sha256"  # written by the comparison into each run it launches


@dataclass
class CachedRun:
    key: str
    location: str  # the run directory, or "<archive>::<run>" inside a run archive
    state: str  # completed | diverged | failed (other states are not cached results)
    dev_f1: float = math.nan
    test_f1: float = math.nan
    seconds: float = math.nan  # wall time of the run
    peak_memory_mb: float | None = None  # on a GPU (reset at each run's start); None on a CPU, where a persistent
    # train-worker's peak RSS covers every run it trained and says nothing about one of them

    @property
    def collapsed(self) -> bool:
        return self.state == "diverged" or (self.state == "completed" and not self.dev_f1 >= COLLAPSE_F1)

    @property
    def usable(self) -> bool:
        return self.state in ("completed", "diverged")

    def f1(self, split: str) -> float:
        """The run's F1 on ``split`` (``test``, else ``dev`` where it has no test split); 0 if it diverged."""
        if self.state == "diverged":
            return 0.0
        value = self.test_f1 if split == "test" else self.dev_f1
        return self.dev_f1 if split == "test" and math.isnan(value) else value

    @property
    def has_test(self) -> bool:
        return self.state == "diverged" or not math.isnan(self.test_f1)


def _state(status: dict | None, metrics: dict | None) -> str:
    state = (status or {}).get("status")
    if state == "completed" and metrics is not None:
        return "completed"
    if state == "failed":
        return "diverged" if (status or {}).get("diverged") else "failed"
    return "unfinished"


def _parse(files: dict[str, str], location: str, fingerprints: dict[str, str]) -> CachedRun | None:
    try:
        status = json.loads(files["status.json"]) if "status.json" in files else None
        metrics = json.loads(files["metrics.json"]) if "metrics.json" in files else None
        config = yaml.safe_load(files["config.yaml"]) if "config.yaml" in files else None
    except (ValueError, yaml.YAMLError):
        log.warning("run cache: %s is damaged; not reused", location)
        return None
    if not isinstance(config, dict) or (metrics or {}).get("kind") == "evaluation":
        return None
    state = _state(status, metrics)
    if state not in ("completed", "diverged"):
        return None
    key = files.get(IDENTITY_FILE, "").strip() or identity_key(config, fingerprints)
    run = CachedRun(key, location, state)
    if metrics:
        run.dev_f1 = float((metrics.get("dev") or {}).get("f1", math.nan))
        run.test_f1 = float((metrics.get("test") or {}).get("f1", math.nan)) if metrics.get("test") else math.nan
        train = metrics.get("train") or {}
        run.seconds = float(train.get("wall_time_s") or math.nan)
        if str(train.get("device", "")).startswith("cuda") and train.get("peak_memory_mb") is not None:
            run.peak_memory_mb = float(train["peak_memory_mb"])
    return run


def root_fingerprints(root: Path) -> dict[str, str]:
    """{encoder directory: fingerprint} that a benchmark's or comparison's record beside its runs states."""
    found = {}
    for name in ("profile.yaml", "comparison.yaml"):
        path = root / name
        if path.is_file():
            try:
                spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                continue
            if isinstance(spec, dict) and spec.get("encoder") and spec.get("encoder_sha256"):
                found[str(spec["encoder"])] = str(spec["encoder_sha256"])
    return found


class RunIndex:
    """Finished runs by identity key. The first root given wins a tie (the comparison's own runs first)."""

    def __init__(self):
        self.runs: dict[str, CachedRun] = {}
        self.scanned: dict[str, int] = {}  # root -> runs it added (not found under an earlier root)
        self.present: dict[str, int] = {}  # root -> finished runs it holds, added or not

    def __len__(self) -> int:
        return len(self.runs)

    def get(self, key: str) -> CachedRun | None:
        return self.runs.get(key)

    def add(self, run: CachedRun | None) -> None:
        if run is not None and run.usable and run.key not in self.runs:
            self.runs[run.key] = run

    def add_directory(self, directory: Path, fingerprints: dict[str, str] | None = None) -> CachedRun | None:
        files = {}
        for name in ("status.json", "metrics.json", "config.yaml", IDENTITY_FILE):
            path = directory / name
            if path.is_file():
                files[name] = path.read_text(encoding="utf-8")
        run = _parse(files, str(directory), fingerprints or {})
        self.add(run)
        return run

    def scan(self, root: str | Path) -> int:
        """Add every finished run under ``root`` (a directory, or a ``runs.jsonl.gz``); returns how many."""
        root = Path(root)
        before = len(self.runs)
        runs = []
        if root.is_file() or (root / ARCHIVE).is_file():
            archive = root if root.is_file() else root / ARCHIVE
            fingerprints = root_fingerprints(archive.parent)
            for record in read(archive):
                runs.append(_parse(record["files"], f"{archive}::{record['run']}", fingerprints))
                self.add(runs[-1])
        if root.is_dir():
            fingerprints = root_fingerprints(root)
            runs += [self.add_directory(directory, fingerprints) for directory in run_directories(root)]
        self.present[str(root)] = len({run.key for run in runs if run is not None and run.usable})
        self.scanned[str(root)] = len(self.runs) - before
        return self.scanned[str(root)]

"""The benchmark's run directories and what each one holds: its state, dev F1, epochs."""

from __future__ import annotations

import json
from pathlib import Path

from regner.experiments.benchmark.profile import STAGES, Job, Profile


def run_dir(out: Path, job: Job, seed: int) -> Path:
    """``<out>/<dataset>/<stage>/<preset>/seed-<seed>``: names a Hydra override can quote-free (resume=DIR)."""
    return out / job.dataset / job.stage / job.preset / f"seed-{seed}"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_state(directory: Path) -> str:
    """completed | diverged | failed | interrupted (resumable) | abandoned (unfinished, nothing saved) | missing."""
    from regner.runs.directory import LAST_STATE, lock_holder

    status = read_json(directory / "status.json")
    if status is None:  # a run holds its directory's lock before it writes its first status.json
        if not directory.exists():
            return "missing"
        return "running" if lock_holder(directory) is not None else "abandoned"
    state = status.get("status")
    if state == "completed" and (directory / "metrics.json").exists():
        return "completed"
    if state == "failed":
        return "diverged" if status.get("diverged") else "failed"
    if lock_holder(directory) is not None:
        return "running"
    return "interrupted" if (directory / LAST_STATE).exists() else "abandoned"


def dev_f1(directory: Path) -> float | None:
    """The run's best dev F1; 0 for a diverged run; None when it has no result."""
    state = run_state(directory)
    if state == "diverged":
        return 0.0
    if state != "completed":
        return None
    return float(read_json(directory / "metrics.json")["dev"]["f1"])


def epochs_run(directories: list[Path]) -> str:
    """The epochs each finished run trained, "15 (cap)" where it used every allowed epoch without
    stopping early (more epochs might have changed its dev F1): "12", "9, 15 (cap)"."""
    labels = []
    for directory in directories:
        metrics = read_json(directory / "metrics.json") if run_state(directory) == "completed" else None
        if metrics and metrics.get("epochs") is not None:
            labels.append(f"{metrics['epochs']}{' (cap)' if hit_cap(directory)[0] else ''}")
    return ", ".join(labels)


def job_of(directory: Path) -> tuple[str, str, str, str]:
    """(dataset, regime, method, strength label) from a run directory ``<preset>/seed-N``."""
    preset = directory.parent.name
    dataset, regime, method, *value = preset.split(".", 3)
    return dataset, regime, method, value[0] if value else ""


def hit_cap(directory: Path) -> tuple[bool, bool]:
    """(ran every allowed epoch without early stopping, its best epoch was the last one)."""
    metrics = read_json(directory / "metrics.json") or {}
    stopping = metrics.get("early_stopping") or {}
    capped = bool(metrics) and not stopping.get("stopped") and metrics.get("epochs") == stopping.get("max_epochs")
    return capped, bool(metrics) and metrics.get("best_epoch") == metrics.get("epochs") == stopping.get("max_epochs")


FINISHED = ("completed", "failed", "diverged")


def run_directories(out: Path, profile: Profile) -> list[Path]:
    """Every run directory the benchmark on ``out`` has made so far, both stages, every dataset."""
    return [p for d in profile.datasets for s in STAGES for p in (out / d / s).glob("*/seed-*")]


def pending_jobs(out: Path, jobs: list[Job], seeds: list[int]) -> list[Job]:
    return [job for job in jobs if any(run_state(run_dir(out, job, s)) not in FINISHED for s in seeds)]

"""How long a benchmark will take, from what such runs measurably cost: the wall time per finished
run of this benchmark's own directory (an earlier, interrupted invocation on this machine), or else of a
committed benchmark of the same profile under ``docs/benchmarks/`` (another machine: the estimate says
which)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from regner.experiments.benchmark.profile import REPO, Profile, planned_runs
from regner.experiments.benchmark.runs import FINISHED, read_json, run_directories, run_state
from regner.runs.archive import expanded


@dataclass
class Cost:
    seconds_per_run: float  # wall time of the benchmark's invocations ÷ its finished runs (parallel jobs included)
    runs: int  # finished runs it was measured over
    source: Path
    machines: list[str]


def finished_runs(directory: Path, profile: Profile) -> int:
    with expanded(directory) as source:  # a committed benchmark keeps its runs compacted
        return sum(run_state(p) in FINISHED for p in run_directories(source, profile))


def measured_cost(out: Path, profile: Profile, spec: dict, references: Path | None = None,
                  done_in_out: int | None = None) -> Cost | None:
    """The cost per run measured in ``out`` itself, else in the newest committed benchmark (a directory
    under ``references``, default docs/benchmarks/) that ran the same profile; None when nothing has.
    ``done_in_out``: the finished runs of ``out`` when the caller has counted them already."""
    references = REPO / "docs" / "benchmarks" if references is None else references
    committed = sorted((p.parent for p in references.glob("*/profile.yaml")), reverse=True)
    for directory in [out, *committed]:
        timing = read_json(directory / "timing.json")
        if not isinstance(timing, dict) or not timing.get("invocations"):
            continue
        if directory != out:
            if _saved_profile(directory) != spec:
                continue
        done = done_in_out if directory == out and done_in_out is not None else finished_runs(directory, profile)
        seconds = sum(float(i.get("seconds", 0.0)) for i in timing["invocations"])
        if done and seconds > 0:
            machines = list(dict.fromkeys(i["machine"] for i in timing["invocations"] if i.get("machine")))
            return Cost(seconds / done, done, directory, machines)
    return None


def _saved_profile(directory: Path) -> dict | None:
    try:
        saved = yaml.safe_load((directory / "profile.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return saved.get("profile") if isinstance(saved, dict) else None


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def estimate_text(out: Path, profile: Profile, spec: dict, references: Path | None = None) -> str:
    """One paragraph: runs planned, finished, and the time the rest should take, with its source."""
    planned = planned_runs(profile)
    done = finished_runs(out, profile) if out.is_dir() else 0
    left = planned - done
    head = f"{planned} runs planned" + (f", {done} already finished in {out}" if done else "")
    if left <= 0:
        return f"{head}: nothing left to run (the report: --report-only)."
    cost = measured_cost(out, profile, spec, references, done)
    if cost is None:
        return (f"{head}; no measured cost yet for this profile (no earlier invocation in {out}, no committed "
                "benchmark of it under docs/benchmarks/), so no time estimate: the first finished runs give one "
                "(the progress bar shows it).")
    where = "this benchmark's own earlier runs" if cost.source == out else f"the committed benchmark {cost.source}"
    machines = "; ".join(cost.machines) or "an unrecorded machine"
    return (f"{head}; estimated {_duration(left * cost.seconds_per_run)} for the {left} left, at "
            f"{cost.seconds_per_run:.0f} s of wall time per run as measured over {cost.runs} runs of {where} "
            f"({machines}; another machine or --jobs scales it).")

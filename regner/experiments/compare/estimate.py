"""A comparison's time before any of its runs exists: the profile's ``estimate`` (seconds of one ``none`` run
per dataset on the profile's machine, each method's cost × none, and how much throughput several runs
sharing a device add), as docs/benchmarks/PROTOCOL.md derives it for the GPU profile. ``regner compare
dry_run=true`` prints it beside the run bound; once runs are cached their measured times take over."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Estimate:
    none_seconds: dict[str, float]  # dataset -> wall seconds of one `none` run, alone on the device
    cost: dict[str, float] = field(default_factory=dict)  # method -> its run time ÷ none's (1.0 where absent)
    parallel: float = 1.0  # throughput of the device with its runs side by side ÷ with one run
    note: str = ""  # where the figures come from

    def run_seconds(self, dataset: str, method: str) -> float:
        return self.none_seconds[dataset] * self.cost.get(method, 1.0)

    def seconds(self, runs: list[tuple[str, str]]) -> float:
        """Device wall seconds of (dataset, method) runs, ``parallel`` at a time."""
        return sum(self.run_seconds(d, m) for d, m in runs) / self.parallel


def parse_estimate(value: Any, datasets: list[str], methods: list[str],
                   error: Callable[[str, str], Exception]) -> Estimate | None:
    """The profile's ``estimate`` mapping, checked: every dataset timed, costs only for its methods;
    ``error(key, message)`` builds the exception that names the key."""
    if value is None:
        return None

    def fail(key: str, message: str) -> Exception:
        return error(f"estimate.{key}", message)

    if not isinstance(value, dict) or set(value) - {"none_seconds", "cost", "parallel", "note"}:
        raise error("estimate", f"a mapping of none_seconds, cost, parallel, note; got {value!r}")
    none = value.get("none_seconds")
    if not isinstance(none, dict) or sorted(none) != sorted(datasets) or not all(_positive(v) for v in none.values()):
        raise fail("none_seconds", f"seconds (> 0) of one none run for each dataset ({', '.join(datasets)}), "
                   f"got {none!r}")
    cost = value.get("cost") or {}
    if not isinstance(cost, dict) or set(cost) - set(methods) or not all(_positive(v) for v in cost.values()):
        raise fail("cost", f"each method's cost × none (> 0), methods among {', '.join(methods)}; got {cost!r}")
    parallel = value.get("parallel", 1.0)
    if not _positive(parallel) or parallel < 1:
        raise fail("parallel", f"a number ≥ 1 (throughput gain of runs sharing a device), got {parallel!r}")
    return Estimate({k: float(v) for k, v in none.items()}, {k: float(v) for k, v in cost.items()}, float(parallel),
                    str(value.get("note") or ""))


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _side_by_side(profile) -> str:
    """What runs side by side: runs per GPU, or the CPU jobs."""
    if profile.devices == "cpu" or (profile.devices == "auto" and profile.jobs_per_device == 1 and profile.jobs > 1):
        return f"{profile.jobs} CPU jobs"
    return f"{profile.jobs_per_device} runs per device"


def plan_lines(profile, race_arms: dict[tuple[str, str, str], int]) -> list[str]:
    """The estimate's lines of the plan: one seed of everything, the first look, the whole bound."""
    e: Estimate = profile.estimate
    compared = [(d, m) for d, r in profile.cells() for m in profile.methods_in(r, d)]
    racing = [(d, m) for (d, _, m), arms in race_arms.items() for _ in range(arms * profile.tuning.rungs[-1])]
    per_seed = e.seconds(compared)
    first = per_seed * profile.design.looks[0]
    bound = per_seed * profile.design.looks[-1] + e.seconds(racing)
    lines = [f"estimate ({e.note or 'the profile'}): one seed of every method on every dataset ≈ {hours(per_seed)}; "
             f"the first look ({profile.design.looks[0]} seeds{', after racing' if racing else ''}) ≈ "
             f"{hours(first + e.seconds(racing))}; every look ≈ {hours(bound)} "
             f"({e.parallel:g}× one run's throughput from {_side_by_side(profile)})"]
    if profile.max_hours:
        fits = "fits" if first + e.seconds(racing) <= profile.max_hours * 3600 else "does not fit"
        lines.append(f"budget {profile.max_hours:g} h: the first look {fits}; the budget stops the later looks where "
                     "it runs out (rows then read budget exhausted, with the MDE reached)")
    return lines

"""The rounds of a sequential comparison: which runs to train next, and when to stop.

Every method is compared with ``none`` on shared seeds (same seed = same initialisation and data
order). A round brings every *open* method to the design's next look; ``none`` runs the seeds the
longest open method needs, once for all of them. After a round each open method is decided
(:func:`~regner.experiments.compare.sequential.decide`); the comparison ends when none is open, or
when the next round would exceed the run budget, which leaves the open ones *exhausted* at the look
they reached. What a run costs and how it is trained is the caller's: :class:`Comparison` only asks
for (method, seed) results through ``run``, so the same rounds drive real training, a cache of
finished runs, or a replay of a benchmark that already ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from regner.experiments.compare.sequential import Decision, Design, decide

BASELINE = "none"


@dataclass
class Result:
    """One finished run as the comparison uses it: the judged F1 (test, or dev where there is none) and
    whether it collapsed (a diverged run is F1 0 and collapsed)."""

    f1: float
    collapsed: bool = False


@dataclass
class MethodState:
    name: str
    look: int = -1  # the last look decided (-1: none yet)
    decision: Decision | None = None
    stopped_by: str = ""  # "" while open; "decision" or "budget"

    @property
    def open(self) -> bool:
        return not self.stopped_by


@dataclass
class Comparison:
    methods: list[str]  # the methods compared with none (not none itself)
    seeds: list[int]  # the seed order, at least as long as the design's last look
    design: Design
    run: Callable[[str, int], Result]  # (method, seed) -> its result; trains, or reads a cached run
    max_runs: int | None = None  # budget over every run this comparison asks for (cached ones included)
    results: dict[tuple[str, int], Result] = field(default_factory=dict)
    states: dict[str, MethodState] = field(default_factory=dict)

    def __post_init__(self):
        if BASELINE in self.methods:
            raise ValueError("`none` is the baseline of every comparison; do not list it among the methods")
        if len(self.seeds) < self.design.looks[-1] or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"need {self.design.looks[-1]} distinct seeds for the design's last look")
        self.states = {m: MethodState(m) for m in self.methods}

    # -- what the next round needs -----------------------------------------------------------------
    def next_round(self) -> list[tuple[str, int]]:
        """The (method, seed) runs that bring every open method to its next look, none included."""
        wanted: list[tuple[str, int]] = []
        deepest = 0
        for state in self.states.values():
            if state.open:
                n = self.design.looks[state.look + 1]
                deepest = max(deepest, n)
                wanted += [(state.name, s) for s in self.seeds[:n]]
        wanted = [(BASELINE, s) for s in self.seeds[:deepest]] + wanted
        return [key for key in wanted if key not in self.results]

    @property
    def runs_used(self) -> int:
        return len(self.results)

    # -- one round, and the whole comparison ---------------------------------------------------------
    def step(self) -> bool:
        """Run the next round and decide; False when nothing is open any more (or the budget stopped it)."""
        if not any(s.open for s in self.states.values()):
            return False
        needed = self.next_round()
        if self.max_runs is not None and self.runs_used + len(needed) > self.max_runs:
            self.exhaust(f"the run budget ({self.max_runs}) ends before the next look")
            return False
        for method, seed in needed:
            self.results[(method, seed)] = self.run(method, seed)
        return self.advance()

    def advance(self, watch: set[str] = frozenset()) -> bool:
        """Decide every open method at its next look, once the round's results are in ``results``.

        A method that collapsed on a seed it used is *unstable* (collapse is a verdict of its own, as in
        the report; its F1 of 0 would otherwise swamp the mean). A method in ``watch`` (the driver's
        collapse watch: a run of this regime collapsed) is not stopped as futile or equivalent before the
        last look: its verdict must rest on as many seeds as the design allows, since a rare collapse is
        only seen by running seeds. Where ``none`` itself collapsed on a seed used, no method is called
        better or worse than it (such a difference would be none's failure, not the method's effect).
        Returns whether any method is still open."""
        for state in self.states.values():
            if not state.open:
                continue
            state.look += 1
            n = self.design.looks[state.look]
            state.decision = decide(self.differences(state.name), self.design, state.look)
            collapsed = [s for s in self.seeds[:n] if self.results[(state.name, s)].collapsed]
            baseline = [s for s in self.seeds[:n] if self.results[(BASELINE, s)].collapsed]
            last = state.look == len(self.design.looks) - 1
            if collapsed:
                decision = state.decision
                decision.state = "unstable"
                decision.reason = (f"collapsed (dev F1 below 0.05, or diverged) on {len(collapsed)} of {n} seeds "
                                   f"(seed {', '.join(map(str, collapsed))})")
            elif baseline and state.decision.state in ("better", "worse"):
                state.decision.details["held_open"] = state.decision.state
                state.decision.reason = (f"none collapsed on seed {', '.join(map(str, baseline))}: no verdict against "
                                         f"it ({state.decision.reason})")
                state.decision.state = "exhausted" if last else "open"
            elif state.name in watch and state.decision.state in ("futile", "equivalent") and not last:
                state.decision.details["held_open"] = state.decision.state
                state.decision.reason = (f"would be {state.decision.state}, but a run of this regime collapsed: it "
                                         f"runs to the last look (collapse watch; {state.decision.reason})")
                state.decision.state = "open"
            if state.decision.state != "open":
                state.stopped_by = "decision"
        return any(s.open for s in self.states.values())

    def exhaust(self, why: str) -> None:
        """The budget ends the comparison: every open method is *exhausted* at the look it reached."""
        for state in self.states.values():
            if state.open:
                state.stopped_by = "budget"
                if state.decision is not None:
                    state.decision.state, state.decision.reason = "exhausted", f"{why}; {state.decision.reason}"

    @property
    def collapsed_methods(self) -> set[str]:
        """The methods with a collapsed run among the results so far."""
        return {method for (method, _), result in self.results.items() if result.collapsed and method != BASELINE}

    def differences(self, method: str) -> list[float]:
        """method − none per seed, in seed order, for the seeds both have."""
        out = []
        for seed in self.seeds:
            mine, base = self.results.get((method, seed)), self.results.get((BASELINE, seed))
            if mine is None or base is None:
                break
            out.append(mine.f1 - base.f1)
        return out

    def run_all(self) -> dict[str, MethodState]:
        while self.step():
            pass
        return self.states


def result_from_record(record, attribute: str) -> Result:
    """A report :class:`~regner.experiments.report.records.RunRecord` as a :class:`Result`."""
    if record.status == "diverged":
        return Result(0.0, True)
    value = getattr(record, attribute)
    return Result(value if not math.isnan(value) else 0.0, bool(record.collapsed))

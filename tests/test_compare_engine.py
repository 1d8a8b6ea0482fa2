"""The rounds of a sequential comparison, driven by a stand-in trainer: which runs it asks for, when it
stops, the budget, and that a finished run is never asked for twice."""

from __future__ import annotations

import random

import pytest

from regner.experiments.compare.engine import Comparison, Result
from regner.experiments.compare.sequential import Design

DESIGN = Design(looks=(3, 5, 8), methods=3, delta=0.01)
SEEDS = list(range(1, 9))


def trainer(effects: dict[str, tuple[float, float]], calls: list):
    """F1 = 0.80 + a per-seed shift shared by every method (same seed = same init) + the method's effect
    + its own noise; every call is recorded."""
    shared = {s: random.Random(s).gauss(0, 0.02) for s in SEEDS}

    def run(method: str, seed: int) -> Result:
        calls.append((method, seed))
        effect, noise = effects.get(method, (0.0, 0.0))
        return Result(0.80 + shared[seed] + effect + random.Random(f"{method}-{seed}").gauss(0, noise))

    return run


def test_rounds_stop_each_method_at_its_decision_and_never_train_a_run_twice():
    calls: list = []
    run = trainer({"helps": (0.05, 0.001), "same": (0.0, 0.0005), "noisy": (0.0, 0.05)}, calls)
    comparison = Comparison(["helps", "same", "noisy"], SEEDS, DESIGN, run)
    states = comparison.run_all()
    assert states["helps"].decision.state == "better" and states["helps"].decision.n == 3
    assert states["same"].decision.state == "equivalent"
    assert states["noisy"].decision.state in ("futile", "exhausted")
    assert len(calls) == len(set(calls)) == comparison.runs_used
    # none ran the seeds of the longest method, and no more
    deepest = max(s.decision.n for s in states.values())
    assert sorted(seed for method, seed in calls if method == "none") == SEEDS[:deepest]
    assert all(seed in SEEDS[:states[m].decision.n] for m, seed in calls if m != "none")


def test_finished_runs_are_reused_not_retrained():
    first_calls: list = []
    effects = {"a": (0.0, 0.05), "b": (0.0, 0.05)}
    first = Comparison(["a", "b"], SEEDS, DESIGN, trainer(effects, first_calls))
    first.run_all()
    again_calls: list = []
    again = Comparison(["a", "b"], SEEDS, DESIGN, trainer(effects, again_calls), results=dict(first.results))
    again.run_all()  # an interrupted comparison continued: every finished run is read back, none retrained
    assert again_calls == [] and {m: s.decision.state for m, s in again.states.items()} == {
        m: s.decision.state for m, s in first.states.items()}


def test_the_budget_stops_before_a_round_that_would_exceed_it():
    # a steady +0.5 point (± 0.1): too little evidence to decide at 3 seeds, and clearly decidable by 8: open
    steady = [0.006, 0.004, 0.005, 0.006, 0.004, 0.005, 0.006, 0.004]
    calls: list = []

    def run(method: str, seed: int) -> Result:
        calls.append((method, seed))
        return Result(0.80 + (0.0 if method == "none" else steady[seed - 1]))

    comparison = Comparison(["a", "b"], SEEDS, DESIGN, run, max_runs=9)
    comparison.run_all()
    assert comparison.runs_used == len(calls) == 9  # one round of 3 seeds × (none, a, b); the next needs 6 more
    for state in comparison.states.values():
        assert state.stopped_by == "budget" and state.decision.n == 3
        assert state.decision.state == "exhausted" and "run budget (9)" in state.decision.reason
    unlimited = Comparison(["a", "b"], SEEDS, DESIGN, run)
    unlimited.run_all()
    assert {s.decision.state for s in unlimited.states.values()} == {"better"}  # what the budget cut short


def test_a_comparison_is_set_up_correctly_or_refused():
    with pytest.raises(ValueError, match="baseline"):
        Comparison(["none", "a"], SEEDS, DESIGN, lambda m, s: Result(0.5))
    with pytest.raises(ValueError, match="distinct seeds"):
        Comparison(["a"], [1, 2, 3], DESIGN, lambda m, s: Result(0.5))

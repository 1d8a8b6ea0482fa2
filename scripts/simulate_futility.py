"""How `futility_from` trades seeds for power (docs/benchmarks/PROTOCOL.md, "Futility"): rows simulated
through the engine's own `run_sequence` with normal paired differences, for each rule and family size.

    .venv/bin/python scripts/simulate_futility.py          # 4,000 rows per cell: ~1 min on one core
"""

from __future__ import annotations

import random
import statistics

from regner.experiments.compare.sequential import Design, run_sequence

CASES = ((0.0, 0.02), (0.02, 0.01), (0.03, 0.015), (0.05, 0.02), (0.0, 0.003))  # (true Δ, paired SD) in F1


def simulate(design: Design, true: float, sd: float, rows: int = 4000, seed: int = 7) -> tuple[dict, float]:
    rng = random.Random(seed)
    states, seeds = {}, []
    for _ in range(rows):
        decision = run_sequence([rng.gauss(true, sd) for _ in range(design.looks[-1])], design, explain=False)
        states[decision.state] = states.get(decision.state, 0) + 1
        seeds.append(decision.n)
    return {k: v / rows for k, v in sorted(states.items())}, statistics.fmean(seeds)


def main() -> None:
    print("| rows | futility_from | true Δ | SD | better | equivalent | futile | exhausted | mean seeds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for methods in (15, 44):
        for start in (2, 3):
            design = Design(looks=(2, 3, 4, 5), methods=methods, delta=0.01, futility_from=start)
            for true, sd in CASES:
                states, seeds = simulate(design, true, sd)
                print(f"| {methods} | {start} | {100 * true:+.1f} | {100 * sd:.1f} | "
                      + " | ".join(f"{states.get(s, 0):.3f}" for s in ("better", "equivalent", "futile", "exhausted"))
                      + f" | {seeds:.2f} |")


if __name__ == "__main__":
    main()

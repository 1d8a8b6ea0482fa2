"""Benchmark v2: which regularizer helps, by how much, at what cost (docs/benchmarks/PROTOCOL.md).

A *profile* (``scripts/matrices/<name>.yaml``) names the regimes (a pretrained encoder and the same
architecture from random init), the datasets, the settings every run shares, the methods with their
strength grids, and the seeds of the two stages:

1. **tune**: every method at every strength of its grid, ``tune.seeds`` (1–2 seeds), judged on dev F1;
   the best strength per (dataset, regime, method) is chosen (a collapsed or diverged run counts as
   its dev F1, 0 when diverged; ties go to the strength nearest the default);
2. **final**: ``none`` and every method at its chosen strength, ``final.seeds`` (≥ 5, disjoint from the
   tune seeds, shared across methods: same seed = same init and data order), judged on test F1 with
   paired per-seed differences against ``none``, Holm-corrected over the whole report.

Every run is a ``regner sweep`` job launched by Hydra's joblib launcher (``jobs`` in parallel with the
cores split between them). Each (dataset, regime, method, strength) is a generated ``experiment``
preset in ``<out>/presets/experiment/``, so one sweep per (dataset, stage) balances the load. A sweep
rerun skips completed runs; interrupted ones are resumed first from their saved state, so an interrupted
benchmark picks up where it stopped. Costs (time per step and peak memory relative to ``none``) come from
``scripts/bench_throughput.py``, run alone in one process once the training is done.
"""

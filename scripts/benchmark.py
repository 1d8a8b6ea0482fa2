#!/usr/bin/env python
"""Benchmark v2 (docs/benchmarks/PROTOCOL.md): which regularizer helps, by how much, at what cost.

    python scripts/benchmark.py                        # what `make benchmark` runs (profile cpu; after `make pretrain`)
    python scripts/benchmark.py --profile gpu --encoder /models/bert-base-chinese
    python scripts/benchmark.py --dry-run              # the plan only
    python scripts/benchmark.py --report-only          # the report from what has run so far

Stage 1 tunes each regularizer's strength on dev, stage 2 runs `none` and every regularizer at its
chosen strength over shared seeds, in the pretrained and the random-init regime; then the costs are
measured alone (scripts/bench_throughput.py) and the report is written to
outputs/benchmark/<profile>/report.md. Rerunning the same command continues an interrupted benchmark.
The logic lives in regner/experiments/benchmark/.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regner.experiments.benchmark.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

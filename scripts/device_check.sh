#!/usr/bin/env bash
# regner's device check: scripts/device_check.sh OUT [--cpu]
#   On a GPU machine (≤ 8 minutes on one H200): the CUDA tests, throughput/MFU of a BERT-base-shaped encoder with
#   every regularizer's cost, peak memory at 32 × 128 and 8 × 512 tokens, a smoke `regner compare`; results (JSON +
#   markdown) in OUT. --cpu: the same steps at small shapes on a CPU (CI runs it).
# Needs only a Python with torch (PYTHON, default python3) and a checkout of regner; packages the machine lacks
# come from .whl/ (`make gpu-wheels`), installed into a scratch directory on PYTHONPATH (only where that Python cannot
# import them), the machine's torch untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    echo "usage: scripts/device_check.sh OUT [--cpu]" >&2
    exit 2
fi
python=${PYTHON:-python3}
site=""
if ! "$python" -c "import hydra, omegaconf, seqeval, datasets" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    site=$(mktemp -d "${TMPDIR:-/tmp}/regner-site.XXXXXX")
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
fi
export PYTHONPATH="$PWD${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
exec "$python" scripts/device_check.py "$@"

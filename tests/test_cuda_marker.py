"""The GPU suite on a machine without CUDA (CI): the ``cuda`` marker is registered, and every test of
tests/test_cuda.py is collected and skipped with its reason, none errored (an import or fixture error in
the GPU suite would show up here, not first on a GPU)."""

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def test_the_cuda_suite_skips_cleanly_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: pytest -m cuda runs the suite itself")
    report = tmp_path / "cuda.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-n", "0", "--strict-markers",
                             "-p", "no:cacheprovider", f"--junitxml={report}", "tests/test_cuda.py"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    cases = ElementTree.parse(report).getroot().iter("testcase")
    outcomes = [(case.get("name"), [child.tag for child in case]) for case in cases]
    assert len(outcomes) >= 25  # 10 regularizers × 2 precisions, and the rest
    assert all(tags == ["skipped"] for _, tags in outcomes), [o for o in outcomes if o[1] != ["skipped"]]
    markers = subprocess.run([sys.executable, "-m", "pytest", "--markers"], cwd=REPO, capture_output=True,
                             text=True, timeout=120).stdout
    assert "@pytest.mark.cuda: needs a CUDA GPU" in markers

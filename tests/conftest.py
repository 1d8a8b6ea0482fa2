import os
import tempfile
from pathlib import Path

import pytest

# Keep the tokenised-feature cache of test runs out of the user's ~/.cache.
os.environ.setdefault("REGNER_CACHE", tempfile.mkdtemp(prefix="regner-test-cache-"))

# The suite runs in pytest-xdist workers (pyproject's addopts): each worker, and every process a test
# starts, gets its share of the cores (at most 2 threads), so 2 workers on 2 cores run 2 threads, not 4.
THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def pytest_configure(config):
    import torch

    torch.set_num_threads(THREADS)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REGNER_DATA", REPO.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test when that corpus is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="session")
def char_tokenizer():
    """The tiny encoder's tokenizer over a small character vocabulary."""
    from regner.model.encoder import build_char_vocab, tiny_tokenizer

    return tiny_tokenizer(build_char_vocab(["北京大学张三在上海工作。今天天气很好", "华为ABC公司2019年"]))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One small demo model for every test that only reads it (predict, evaluate, export, submission)."""
    from .test_cli import TINY, regner, run_dirs

    cwd = tmp_path_factory.mktemp("train")
    result = regner("train", *TINY, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    return run_dir


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    """``trained_run`` exported to ONNX through the CLI (the export tests check it; serving reuses it)."""
    pytest.importorskip("onnxruntime")
    from .test_cli import regner

    output = tmp_path_factory.mktemp("export") / "onnx"
    result = regner("export", f"ckpt={trained_run}", f"output={output}", cwd=output.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    return output

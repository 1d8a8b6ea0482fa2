"""End-to-end runs of the ``regner`` command on tiny data (a few seconds each)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["data.train_size=240", "data.dev_size=60", "data.test_size=60", "trainer.max_epochs=2",
        "trainer.progress=false", "encoder.hidden_size=64", "encoder.intermediate_size=128", "head.head_size=32"]


def regner(*args, cwd):
    return subprocess.run([sys.executable, "-m", "regner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})


def run_dirs(root: Path):
    return sorted(p.parent for p in root.glob("outputs/*/*/status.json"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("train")
    result = regner("train", *TINY, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    return run_dir


def test_train_writes_a_complete_run(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert json.loads((trained_run / "status.json").read_text())["status"] == "completed"
    assert metrics["run"]["regularizer"] == "none" and metrics["run"]["dataset"] == "demo"
    assert 0 <= metrics["dev"]["f1"] <= 1 and set(metrics["dev"]["per_type"]) == {"DATE", "LOC", "ORG", "PER", "TITLE"}
    assert metrics["test"] is not None and metrics["train"]["tokens_per_s"] > 0
    assert metrics["dev"]["seqeval"] is None  # the demo corpus is nested
    history = [json.loads(line) for line in (trained_run / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]
    resolved = (trained_run / "config.yaml").read_text()
    assert "${" not in resolved and "train_size: 240" in resolved
    assert {"config.json", "model.safetensors", "tokenizer.json", "globalpointer_head.safetensors",
            "regner_config.json"} <= {p.name for p in (trained_run / "checkpoint").iterdir()}


def test_checkpoint_reloads_and_reproduces_dev_f1(trained_run):
    from omegaconf import OmegaConf

    from regner.data.loading import load_splits
    from regner.model import SpanModel
    from regner.trainer import encode_split, evaluate

    cfg = OmegaConf.load(trained_run / "config.yaml")
    model, tokenizer, saved = SpanModel.from_pretrained(trained_run / "checkpoint")
    splits = load_splits(cfg.data)
    dev = encode_split("dev", splits.dev, tokenizer, {label: i for i, label in enumerate(model.labels)}, cfg.data)
    scores, _ = evaluate(model, dev, "cpu", 64, saved["threshold"])
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert scores["f1"] == pytest.approx(metrics["dev"]["f1"])


def test_bad_input_fails_cleanly_without_metrics(tmp_path):
    result = regner("train", "data=jsonl", "data.train=missing.jsonl", "trainer.progress=false", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.jsonl: file not found" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    (run_dir,) = run_dirs(tmp_path)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "file not found" in status["reason"]
    assert not (run_dir / "metrics.json").exists()


def test_unknown_group_option_is_hydras_error(tmp_path):
    result = regner("train", "regularizer=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'regularizer/nope'" in result.stderr

"""End-to-end runs of the ``regner`` command on tiny data (a few seconds each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import THREADS

TINY = ["data.train_size=600", "data.dev_size=100", "data.test_size=60", "trainer.max_epochs=4",
        "trainer.batch_size=16", "trainer.progress=false", "encoder.hidden_size=64", "encoder.intermediate_size=128",
        "head.head_size=32"]


def cli_env() -> dict[str, str]:
    """The environment of a ``regner`` command started by a test: offline, this checkout, its share of the cores."""
    return {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": str(THREADS),
            "REGNER_CACHE": os.environ["REGNER_CACHE"], "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def regner(*args, cwd, stdin=None):
    return subprocess.run([sys.executable, "-m", "regner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=cli_env(), input=stdin)


def run_dirs(root: Path):
    return sorted(p.parent for p in root.glob("outputs/*/*/status.json"))


def test_train_writes_a_complete_run(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert json.loads((trained_run / "status.json").read_text())["status"] == "completed"
    assert metrics["run"]["regularizer"] == "none" and metrics["run"]["dataset"] == "demo"
    assert metrics["dev"]["f1"] > 0.5 and set(metrics["dev"]["per_type"]) == {"DATE", "LOC", "ORG", "PER", "TITLE"}
    assert metrics["test"] is not None and metrics["train"]["tokens_per_s"] > 0
    assert metrics["train"]["peak_memory_mb"] is None and metrics["train"]["process_max_rss_mb"] > 0  # CPU
    assert metrics["dev"]["seqeval"] is None  # the demo corpus is nested
    history = [json.loads(line) for line in (trained_run / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    resolved = (trained_run / "config.yaml").read_text()
    assert "${" not in resolved and "train_size: 600" in resolved
    assert {"config.json", "model.safetensors", "tokenizer.json", "globalpointer_head.safetensors",
            "regner_config.json"} <= {p.name for p in (trained_run / "checkpoint").iterdir()}


def test_checkpoint_reloads_and_reproduces_dev_f1(trained_run):
    from omegaconf import OmegaConf

    from regner.data.loading import load_splits
    from regner.inference.evaluation import encode_split, evaluate
    from regner.model.span_model import SpanModel

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
    assert status["run"]["regularizer"] == "none"  # the run's own record is kept, so a report counts it
    assert not (run_dir / "metrics.json").exists()


def test_unknown_group_option_names_the_choices(tmp_path):
    """Hydra's own 'Could not find regularizer/nope' exited 1; regner checks first (issue #29)."""
    result = regner("train", "regularizer=nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "regularizer='nope' is not valid: expected one of awp, fgm" in result.stderr and "Did you mean none" in \
        result.stderr


def demo_dev(run_dir):
    from omegaconf import OmegaConf

    from regner.data.loading import load_splits

    return load_splits(OmegaConf.load(run_dir / "config.yaml").data).dev


def test_evaluate_writes_the_same_metrics_as_training(trained_run, tmp_path):
    result = regner("evaluate", f"ckpt={trained_run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (metrics_file,) = tmp_path.glob("outputs/evaluate/*/*/metrics.json")
    evaluated = json.loads(metrics_file.read_text())
    trained = json.loads((trained_run / "metrics.json").read_text())
    for split in ("dev", "test"):
        assert evaluated[split]["f1"] == pytest.approx(trained[split]["f1"])
        assert evaluated[split]["per_type"] == trained[split]["per_type"]


def test_predict_round_trip_scores_like_evaluate(trained_run, tmp_path):
    from regner.data.types import Entity
    from regner.inference.metrics import span_scores

    dev = demo_dev(trained_run)
    texts = "".join(json.dumps({"text": ex.text}, ensure_ascii=False) + "\n" for ex in dev)
    (tmp_path / "dev.jsonl").write_text(texts, encoding="utf-8")
    result = regner("predict", f"ckpt={trained_run / 'checkpoint'}", "input=dev.jsonl", "output=pred.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == [ex.text for ex in dev]
    for row in rows:
        for e in row["entities"]:
            assert row["text"][e["start"]:e["end"]] == e["text"] and 0.5 < e["score"] <= 1.0
    predicted = [[Entity(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in rows]
    f1 = span_scores([ex.entities for ex in dev], predicted)["f1"]
    assert f1 == pytest.approx(json.loads((trained_run / "metrics.json").read_text())["dev"]["f1"])


def test_predict_plain_lines_from_stdin(trained_run, tmp_path):
    result = regner("predict", f"ckpt={trained_run}", cwd=tmp_path, stdin="张伟担任北京大学校长。\n\n")
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = [json.loads(line) for line in result.stdout.splitlines()]
    assert first["text"] == "张伟担任北京大学校长。" and second == {"text": "", "entities": []}
    assert {"start", "end", "type", "text", "score"} <= set(first["entities"][0])


def test_predict_errors_name_the_problem(trained_run, tmp_path):
    bad = regner("predict", f"ckpt={trained_run}", "on_error=fail", cwd=tmp_path, stdin='好\n{"text": \n')
    assert bad.returncode == 2 and "<stdin>:2: malformed JSON" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stdout == ""  # on_error=fail: nothing half-written
    missing = regner("predict", "ckpt=nowhere", cwd=tmp_path, stdin="")
    assert missing.returncode == 2 and "nowhere: no such run or checkpoint directory" in missing.stderr


@pytest.mark.parametrize("args,message", [
    (["encoder=pretrained", "encoder.pretrained=empty_dir"], "a directory without config.json is not a transformers model"),
    (["trainer.device=cuda"], "CUDA is not available"),
    (["data=jsonl", "data.train=empty.jsonl"], "the training split of 'jsonl' is empty"),
    (["data=jsonl", "data.train=bad.jsonl"], "bad.jsonl:2: malformed JSON"),
    (["data=conll", "data.train=bad.bmes", "data.scheme=bmes", "data.on_invalid=error"],
     "bad.bmes:2: tag 'E-PER' at token 1 continues no open PER entity"),
])
def test_user_errors_are_one_clear_paragraph(tmp_path, args, message):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"text": "好"}\n{"text": "坏"\n')
    (tmp_path / "bad.bmes").write_text("张 O\n三 E-PER\n")
    result = regner("train", *args, "trainer.progress=false", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("dataset,types,train_limit", [
    pytest.param("cluener", 10, 300, marks=pytest.mark.slow), ("weibo", 8, "null"),
    pytest.param("msra", 3, 300, marks=pytest.mark.slow)])  # one real dataset in the fast suite (~27 s each)
def test_real_datasets_train_and_report_per_type(tmp_path, dataset, types, train_limit):
    from .conftest import SHARED_DATA, shared

    shared(dataset)
    result = regner("train", f"data={dataset}", f"data.max_train_samples={train_limit}", "data.max_eval_samples=100",
                    "trainer.max_epochs=1", "trainer.progress=false", "encoder.hidden_size=32", "encoder.num_layers=1",
                    "encoder.intermediate_size=64", f"data.root={SHARED_DATA}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = run_dirs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["dev"]["per_type"]) == types and metrics["run"]["dataset"] == dataset
    assert metrics["dev"]["seqeval"] is not None  # all three dev sets are flat, so seqeval's report is there
    log = (run_dir / "regner.log").read_text()
    assert "type" in log and "F1" in log
    if dataset == "msra":
        assert "msra has no dev split: carved" in log

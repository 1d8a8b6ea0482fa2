"""Resume and reproducibility: interrupted + resumed == uninterrupted, and same seed == same run."""

import json

import pytest

from regner.training.run import run_training
from regner.training.trainer import Trainer

from .helpers import killed
from .test_training import compose_config

# one thread: trainer.num_threads=auto follows the machine's load, and these tests compare two runs bit for bit
# (rdrop's same-seed pair differed in the last bits once on a clean-clone CI run while another job loaded the machine)
SETTINGS = ["data.train_size=160", "data.dev_size=40", "data.test_size=40", "trainer.max_epochs=3",
            "trainer.batch_size=16", "encoder.dropout=0.1", "trainer.num_threads=1"]


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def comparable(metrics):
    return {k: metrics[k] for k in ("dev", "test", "best_epoch", "epochs")} | {"steps": metrics["train"]["steps"]}


@pytest.mark.parametrize("regularizer", ["none", "rdrop"])
def test_same_seed_same_metrics(tmp_path, regularizer):
    cfg = compose_config(*SETTINGS, f"regularizer={regularizer}")
    first = run_training(cfg, tmp_path / "a")
    second = run_training(cfg, tmp_path / "b")
    assert comparable(first) == comparable(second)
    assert [r["train"] for r in history(tmp_path / "a")] == [r["train"] for r in history(tmp_path / "b")]


@pytest.mark.parametrize("method", [("regularizer=rdrop",),
                                    # EMA's average and AWP's start epoch must survive the resume too
                                    ("regularizer=awp", "regularizer.start_epoch=2", "trainer.ema.decay=0.8")],
                         ids=["rdrop", "awp+ema"])
@pytest.mark.parametrize("stop_at", [7, 10])  # mid-epoch (10 batches per epoch) and exactly at an epoch end
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, monkeypatch, stop_at, method):
    cfg = compose_config(*SETTINGS, *method, "trainer.save_every_steps=3")
    reference = run_training(cfg, tmp_path / "reference")

    killed(monkeypatch, cfg, tmp_path / "resumed", stop_at)
    status = json.loads((tmp_path / "resumed" / "status.json").read_text())
    assert status["status"] == "failed" and not (tmp_path / "resumed" / "metrics.json").exists()
    resumed = run_training(cfg, tmp_path / "resumed", resume=True)
    assert comparable(resumed) == comparable(reference)
    assert [r["dev"] for r in history(tmp_path / "resumed")] == [r["dev"] for r in history(tmp_path / "reference")]


def test_a_resumed_run_reports_the_wall_time_of_every_invocation(tmp_path, monkeypatch):
    # The first invocation runs on a clock that jumps 100 s per reading: its saved time must count in the
    # resumed run's wall time (it used to report only the last invocation's, below its own training time)
    import time

    cfg = compose_config(*SETTINGS, "trainer.save_every_steps=3")
    original, real_clock = Trainer.training_step, time.perf_counter
    readings = {"n": 0}

    def jumping_clock():
        readings["n"] += 1
        return real_clock() + 100.0 * readings["n"]

    def killed(self, batch):
        if self.state.global_step >= 7:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(time, "perf_counter", jumping_clock)
    monkeypatch.setattr(Trainer, "training_step", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "run")
    monkeypatch.setattr(time, "perf_counter", real_clock)
    monkeypatch.setattr(Trainer, "training_step", original)
    train = run_training(cfg, tmp_path / "run", resume=True)["train"]
    assert train["train_time_s"] >= 100.0 and train["wall_time_s"] >= train["train_time_s"]
    elapsed = [row["elapsed_s"] for row in history(tmp_path / "run")]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 100.0


@pytest.mark.slow  # ~50 s; the SIGTERM test resumes through the CLI too
def test_resume_via_cli_continues_in_the_same_directory(tmp_path, monkeypatch):
    from .test_cli import regner, run_dirs

    args = ["data.train_size=100", "data.dev_size=30", "data.test_size=0", "trainer.max_epochs=2",
            "trainer.progress=false", "encoder.hidden_size=32", "encoder.num_layers=1", "encoder.intermediate_size=64"]
    first = regner("train", *args, "trainer.max_epochs=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir,) = run_dirs(tmp_path)
    again = regner("train", f"resume={run_dir}", cwd=tmp_path)
    assert again.returncode == 2 and "already completed" in again.stdout + again.stderr
    # make it look interrupted: pretend the run never finished and ask for 2 epochs
    (run_dir / "metrics.json").unlink()
    (run_dir / "status.json").write_text(json.dumps({"status": "failed", "reason": "KeyboardInterrupt"}))
    config = (run_dir / "config.yaml").read_text().replace("max_epochs: 1", "max_epochs: 2")
    (run_dir / "config.yaml").write_text(config)
    resumed = regner("train", "trainer.resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert run_dirs(tmp_path) == [run_dir]
    assert [row["epoch"] for row in history(run_dir)] == [1, 2]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def kill_final_evaluation_once(monkeypatch):
    original = Trainer.final_metrics
    calls = {"n": 0}

    def killed(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "final_metrics", killed)


def test_run_killed_during_final_evaluation_resumes_to_the_same_result(tmp_path, monkeypatch):
    cfg = compose_config(*SETTINGS, "trainer.max_epochs=2")
    reference = run_training(cfg, tmp_path / "reference")
    kill_final_evaluation_once(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "resumed")
    resumed = run_training(cfg, tmp_path / "resumed", resume=True)
    assert comparable(resumed) == comparable(reference)
    assert len(history(tmp_path / "resumed")) == 2


def scripted_dev_f1(monkeypatch, sequence):
    """Epoch-end evaluations report the F1 values of ``sequence`` (the final evaluation is real)."""
    import regner.training.trainer as trainer_module

    real = trainer_module.evaluate
    calls = {"n": 0}

    def scripted(*args, **kwargs):
        scores, merged = real(*args, **kwargs)
        if not kwargs.get("with_seqeval"):
            scores = {**scores, "f1": sequence[min(calls["n"], len(sequence) - 1)]}
            calls["n"] += 1
        return scores, merged

    monkeypatch.setattr(trainer_module, "evaluate", scripted)
    return calls


def test_early_stopping_decision_survives_a_resume(tmp_path, monkeypatch):
    cfg = compose_config(*SETTINGS, "trainer.max_epochs=4", "trainer.patience=1")
    scripted_dev_f1(monkeypatch, [0.5, 0.4, 0.6, 0.7])
    reference = run_training(cfg, tmp_path / "reference")
    assert reference["epochs"] == 2 and len(history(tmp_path / "reference")) == 2

    scripted_dev_f1(monkeypatch, [0.5, 0.4, 0.6, 0.7])
    kill_final_evaluation_once(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "resumed")
    scripted_dev_f1(monkeypatch, [0.6, 0.7])  # what epoch 3 would report if it were (wrongly) trained
    resumed = run_training(cfg, tmp_path / "resumed", resume=True)
    assert len(history(tmp_path / "resumed")) == 2
    assert comparable(resumed) == comparable(reference)


def test_patience_starts_only_once_something_was_found(tmp_path, monkeypatch):
    cfg = compose_config(*SETTINGS, "trainer.max_epochs=4", "trainer.patience=1")
    scripted_dev_f1(monkeypatch, [0.0, 0.0, 0.3, 0.2])
    metrics = run_training(cfg, tmp_path / "run")
    assert [row["dev"]["f1"] for row in history(tmp_path / "run")] == [0.0, 0.0, 0.3, 0.2]
    assert metrics["epochs"] == 4 and metrics["best_epoch"] == 3


def test_chance_hits_of_an_untrained_head_do_not_start_patience(tmp_path, monkeypatch):
    # An untrained head predicts thousands of spans and hits a few by chance (dev F1 0.002): counting patience
    # from there stopped a slow-starting EMA run at epoch 4, before it had learnt anything
    cfg = compose_config(*SETTINGS, "trainer.max_epochs=5", "trainer.patience=2")
    scripted_dev_f1(monkeypatch, [0.002, 0.0, 0.0, 0.3, 0.2])
    metrics = run_training(cfg, tmp_path / "run")
    assert metrics["epochs"] == 5 and metrics["best_epoch"] == 4

    old_rule = compose_config(*SETTINGS, "trainer.max_epochs=5", "trainer.patience=2", "trainer.patience_min_f1=0")
    scripted_dev_f1(monkeypatch, [0.002, 0.0, 0.0, 0.3, 0.2])
    metrics = run_training(old_rule, tmp_path / "old-rule")
    assert metrics["epochs"] == 3 and metrics["best_epoch"] == 1 and metrics["early_stopping"]["stopped"]

"""Experiment tracking (regner/training/callbacks/loggers.py): TensorBoard event files read back with TensorBoard's own
reader, a resumed run without duplicated steps, MLflow to a local SQLite store, and config errors."""

import json

import pytest

from .test_cli import regner

SMALL = ["data.train_size=96", "data.dev_size=24", "data.test_size=0", "trainer.batch_size=16",
         "trainer.progress=false", "encoder.hidden_size=32", "encoder.intermediate_size=64", "head.head_size=16",
         "trainer.check_every=2"]


def events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_tensorboard_event_files_hold_every_term_lr_and_dev_scores(tmp_path):
    run_dir = tmp_path / "run"
    result = regner("train", *SMALL, "trainer.max_epochs=2", "regularizer=rdrop_fgm", f"hydra.run.dir={run_dir}",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    board = events(run_dir / "tensorboard")
    scalars = set(board.Tags()["scalars"])
    assert {"train/loss", "train/ce", "train/rdrop/kl", "train/rdrop/loss", "train/fgm/adv_ce", "train/fgm/seconds",
            "train/lr", "dev/precision", "dev/recall", "dev/f1", "dev/predicted", "train/tokens_per_s",
            "epoch/loss", "final/dev_f1"} <= scalars
    records = history(run_dir)
    dev = board.Scalars("dev/f1")
    assert [e.step for e in dev] == [r["step"] for r in records]
    assert [e.value for e in dev] == pytest.approx([r["dev"]["f1"] for r in records], abs=1e-6)
    epoch_loss = [e.value for e in board.Scalars("epoch/loss")]
    assert epoch_loss == pytest.approx([r["train"]["loss"] for r in records], rel=1e-5)
    steps = [e.step for e in board.Scalars("train/loss")]
    per_epoch = records[0]["step"]
    assert steps == sorted(set(steps)) and all(s % 2 == 0 or s % per_epoch == 0 for s in steps)
    total, warmup = 2 * per_epoch, int(2 * per_epoch * 0.1)  # the rate of the next step, by hand: linear warmup, decay
    for event in board.Scalars("train/lr"):
        s = event.step
        factor = (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
        assert event.value == pytest.approx(1e-3 * factor, rel=1e-6), s
    (config,) = board.Tensors("config/text_summary")
    text = config.tensor_proto.string_val[0].decode()
    assert "regularizer:" in text and "rdrop_fgm" in text and "${" not in text  # resolved


def test_loggers_off_writes_no_event_files(tmp_path):
    run_dir = tmp_path / "run"
    result = regner("train", *SMALL, "trainer.max_epochs=1", "trainer.loggers=[]", f"hydra.run.dir={run_dir}",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run_dir / "tensorboard").exists()


def test_a_resumed_run_continues_its_curves_without_repeating_steps(tmp_path, monkeypatch):
    """Killed after step 8 with state saved at step 6: the resumed run's events replace steps ≥ 6 (read
    back every 2 steps and at each save, every 3)."""
    from regner.training.run import run_training
    from regner.training.trainer import Trainer

    from .test_training import compose_config

    cfg = compose_config(*SMALL, "trainer.max_epochs=2", "trainer.save_every_steps=3")
    original, calls = Trainer.training_step, {"n": 0}

    def killed(self, batch):
        calls["n"] += 1
        if calls["n"] > 8:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "training_step", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "run")
    before = [e.step for e in events(tmp_path / "run" / "tensorboard").Scalars("train/loss")]
    assert before == [2, 3, 4, 6, 8] and calls["n"] == 9  # steps 6 and 8 will be trained and logged again
    monkeypatch.setattr(Trainer, "training_step", original)
    reference = run_training(cfg, tmp_path / "reference")
    resumed = run_training(cfg, tmp_path / "run", resume=True)
    assert resumed["dev"] == reference["dev"]
    board = events(tmp_path / "run" / "tensorboard")
    steps = [e.step for e in board.Scalars("train/loss")]
    assert steps == [e.step for e in events(tmp_path / "reference" / "tensorboard").Scalars("train/loss")]
    assert [e.step for e in board.Scalars("dev/f1")] == [r["step"] for r in history(tmp_path / "run")]


def test_sweep_jobs_write_side_by_side_event_files(tmp_path):
    sweep = tmp_path / "sweep"
    result = regner("sweep", *SMALL, "trainer.max_epochs=1", "seed=1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    board = [events(sweep / job / "tensorboard") for job in ("0", "1")]
    assert all("dev/f1" in b.Tags()["scalars"] for b in board)


@pytest.mark.slow  # ~35 s: MLflow's import and store dominate
def test_mlflow_logs_to_a_local_store_offline(tmp_path):
    pytest.importorskip("mlflow")
    import mlflow

    store = tmp_path / "mlflow.db"
    run_dir = tmp_path / "run"
    result = regner("train", *SMALL, "trainer.max_epochs=1", "trainer.loggers=[tensorboard,mlflow]",
                    f"trainer.mlflow.tracking_uri={store}", "trainer.mlflow.experiment=tests",
                    f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    (run,) = mlflow.search_runs(experiment_names=["tests"], output_format="list")
    assert run.data.params["regularizer.name"] == "none" and run.data.params["seed"] == "42"
    assert run.data.metrics["dev.f1"] == pytest.approx(history(run_dir)[-1]["dev"]["f1"], abs=1e-6)
    assert {"train.loss", "train.lr", "final.dev_f1"} <= set(run.data.metrics)
    assert run.data.tags["regner_run_dir"] == str(run_dir)


@pytest.mark.parametrize("value", ["[wandb]", "tensorboard"])
def test_unknown_loggers_are_refused_before_reading_data(tmp_path, value):
    result = regner("train", f"trainer.loggers={value}", "data=jsonl", "data.train=/nonexistent.jsonl", cwd=tmp_path)
    assert result.returncode == 2 and "trainer.loggers" in result.stderr and "Traceback" not in result.stderr

"""One training run end to end: ``status.json`` (running → completed / failed / interrupted),
the training, ``metrics.json``, and the closing summary."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from regner.runs.interrupt import Interrupted, StopFlag
from regner.runs.io import METRICS_FILE, atomic_write_json, storage_error, write_status
from regner.training.distributed import env_rank
from regner.training.summary import run_metadata
from regner.training.trainer import Trainer, TrainingDiverged

log = logging.getLogger(__name__)


def run_training(cfg: DictConfig, run_dir: str | Path, base_dir: str | Path | None = None,
                 resume: bool = False, stop: StopFlag | None = None) -> dict[str, Any]:
    """Train, then write ``metrics.json``; ``status.json`` says ``failed`` (and why) if anything breaks,
    or ``interrupted`` (with the command that resumes it) after a SIGTERM/SIGINT. Only the main
    process writes when training data-parallel."""
    run_dir = Path(run_dir)
    main = env_rank() == 0
    status = partial(write_status, run_dir) if main else (lambda *a, **k: None)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
    try:
        run = run_metadata(cfg)
        status("running", run=run)
        metrics = Trainer(cfg, run_dir, base_dir, resume=resume, run_info=run, stop=stop).fit()
    except Interrupted as err:
        status("interrupted", str(err), run=run, resume_command=resume_command(run_dir, "train"), step=err.step)
        raise
    except BaseException as err:
        storage = storage_error(err, run_dir, resume_command(run_dir, "train"))
        try:
            status("failed", f"{type(err).__name__}: {err}", run=locals().get("run"),
                   diverged=isinstance(err, TrainingDiverged), storage=storage is not None)
        except OSError as status_err:  # a full disk may refuse status.json too; the saved state is what counts
            log.error("could not record the failure in %s: %s", run_dir / "status.json", status_err)
        if storage is not None:
            raise storage from err
        raise
    if main:
        atomic_write_json(run_dir / METRICS_FILE, metrics)
        log_summary(metrics, run_dir)
    status("completed", run=run, dev_f1=metrics["dev"]["f1"])
    return metrics


def resume_command(run_dir: Path, command: str) -> str:
    """The exact command that continues an interrupted run (``command``: train or pretrain)."""
    import shlex

    return f"regner {command} resume={shlex.quote(str(Path(run_dir).resolve()))}"


def log_summary(metrics: dict[str, Any], run_dir: Path) -> None:
    """The end-of-run lines: where the results are, how long it took, and why it stopped."""
    train, stopping = metrics["train"], metrics["early_stopping"]
    ended = (f"early stopping ended it after epoch {metrics['epochs']} of {stopping['max_epochs']} (no dev F1 gain for "
             f"{stopping['patience']} epochs; trainer.patience=0 trains every epoch)" if stopping["stopped"]
             else f"trained all {metrics['epochs']} epochs")
    scores = f"dev F1 {metrics['dev']['f1']:.4f}" + (f", test F1 {metrics['test']['f1']:.4f}" if metrics["test"] else "")
    log.info("done: %s (best epoch %d); %s; %.1f s in all (%.1f s training, %.0f tokens/s)", scores,
             metrics["best_epoch"], ended, train["wall_time_s"], train["train_time_s"], train["tokens_per_s"])
    log.info("metrics (with the per-type tables): %s", (run_dir / METRICS_FILE).resolve())

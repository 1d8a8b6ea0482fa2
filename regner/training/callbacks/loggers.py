"""Experiment trackers as trainer callbacks: TensorBoard (on by default) and MLflow (optional).

``trainer.loggers`` lists them (``[tensorboard]`` by default, ``[]`` for none, ``[tensorboard,mlflow]``).
Each receives the same stream, only on the main data-parallel rank:

- every ``check_every`` steps (when the trainer reads the losses back from the device anyway): the mean
  of every training term since the last point (``train/loss``, ``train/ce``, ``train/kl``, a stack's
  ``train/rdrop/kl``, ...) and the learning rate (``train/lr``);
- every epoch: dev precision, recall, F1 and predicted spans (``dev/*``), the epoch's mean terms
  (``epoch/*``) and the training throughput (``train/tokens_per_s``);
- at the start: the resolved config (TensorBoard: as text; MLflow: as flattened parameters).

TensorBoard event files go to ``<run dir>/tensorboard/``, so ``tensorboard --logdir outputs/multirun/...``
shows a sweep's runs side by side. MLflow logs to a local SQLite store (``trainer.mlflow.tracking_uri``,
default ``outputs/mlflow.db``; any MLflow tracking URI works): no server, works offline; a resumed run
continues its MLflow run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from regner.training.callbacks.base import Callback

log = logging.getLogger(__name__)

LOGGERS = ("tensorboard", "mlflow")
DEFAULT_MLFLOW_STORE = "outputs/mlflow.db"  # a SQLite file, relative to where regner runs


def _is_main(trainer: Any) -> bool:
    dist = getattr(trainer, "dist", None)
    return dist is None or dist.is_main


class Logger(Callback):
    """A tracker: subclasses write scalars, text and parameters; this class turns trainer events into them."""

    def on_train_start(self, trainer: Any) -> None:
        self.enabled = _is_main(trainer)

    def on_train_begin(self, trainer: Any) -> None:
        """After a resume has loaded the state: what the run continues from is known."""
        if self.enabled:
            from omegaconf import OmegaConf

            self.open(trainer, trainer.state.global_step)
            self.config(OmegaConf.to_yaml(trainer.cfg, resolve=True), OmegaConf.to_container(trainer.cfg, resolve=True))

    def on_terms(self, trainer: Any, terms: dict[str, float]) -> None:
        if self.enabled:
            step = trainer.state.global_step
            for name, value in terms.items():
                self.scalar(f"train/{name}", value, step)
            self.scalar("train/lr", trainer.scheduler.get_last_lr()[0], step)

    def on_evaluate(self, trainer: Any, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        step, state = record["step"], trainer.state
        for name, value in record["dev"].items():
            self.scalar(f"dev/{name}", value, step)
        for name, value in record["train"].items():
            self.scalar(f"epoch/{name}", value, step)
        self.scalar("epoch/epoch", record["epoch"], step)
        if state.train_time > 0:
            self.scalar("train/tokens_per_s", state.train_tokens / state.train_time, step)
        self.flush()

    def on_train_end(self, trainer: Any, metrics: dict[str, Any] | None) -> None:
        if not self.enabled:
            return
        if metrics is not None:
            for split in ("dev", "test"):
                if metrics.get(split):
                    for name in ("precision", "recall", "f1"):
                        self.scalar(f"final/{split}_{name}", metrics[split][name], trainer.state.global_step)
        self.close()

    # what a tracker implements
    def open(self, trainer: Any, step: int) -> None:
        raise NotImplementedError

    def config(self, text: str, tree: dict) -> None:
        pass

    def scalar(self, tag: str, value: float, step: int) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger(Logger):
    name = "tensorboard"

    def __init__(self):
        self.writer = None

    def open(self, trainer: Any, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # On resume from step s, purge_step drops the events an interrupted run wrote after its saved state
        # (steps > s); the event at s itself summarises steps the saved state includes.
        self.writer = SummaryWriter(log_dir=str(Path(trainer.run_dir) / "tensorboard"),
                                    purge_step=step + 1 if step else None)

    def config(self, text: str, tree: dict) -> None:
        self.writer.add_text("config", "```yaml\n" + text + "```", 0)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowLogger(Logger):
    """MLflow tracking to a local file store; needs ``pip install 'regner[track]'``."""

    name = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str = "regner"):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.run = None

    def open(self, trainer: Any, step: int) -> None:
        import mlflow

        uri = self.tracking_uri or DEFAULT_MLFLOW_STORE
        if ":" not in uri:  # a plain path: a SQLite store there (MLflow's file store is deprecated)
            path = Path(uri).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{path}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(self.experiment)
        run_name = str(Path(trainer.run_dir))
        previous = mlflow.search_runs(filter_string=f"tags.regner_run_dir = '{run_name}'", output_format="list")
        self.resumed = bool(previous)
        if previous:  # a resumed run continues its MLflow run (its parameters are logged already)
            self.run = mlflow.start_run(run_id=previous[0].info.run_id)
        else:
            self.run = mlflow.start_run(run_name=Path(run_name).name, tags={"regner_run_dir": run_name})

    def config(self, text: str, tree: dict) -> None:
        import mlflow

        from regner.config.tree import flatten

        if not self.resumed:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(tree).items()})
            mlflow.log_text(text, "config.yaml")

    def scalar(self, tag: str, value: float, step: int) -> None:
        import mlflow

        mlflow.log_metric(tag.replace("/", "."), float(value), step=step)

    def close(self) -> None:
        import mlflow

        if self.run is not None:
            mlflow.end_run()
            self.run = None


def build_loggers(tcfg: Any) -> list[Logger]:
    names = list(tcfg.get("loggers") or [])
    loggers: list[Logger] = []
    for name in names:
        if name == "tensorboard":
            loggers.append(TensorBoardLogger())
        elif name == "mlflow":
            options = tcfg.get("mlflow") or {}
            loggers.append(MLflowLogger(options.get("tracking_uri"), options.get("experiment") or "regner"))
    return loggers

"""``regner evaluate ckpt=RUN [data=...]``: score a saved model; writes metrics.json like training does."""

from __future__ import annotations

import contextlib
from pathlib import Path

from regner.cli.errors import log, report_error, user_errors
from regner.cli.runs import claimed_run, hydra_app, override_key, write_hydra_files
from regner.data.errors import DataError
from regner.errors import UserError


def evaluate_task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from regner.config.validation import validate_config
    from regner.data.loading import load_splits
    from regner.inference.checkpoint import checkpoint_dir
    from regner.inference.evaluation import evaluate
    from regner.inference.loaded import LoadedModel
    from regner.runs.io import METRICS_FILE, atomic_write_json, atomic_write_text, write_status
    from regner.training.device import resolve_device

    hydra_cfg = HydraConfig.get()
    with contextlib.ExitStack() as stack:
        try:
            run_dir = stack.enter_context(claimed_run(hydra_cfg, None)).run_dir
        except UserError as err:
            report_error("evaluate", err)
        write_hydra_files(run_dir, cfg, hydra_cfg)
        write_status(run_dir, "running")
        try:
            if not cfg.get("ckpt"):
                raise DataError("regner evaluate needs ckpt=<run dir or checkpoint dir>")
            validate_config(cfg)
            ckpt = checkpoint_dir(cfg.ckpt)
            data_cfg = cfg.data
            data_overridden = any(override_key(o).startswith("data") for o in hydra_cfg.overrides.task)
            saved = ckpt.parent / "config.yaml"
            if not data_overridden and saved.exists():
                data_cfg = OmegaConf.load(saved).data  # its data paths were saved absolute
                log.info("evaluating on the data the model was trained with (%s); pass data=... to change",
                         data_cfg.name)
            atomic_write_text(run_dir / "config.yaml",
                              OmegaConf.to_yaml(OmegaConf.merge(cfg, {"data": data_cfg}), resolve=True))
            loaded = LoadedModel.load(ckpt, resolve_device(cfg.trainer.device))
            splits = load_splits(data_cfg)
            check_label_overlap(loaded.model.labels, splits, ckpt)
            results: dict = {"status": "completed", "checkpoint": str(ckpt), "kind": "evaluation",
                             "run": {"dataset": splits.name, "labels": loaded.model.labels}}
            for name in ("dev", "test"):
                examples = getattr(splits, name)
                if examples is None:
                    results[name] = None
                    continue
                split = loaded.encode(name, examples)
                results[name], _ = evaluate(loaded.model, split, loaded.device, cfg.trainer.eval_batch_size,
                                            loaded.config.get("threshold", 0.0), with_seqeval=True, name=name,
                                            progress=cfg.trainer.progress)
                log.info("%s: P %.4f R %.4f F1 %.4f", name, results[name]["precision"], results[name]["recall"],
                         results[name]["f1"])
        except user_errors() as err:
            write_status(run_dir, "failed", f"{type(err).__name__}: {err}")
            report_error("evaluate", err, run_dir)
        atomic_write_json(run_dir / METRICS_FILE, results)
        write_status(run_dir, "completed")
        log.info("metrics written to %s", run_dir / METRICS_FILE)


def check_label_overlap(model_labels: list[str], splits, ckpt: Path) -> None:
    """Scoring a model on data whose entity types it never learned gives F1 0, which means nothing."""
    gold = {e.type for split in (splits.dev, splits.test or []) for ex in split for e in ex.entities}
    shared = gold & set(model_labels)
    if gold and not shared:
        raise DataError(f"the model knows the types {sorted(model_labels)} but {splits.name!r} has only "
                        f"{sorted(gold)}: no type in common, so every score would be 0. Evaluate on data labelled "
                        "with the model's types", str(ckpt))
    missing = sorted(gold - set(model_labels))
    if missing:
        log.warning("types %s of %s are unknown to the model: their entities count as missed", missing, splits.name)


def run(argv: list[str]) -> None:
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        argv = ["hydra.run.dir=outputs/evaluate/${now:%Y-%m-%d}/${now:%H-%M-%S}", *argv]
    hydra_app(argv, evaluate_task)

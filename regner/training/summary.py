"""What a run says about itself: its identity in a report, the headline metric, the per-type
table, and the warning when a model predicts nothing."""

from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regner.regularizers import instantiate_regularizer
from regner.regularizers.base import Regularizer

log = logging.getLogger(__name__)


def run_metadata(cfg: DictConfig) -> dict[str, Any]:
    """What identifies this run in a report: dataset, encoder, regularizer with its knobs, the KL
    variant (None when the regularizer does not use one), seed."""
    knobs = {k: v for k, v in OmegaConf.to_container(cfg.regularizer, resolve=True).items() if k not in ("_target_", "name")}
    uses_kl = instantiate_regularizer(cfg.regularizer).uses_kl
    return {"dataset": cfg.data.get("name", cfg.data.format), "encoder": cfg.encoder.name, "head": cfg.head.type,
            "regularizer": cfg.regularizer.name, "regularizer_config": knobs, "kl": cfg.kl.name if uses_kl else None,
            "seed": cfg.seed, "alpha": cfg.get("alpha"), "precision": cfg.trainer.precision,
            "ema_decay": (cfg.trainer.get("ema") or {}).get("decay"),
            "layer_lr_decay": cfg.trainer.get("layer_lr_decay", 1.0)}


HEADLINE = ("dev.f1 / test.f1: micro F1 over exact (start, end, type) spans, nested and overlapping predictions "
            "scored as they are (the dev split picks the best epoch); *.seqeval is a secondary BIO view, see its note")


def warn_no_predictions(epoch: int, train: dict[str, float], regularizer: Regularizer, cfg: DictConfig,
                        lr: float) -> None:
    """Say so while it happens when the model predicts no entity at all on dev."""
    extra = ", ".join(f"{k} {v:.4g}" for k, v in train.items() if k not in ("loss", "ce")) or "none (plain CE)"
    loss, ce = train.get("loss", math.nan), train.get("ce", math.nan)
    share = (loss - ce) / loss if math.isfinite(loss) and loss else math.nan  # the regularizer's part of the loss
    if regularizer.name == "none":
        log.warning("epoch %d predicted no entity at all on dev (F1 0, 0 spans above the threshold %s); training "
                    "loss %.4g, learning rate now %.3g. A random-init encoder often needs a few epochs before its "
                    "first prediction; if this persists, the learning rate may be too high or too low.",
                    epoch, cfg.head.threshold, loss, lr)
        return
    log.warning(
        "epoch %d predicted no entity at all on dev (F1 0, 0 spans above the threshold %s). Regularizer %s "
        "(%r): %.0f%% of this epoch's training loss %.4g is its term (its raw terms: %s; ce %.4g); learning rate "
        "now %.3g. A random-init encoder often needs a few epochs before its first prediction; if this persists, "
        "the regularizer may be making 'predict nothing' the easiest way to agree (lower its strength, e.g. "
        "alpha=0.3, ramp its weight up over more steps, e.g. regularizer.rampup_steps=300 where it has that key, "
        "or check kl.reduction), or the learning rate is too high or too low.",
        epoch, cfg.head.threshold, regularizer.name, regularizer, 100 * share, loss, extra, ce, lr)


def format_per_type(scores: dict[str, Any]) -> str:
    lines = [f"  {'type':<16}{'P':>8}{'R':>8}{'F1':>8}{'support':>9}"]
    for label, row in scores["per_type"].items():
        lines.append(f"  {label:<16}{row['precision']:>8.4f}{row['recall']:>8.4f}{row['f1']:>8.4f}{row['support']:>9}")
    return "\n".join(lines)

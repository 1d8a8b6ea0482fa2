"""The trainer's callbacks (:mod:`.base` defines the hooks): EMA weights and the experiment
loggers, built from the ``trainer`` config. A new trainer feature is one module here plus the line
that builds it below, never a branch through the loop."""

from __future__ import annotations

from typing import Any

from regner.training.callbacks.base import Callback, Callbacks


def build_callbacks(tcfg: Any, regularizer: Any = None) -> Callbacks:
    """The callbacks the ``trainer`` config asks for; a mean teacher's EMA (its ``decay``) too."""
    from regner.errors import ConfigError
    from regner.training.callbacks.loggers import build_loggers

    callbacks: list[Callback] = []
    ema = tcfg.get("ema") or {}
    teacher_decay = getattr(regularizer, "decay", None) if getattr(regularizer, "name", "") == "mean_teacher" else None
    if ema.get("decay") and teacher_decay:
        raise ConfigError("trainer.ema.decay", ema["decay"], "null with regularizer=mean_teacher",
                          "The mean teacher is itself an EMA of the weights: set regularizer.decay instead")
    if ema.get("decay") or teacher_decay:
        from regner.training.callbacks.ema import EMA

        callbacks.append(EMA(float(ema.get("decay") or teacher_decay),
                             evaluate=teacher_decay is None or regularizer.evaluate == "teacher",
                             warmup=teacher_decay is not None and regularizer.warmup))
    callbacks.extend(build_loggers(tcfg))  # after EMA: the loggers see what the evaluation saw
    return Callbacks(callbacks)

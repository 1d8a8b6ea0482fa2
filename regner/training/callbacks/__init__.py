"""The trainer's callbacks (:mod:`.base` defines the hooks): EMA weights and the experiment
loggers, built from the ``trainer`` config. A new trainer feature is one module here plus the line
that builds it below, never a branch through the loop."""

from __future__ import annotations

from typing import Any

from regner.training.callbacks.base import Callback, Callbacks


def build_callbacks(tcfg: Any) -> Callbacks:
    """The callbacks the ``trainer`` config asks for."""
    from regner.training.callbacks.loggers import build_loggers

    callbacks: list[Callback] = []
    ema = tcfg.get("ema") or {}
    if ema.get("decay"):
        from regner.training.callbacks.ema import EMA

        callbacks.append(EMA(float(ema["decay"])))
    callbacks.extend(build_loggers(tcfg))  # after EMA: the loggers see what the evaluation saw
    return Callbacks(callbacks)

"""Regularizers for GlobalPointer training, one module each, sharing :class:`Regularizer`.

A new regularizer is one module here (a :class:`Regularizer` subclass) plus one YAML under
``conf/regularizer/`` whose ``_target_`` names it; :func:`instantiate_regularizer` builds it."""

from __future__ import annotations

from typing import Any

from regner.regularizers.base import Regularizer, TrainingStep
from regner.regularizers.kl import KL_VARIANTS, get_kl, globalpointer_kl, mse_kl, softmax_kl

__all__ = ["KL_VARIANTS", "Regularizer", "TrainingStep", "get_kl", "globalpointer_kl", "instantiate_regularizer",
           "mse_kl", "softmax_kl"]


def instantiate_regularizer(cfg: Any) -> Regularizer:
    """The regularizer a ``regularizer`` config section describes (Hydra's ``_target_``)."""
    from hydra.utils import instantiate

    regularizer = instantiate(cfg, _convert_="all")
    if not isinstance(regularizer, Regularizer):
        raise TypeError(f"{cfg._target_} is not a regner Regularizer")
    return regularizer

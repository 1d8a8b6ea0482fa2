"""Regularizers for GlobalPointer training, one module each, sharing :class:`Regularizer`."""

from regner.regularizers.base import Regularizer, TrainingStep
from regner.regularizers.kl import KL_VARIANTS, get_kl, globalpointer_kl, mse_kl, softmax_kl

__all__ = ["KL_VARIANTS", "Regularizer", "TrainingStep", "get_kl", "globalpointer_kl", "mse_kl", "softmax_kl"]

"""No regularization: the baseline every other regularizer is compared with."""

from regner.regularizers.base import Regularizer


class NoRegularizer(Regularizer):
    name = "none"

"""regner: GlobalPointer Chinese NER with honest regularizer comparisons."""

import math

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _multiply(*factors) -> float:
    return math.prod(float(f) for f in factors)


# `${regner.mul:${alpha},100}` in a regularizer YAML: the top-level `alpha` multiplies each
# regularizer's own default strength, so `regner sweep alpha=0.3,1,3` means the same for all of them.
OmegaConf.register_new_resolver("regner.mul", _multiply, replace=True)

"""regner: GlobalPointer Chinese NER with honest regularizer comparisons."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${regner.mul:${alpha},30}` in a regularizer YAML: the top-level `alpha` multiplies each
# regularizer's own default strength, so `regner sweep alpha=0.3,1,3` means the same for all of them.
OmegaConf.register_new_resolver("regner.mul", lambda *factors: __import__("math").prod(float(f) for f in factors),
                                replace=True)

"""regner: GlobalPointer Chinese NER with honest regularizer comparisons."""

import math

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _multiply(*factors) -> float:
    return math.prod(float(f) for f in factors)


# `${regner.mul:${alpha},100}` in a regularizer YAML: the top-level `alpha` multiplies each
# regularizer's own default strength, so `regner sweep alpha=0.3,1,3` means the same for all of them.
OmegaConf.register_new_resolver("regner.mul", _multiply, replace=True)


def _bert_heads(hidden_size) -> int:
    """BERT's shape: one attention head per 64 hidden units (at least one)."""
    return max(1, int(hidden_size) // 64)


def _bert_ffn(hidden_size) -> int:
    """BERT's shape: a feed-forward layer 4 × the hidden size."""
    return 4 * int(hidden_size)


# The tiny encoder derives its heads and FFN width from encoder.hidden_size the way BERT does, so
# "4 layers × 256" names one model everywhere (4 heads, FFN 1024), unless they are set explicitly.
OmegaConf.register_new_resolver("regner.bert_heads", _bert_heads, replace=True)
OmegaConf.register_new_resolver("regner.bert_ffn", _bert_ffn, replace=True)

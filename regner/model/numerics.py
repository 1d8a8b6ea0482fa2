"""Dtype rules shared by the head, the loss and the KL terms.

Scores, masks, losses and divergences are computed in at least fp32: half-precision logits would
overflow in exp() and lose the small differences the KL terms measure. fp64 passes through
untouched so that gradient checks can run in double precision.
"""

from __future__ import annotations

import torch


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def masked_fill_value(dtype: torch.dtype) -> float:
    """A large finite negative that exp() sends to 0 in ``dtype`` without overflowing it."""
    return -1e4 if dtype == torch.float16 else -1e12

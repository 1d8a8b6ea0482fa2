"""Multi-label categorical cross-entropy, the loss GlobalPointer is trained with.

For each (sample, type) with positive spans P and negative valid spans N:
``log(1 + Σ_{i∈N} e^{s_i}) + log(1 + Σ_{j∈P} e^{-s_j})``, averaged over sample × type. The KL
terms in :mod:`regner.regularizers.kl` use the same reduction, so ``alpha`` means the same weight
relative to this loss whichever KL is chosen.
"""

from __future__ import annotations

import torch

from regner.numerics import at_least_fp32, masked_fill_value


def _log1p_sum_exp(logits: torch.Tensor, include: torch.Tensor) -> torch.Tensor:
    """log(1 + Σ exp(logits[include])) over the last two dims, stable and NaN-free."""
    flat = torch.where(include, logits, torch.full_like(logits, masked_fill_value(logits.dtype))).flatten(-2)
    zeros = torch.zeros_like(flat[..., :1])
    return torch.logsumexp(torch.cat((zeros, flat), dim=-1), dim=-1)


def multilabel_crossentropy(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over [batch, types] of the per-(sample, type) loss; computed in (at least) fp32."""
    scores = at_least_fp32(scores)
    positive = targets.bool() & mask
    negative = mask & ~positive
    loss = _log1p_sum_exp(scores, negative) + _log1p_sum_exp(-scores, positive)
    return loss.mean()

"""Divergences between two GlobalPointer score tensors, as used by R-Drop, VAT and noise.

All take scores ``s, t`` of shape [batch, types, len, len] and a boolean span mask broadcastable to
it, and reduce like the cross-entropy: sum over valid spans, mean over batch × types. Masked
positions are removed with ``torch.where`` (never multiplied by a mask), so they contribute exactly
zero and cannot turn a masked ``-inf - -inf`` or ``0 * inf`` into NaN. Everything runs in at
least fp32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from regner.numerics import at_least_fp32, masked_fill_value


def _reduce(contribution: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    contribution = torch.where(mask, contribution, torch.zeros_like(contribution))
    return contribution.sum(dim=(-1, -2)).mean()


def globalpointer_kl(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ (σ(s) − σ(t))(s − t): each span logit is its own Bernoulli, and this is exactly
    KL(Bern σ(s) ‖ Bern σ(t)) + KL(Bern σ(t) ‖ Bern σ(s))."""
    s, t = at_least_fp32(s), at_least_fp32(t)
    return _reduce((torch.sigmoid(s) - torch.sigmoid(t)) * (s - t), mask)


def softmax_kl(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Symmetric KL of the softmax over all valid spans of each (sample, type): the naive form,
    which treats the multi-label output as one distribution."""
    s, t = at_least_fp32(s), at_least_fp32(t)
    mask = mask.expand_as(s)
    fill = masked_fill_value(s.dtype)
    log_p = torch.where(mask, s, torch.full_like(s, fill)).flatten(-2).log_softmax(-1).view_as(s)
    log_q = torch.where(mask, t, torch.full_like(t, fill)).flatten(-2).log_softmax(-1).view_as(t)
    return _reduce((log_p.exp() - log_q.exp()) * (log_p - log_q), mask)


def mse_kl(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared difference of the logits over valid spans."""
    return _reduce((at_least_fp32(s) - at_least_fp32(t)) ** 2, mask)


KL_VARIANTS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "globalpointer": globalpointer_kl,
    "softmax": softmax_kl,
    "mse": mse_kl,
}


def get_kl(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in KL_VARIANTS:
        raise ValueError(f"unknown KL variant {name!r}; choose one of {sorted(KL_VARIANTS)}")
    return KL_VARIANTS[name]

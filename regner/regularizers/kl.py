"""Divergences between two GlobalPointer score tensors, as used by R-Drop, VAT and noise.

All take scores ``s, t`` of shape [batch, types, len, len], a boolean span mask broadcastable to
it, and a ``reduction``:

- ``mean`` (the default): the mean over every valid (sample, type, start, end) cell. A sentence of
  L tokens has about L²/2 valid spans, so a *sum* over cells grows with the square of the window
  length while the cross-entropy is one term per (sample, type): the same ``alpha`` would weigh the
  KL 100× more on 385-token windows than on 26-token ones, and on long texts R-Drop's KL then
  dominates early training and drives every score to −∞ (both passes agree by predicting nothing).
  The mean makes ``alpha`` mean the same at any length.
- ``sum``: sum over valid cells, mean over batch × types (the form of regner ≤ 0.1 and of code that
  sums the per-span divergence).

Masked positions are removed with ``masked_fill`` (never multiplied by a mask), so they contribute
exactly zero and cannot turn a masked ``-inf - -inf`` or ``0 * inf`` into NaN. Everything runs in
at least fp32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from regner.model.numerics import at_least_fp32, masked_fill_value

REDUCTIONS = ("mean", "sum")


def _normalizer(mask: torch.Tensor, like: torch.Tensor, reduction: str) -> torch.Tensor | float:
    """What the masked sum over all cells is divided by: the number of valid cells (``mean``) or of
    (sample, type) pairs (``sum``: sum over cells, mean over sample × type)."""
    if reduction == "mean":
        return mask.expand_as(like).sum().clamp_min(1)
    if reduction == "sum":
        return like.shape[0] * like.shape[1]
    raise ValueError(f"kl.reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(contribution: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    return contribution.masked_fill(~mask, 0.0).sum() / _normalizer(mask, contribution, reduction)


class _GlobalPointerKL(torch.autograd.Function):
    """(σ(s) − σ(t))(s − t) summed over valid cells, with a hand-written backward that works in
    place: ∂/∂s = σ'(s)(s − t) + σ(s) − σ(t), ∂/∂t = −σ'(t)(s − t) − (σ(s) − σ(t)). Autograd's
    version keeps σ(s), σ(t), their difference, s − t and the product alive until the backward;
    this one keeps nothing but its inputs (first-order only, which R-Drop, VAT and noise need)."""

    @staticmethod
    def forward(ctx, s, t, mask, normalizer):
        ctx.save_for_backward(s, t, mask)
        ctx.normalizer = normalizer
        difference = s - t
        contribution = torch.sigmoid(s).sub_(torch.sigmoid(t)).mul_(difference)
        del difference
        return contribution.masked_fill_(~mask, 0.0).sum() / normalizer

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        s, t, mask = ctx.saved_tensors
        scale = grad_output / ctx.normalizer
        difference = s - t
        sigmoid_s, sigmoid_t = torch.sigmoid(s), torch.sigmoid(t)
        gap = sigmoid_s - sigmoid_t
        grad_s = torch.addcmul(sigmoid_s, sigmoid_s, sigmoid_s, value=-1).mul_(difference).add_(gap)  # σ'(s)(s−t) + gap
        del sigmoid_s
        grad_t = sigmoid_t.addcmul_(sigmoid_t, sigmoid_t, value=-1).mul_(difference).add_(gap).neg_()
        del difference, gap
        invalid = ~mask
        return (grad_s.masked_fill_(invalid, 0.0).mul_(scale) if ctx.needs_input_grad[0] else None,
                grad_t.masked_fill_(invalid, 0.0).mul_(scale) if ctx.needs_input_grad[1] else None, None, None)


def globalpointer_kl(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Σ (σ(s) − σ(t))(s − t): each span logit is its own Bernoulli, and this is exactly
    KL(Bern σ(s) ‖ Bern σ(t)) + KL(Bern σ(t) ‖ Bern σ(s))."""
    s, t = at_least_fp32(s), at_least_fp32(t)
    mask = mask.bool()
    return _GlobalPointerKL.apply(s, t, mask, _normalizer(mask, s, reduction))


def softmax_kl(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Symmetric KL of the softmax over all valid spans of each (sample, type): the naive form,
    which treats the multi-label output as one distribution."""
    s, t = at_least_fp32(s), at_least_fp32(t)
    mask = mask.expand_as(s)
    fill = masked_fill_value(s.dtype)
    log_p = torch.where(mask, s, torch.full_like(s, fill)).flatten(-2).log_softmax(-1).view_as(s)
    log_q = torch.where(mask, t, torch.full_like(t, fill)).flatten(-2).log_softmax(-1).view_as(t)
    return _reduce((log_p.exp() - log_q.exp()) * (log_p - log_q), mask, reduction)


def mse_kl(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared difference of the logits over valid spans."""
    return _reduce((at_least_fp32(s) - at_least_fp32(t)) ** 2, mask, reduction)


KL_VARIANTS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "globalpointer": globalpointer_kl,
    "softmax": softmax_kl,
    "mse": mse_kl,
}


def get_kl(name: str, reduction: str = "mean") -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The divergence ``name`` with its reduction bound: ``kl(s, t, mask)``."""
    if name not in KL_VARIANTS:
        raise ValueError(f"unknown KL variant {name!r}; choose one of {sorted(KL_VARIANTS)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"kl.reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return functools.partial(KL_VARIANTS[name], reduction=reduction)

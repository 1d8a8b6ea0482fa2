"""Multi-label categorical cross-entropy, the loss GlobalPointer is trained with.

For each (sample, type) with positive spans P and negative valid spans N:
``log(1 + Σ_{i∈N} e^{s_i}) + log(1 + Σ_{j∈P} e^{-s_j})``, averaged over sample × type.

Memory: the score tensor [batch, types, len, len] is the largest activation of the model (at batch
32, 10 types and 512 tokens one fp32 copy is 320 MiB), so the loss keeps **one** masked copy of it.
The negative term is a logsumexp over the scores with invalid cells and positives filled with a
large finite negative, and ``log(1 + e^x)`` is the softplus of that logsumexp (no concatenated zero
column). Positives are few, so the positive term uses only the gathered positive scores (sparse rows
``(batch, type, start, end)``), grouped per (sample, type) with a scatter. The gradient has a closed
form, ∂L/∂s_i = e^{s_i − neg(b,t)} / (B·T) on negatives and −e^{−s_j − pos(b,t)} / (B·T) on
positives, which the backward pass writes into the saved masked copy in place: no further
[B, T, L, L] tensor is allocated. Under ``create_graph=True`` (the exact gradient penalty) the
backward is built from ordinary differentiable ops instead, so second derivatives are exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from regner.model.numerics import at_least_fp32, masked_fill_value


def positive_rows(targets: torch.Tensor) -> torch.Tensor:
    """Sparse positive rows [N, 4] = (batch, type, start, end) from a dense bool target, or the
    rows themselves if ``targets`` already is one."""
    if targets.dim() == 2 and targets.shape[-1] == 4 and not targets.dtype.is_floating_point and targets.dtype != torch.bool:
        return targets.long()
    return targets.bool().nonzero()


def _log1p_sum_exp_grouped(values: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """log(1 + Σ_{i: group_i = g} e^{values_i}) for every g in [0, groups), stable."""
    shift = torch.zeros(groups, dtype=values.dtype, device=values.device)
    shift = shift.scatter_reduce(0, group, values.detach(), reduce="amax", include_self=True)  # ≥ 0: the "1 +"
    total = torch.exp(-shift).index_add(0, group, torch.exp(values - shift[group]))
    return shift + total.log()


def _negatives(scores: torch.Tensor, mask: torch.Tensor, index: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The scores with invalid cells and positives replaced by a large finite negative (one copy)."""
    fill = masked_fill_value(scores.dtype)
    negatives = scores.masked_fill(~mask, fill)
    return negatives.index_put_(index, torch.full_like(index[0], fill, dtype=scores.dtype))


def _positive_values(scores, mask, index):
    """−s at the positive cells (a large negative for positives outside the mask: they count for nothing)."""
    valid = mask.expand_as(scores)[index]
    return torch.where(valid, -scores[index], torch.full_like(index[0], masked_fill_value(scores.dtype), dtype=scores.dtype))


def _terms(negatives, positive, group, batch, types):
    negative_term = F.softplus(torch.logsumexp(negatives.flatten(-2), dim=-1))  # [B, T]
    positive_term = _log1p_sum_exp_grouped(positive, group, batch * types).view(batch, types)
    return negative_term, positive_term


class _MultilabelCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, mask, b, t, s, e):
        batch, types = scores.shape[:2]
        index, group = (b, t, s, e), b * types + t
        negatives = _negatives(scores, mask, index)
        positive = _positive_values(scores, mask, index)
        negative_term, positive_term = _terms(negatives, positive, group, batch, types)
        ctx.save_for_backward(scores, mask, b, t, s, e, negative_term, positive, positive_term)
        ctx.negatives = negatives  # an intermediate, overwritten in place by the backward (not version-tracked)
        return (negative_term + positive_term).mean()

    @staticmethod
    def backward(ctx, grad_output):
        scores, mask, b, t, s, e, negative_term, positive, positive_term = ctx.saved_tensors
        batch, types = scores.shape[:2]
        index, group = (b, t, s, e), b * types + t
        scale = grad_output / (batch * types)
        if torch.is_grad_enabled():  # create_graph=True: differentiable ops, recomputed from the input
            negatives = _negatives(scores, mask, index)
            positive = _positive_values(scores, mask, index)
            negative_term, positive_term = _terms(negatives, positive, group, batch, types)
            grad = torch.exp(negatives - negative_term[..., None, None])
            grad = grad.index_put(index, -torch.exp(positive - positive_term.flatten()[group]), accumulate=True)
            return grad * scale, None, None, None, None, None
        negatives, ctx.negatives = ctx.negatives, None
        if negatives is None:  # a second backward through a retained graph: the copy became the first gradient
            negatives = _negatives(scores, mask, index)
        grad = negatives.sub_(negative_term[..., None, None]).exp_()  # in place: the saved copy becomes the gradient
        grad.index_put_(index, -torch.exp(positive - positive_term.flatten()[group]), accumulate=True)
        return grad.mul_(scale), None, None, None, None, None


def multilabel_crossentropy(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over [batch, types] of the per-(sample, type) loss; computed in (at least) fp32.

    ``targets`` is the dense bool target [B, T, L, L] or its sparse positive rows [N, 4]
    (``batch["spans"]``); ``mask`` the bool valid-span mask broadcastable to the scores. Positives
    outside ``mask`` are ignored, as in the dense formulation. Duplicate rows must not occur
    (:func:`regner.data.batching.collate` removes them).
    """
    scores = at_least_fp32(scores)
    rows = positive_rows(targets).to(scores.device)
    b, t, s, e = rows.unbind(-1)
    return _MultilabelCE.apply(scores, mask.bool(), b, t, s, e)


def dense_crossentropy(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The same loss in its textbook dense form (``torch.where`` copies, a concatenated zero column per
    logsumexp, autograd's own backward), as regner 0.1 computed it. Kept as the independent reference
    the tests check :func:`multilabel_crossentropy` against and the memory baseline of
    ``scripts/bench_throughput.py --loss-memory``; ``targets`` is a dense bool tensor."""
    positive = targets & mask
    negative = mask & ~positive

    def log1p_sum_exp(x: torch.Tensor, include: torch.Tensor) -> torch.Tensor:
        flat = torch.where(include, x, torch.full_like(x, masked_fill_value(x.dtype))).flatten(-2)
        return torch.logsumexp(torch.cat((torch.zeros_like(flat[..., :1]), flat), dim=-1), dim=-1)

    return (log1p_sum_exp(scores, negative) + log1p_sum_exp(-scores, positive)).mean()

"""GlobalPointer without its [B, T, L, L] score tensor: the loss, the per-logit KL and the decoder computed
block by block of start positions, the way flash attention never materialises its attention matrix.

A :class:`SpanField` holds what the scores are made of, s[b, t, i, j] = q[b, t, i]·k[b, t, j] +
start[b, t, i] + end[b, t, j] (queries and keys after RoPE and the 1/√d scale; the biases are the Efficient
GlobalPointer's, absent for the plain head; q and k may have one "type" shared by every type). Valid cells
are those of :func:`regner.model.head.span_mask`: both ends real tokens, start ≤ end.

- :func:`blockwise_crossentropy` is :func:`regner.model.loss.multilabel_crossentropy`: the negative
  logsumexp is accumulated online over blocks of start rows (``logaddexp`` of each block's logsumexp), the
  positive term comes from q·k at the sparse positive cells alone, and the backward recomputes each block
  and turns it into the gradients of q, k and the biases at once (∂L/∂s = e^{s − neg} on negatives,
  −e^{−s − pos} on positives, as in the dense loss). Peak memory: one block of scores and its gradient.
- :func:`blockwise_globalpointer_kl` is :func:`regner.regularizers.kl.globalpointer_kl` between two fields
  (R-Drop's two passes, VAT's clean and perturbed ones), with the same recomputing backward.
- :func:`blockwise_rdrop` is R-Drop's CE of both halves + KL between them in one pass over the blocks
  (both terms' gradients summed into one set of field gradients).
- :func:`blockwise_decode` is :func:`regner.model.decoding.decode_scores`: only the cells above the
  threshold leave each block.

First-order only (``once_differentiable``): the exact gradient penalty's double backward uses the dense
scores (:meth:`SpanField.dense`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from regner.model.loss import _log1p_sum_exp_grouped, positive_rows
from regner.model.numerics import masked_fill_value

DEFAULT_BLOCK_ELEMENTS = 1 << 22  # at most 4 Mi score cells (16 MiB in fp32) per block when no block size is given
BLOCKS = 32  # and at least this many blocks (fewer where the rows run out)
MIN_BLOCK_ELEMENTS = 1 << 20  # but blocks of at least 1 Mi cells (4 MiB) where the rows allow


AUTO_MIN_LENGTH = 128  # head.blockwise=auto: blockwise from this window length (docs/benchmarks/2026-12-06-blockwise-cpu.md)


def use_blockwise(mode: bool | str, length: int) -> bool:
    """``head.blockwise`` for a batch of windows of ``length`` tokens: true, false, or ``auto`` (blockwise from
    AUTO_MIN_LENGTH tokens, where the blockwise loss measured as fast as the dense one or faster; below it the
    score tensor is small and the dense path has no per-block overhead)."""
    if mode == "auto":
        return length >= AUTO_MIN_LENGTH
    return bool(mode)


@dataclass
class SpanField:
    q: torch.Tensor  # [B, T or 1, L, D], fp32, RoPE and 1/√d applied
    k: torch.Tensor  # [B, T or 1, L, D]
    start: torch.Tensor | None = None  # [B, T, L]: per-type start bias (Efficient GlobalPointer)
    end: torch.Tensor | None = None  # [B, T, L]: per-type end bias
    types: int | None = None  # T when q and k are shared by every type (their dim 1 is 1)

    @property
    def shape(self) -> torch.Size:
        batch, _, length, _ = self.q.shape
        return torch.Size((batch, self.types or self.q.shape[1], length, length))

    def block(self, first: int, last: int, column: int = 0) -> torch.Tensor:
        """The scores of start rows [first, last) and end columns [column, L): [B, T, last − first, L − column]
        (a differentiable function of the field). The blockwise functions start at column = first: cells with
        end < start are never valid, so half of the dense work is skipped."""
        scores = torch.matmul(self.q[:, :, first:last], self.k[:, :, column:].transpose(-1, -2))
        if self.start is not None:
            scores = scores + self.start[:, :, first:last, None] + self.end[:, :, None, column:]
        return scores.expand(self.shape[0], self.shape[1], last - first, self.shape[3] - column)

    def dense(self) -> torch.Tensor:
        """Every score at once, [B, T, L, L]: the reference, and the path of the exact gradient penalty."""
        return self.block(0, self.shape[-1])

    def chunk(self, chunks: int) -> tuple[SpanField, ...]:
        """Split along the batch, as ``Tensor.chunk`` (views)."""
        parts = [x.chunk(chunks) if x is not None else [None] * chunks for x in self.tensors()]
        return tuple(SpanField(*p, types=self.types) for p in zip(*parts))

    def detach(self) -> SpanField:
        return SpanField(*(None if x is None else x.detach() for x in (self.q, self.k, self.start, self.end)),
                         types=self.types)

    def tensors(self) -> tuple:
        return self.q, self.k, self.start, self.end


def block_rows(shape: torch.Size, block: int | None) -> int:
    """Start rows per block: ``block``, or 1/BLOCKS of the rows (a block's few temporaries then stay a small
    fraction of one dense score tensor) but no fewer than MIN_BLOCK_ELEMENTS cells (small score tensors go in
    one or a few blocks: per-block overhead, not memory, is their cost), and no more than DEFAULT_BLOCK_ELEMENTS."""
    batch, types, length, _ = shape
    if block:
        return max(1, min(int(block), length))
    row = max(1, batch * types * length)
    rows = max(-(-length // BLOCKS), MIN_BLOCK_ELEMENTS // row)
    return max(1, min(length, rows, DEFAULT_BLOCK_ELEMENTS // row))


def block_mask(token_mask: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """Valid cells of start rows [first, last) and end columns [first, L): [B, 1, last − first, L − first]
    (start ≤ end, both real tokens)."""
    valid = token_mask.bool()
    length = valid.shape[-1]
    rows = torch.arange(first, last, device=valid.device)[:, None]
    upper = rows <= torch.arange(first, length, device=valid.device)[None, :]
    return valid[:, None, first:last, None] & valid[:, None, None, first:] & upper


def valid_cells(token_mask: torch.Tensor, types: int) -> torch.Tensor:
    """How many valid cells the scores have: T × Σ_b n_b(n_b + 1)/2 (n_b real tokens of row b)."""
    n = token_mask.bool().sum(-1)
    return types * (n * (n + 1) // 2).sum()


def _accumulate(grads: list, field: tuple, first: int, last: int, g: torch.Tensor) -> None:
    """Add the gradient of a block's scores, g [B, T, rows, L − first] (end columns from ``first``), to the
    field tensors' gradients."""
    q, k, start, end = field
    shared = q.shape[1] == 1 and g.shape[1] > 1
    if grads[0] is not None:
        dq = torch.matmul(g, k[:, :, first:])  # [B, T, rows, D]
        grads[0][:, :, first:last] += dq.sum(1, keepdim=True) if shared else dq
    if grads[1] is not None:
        dk = torch.matmul(g.transpose(-1, -2), q[:, :, first:last])  # [B, T, L − first, D]
        grads[1][:, :, first:] += dk.sum(1, keepdim=True) if shared else dk
    if grads[2] is not None:
        grads[2][:, :, first:last] += g.sum(-1)
    if grads[3] is not None:
        grads[3][:, :, first:] += g.sum(-2)


def _zeros_like_needed(field: tuple, needs: tuple) -> list:
    return [torch.zeros_like(x) if x is not None and need else None for x, need in zip(field, needs)]


def _field_from(q, k, start, end, types) -> SpanField:
    return SpanField(q, k, start, end, types if q.shape[1] == 1 else None)


class _BlockwiseCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, start, end, token_mask, rows, types, block):
        field = _field_from(q, k, start, end, types)
        batch, types, length, _ = field.shape
        fill = masked_fill_value(q.dtype)
        b, t, s, e = rows.unbind(-1)
        size = block_rows(field.shape, block)
        negative = torch.full((batch, types), float("-inf"), dtype=q.dtype, device=q.device)
        for first in range(0, length, size):
            last = min(length, first + size)
            scores = _negatives_block(field, token_mask, rows, first, last, fill)
            negative = torch.logaddexp(negative, torch.logsumexp(scores.flatten(-2), dim=-1))
        negative_term = F.softplus(negative)  # log(1 + Σ_neg e^s)
        positive = _positive_scores(field, token_mask, rows, fill)
        group = b * types + t
        positive_term = _log1p_sum_exp_grouped(positive, group, batch * types).view(batch, types)
        ctx.save_for_backward(q, k, start, end, token_mask, rows, negative_term, positive, positive_term)
        ctx.types, ctx.block = types, size
        return (negative_term + positive_term).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        q, k, start, end, token_mask, rows, negative_term, positive, positive_term = ctx.saved_tensors
        field = _field_from(q, k, start, end, ctx.types)
        batch, types, length, _ = field.shape
        scale = grad_output / (batch * types)
        fill = masked_fill_value(q.dtype)
        grads = _zeros_like_needed(field.tensors(), ctx.needs_input_grad[:4])
        with torch.no_grad():
            for first in range(0, length, ctx.block):
                last = min(length, first + ctx.block)
                scores = _negatives_block(field, token_mask, rows, first, last, fill)
                g = scores.sub_(negative_term[..., None, None]).exp_().mul_(scale)  # 0 where masked or positive
                _accumulate(grads, field.tensors(), first, last, g)
            b, t, s, e = rows.unbind(-1)
            g = -torch.exp(positive - positive_term.flatten()[b * types + t]) * scale  # 0 for invalid positives
            _positive_grads(grads, field, rows, g)
        return (*grads, None, None, None, None)


def _negatives_block(field: SpanField, token_mask, rows, first: int, last: int, fill: float) -> torch.Tensor:
    """A block's scores with invalid cells and positives replaced by ``fill`` (a fresh tensor)."""
    scores = field.block(first, last, first).masked_fill(~block_mask(token_mask, first, last), fill)
    return _fill_positives(scores, rows, first, last, fill)


def _fill_positives(scores: torch.Tensor, rows, first: int, last: int, fill: float) -> torch.Tensor:
    """``scores`` (a block from row and column ``first``) with the positive cells in it set to ``fill``, in place."""
    b, t, s, e = rows.unbind(-1)
    inside = (s >= first) & (s < last) & (e >= first)  # a positive with e < s is outside every block's columns
    if inside.any():
        scores[b[inside], t[inside], s[inside] - first, e[inside] - first] = fill
    return scores


def _positive_scores(field: SpanField, token_mask, rows, fill: float) -> torch.Tensor:
    """The score at each positive row, negated; ``fill`` for a positive outside the valid cells."""
    b, t, s, e = rows.unbind(-1)
    tq = t if field.q.shape[1] > 1 else torch.zeros_like(t)
    value = (field.q[b, tq, s] * field.k[b, tq, e]).sum(-1)
    if field.start is not None:
        value = value + field.start[b, t, s] + field.end[b, t, e]
    valid = token_mask.bool()[b, s] & token_mask.bool()[b, e] & (s <= e)
    return torch.where(valid, -value, torch.full_like(value, fill))


def _positive_grads(grads: list, field: SpanField, rows, g: torch.Tensor) -> None:
    """Add the gradient g of the positive cells' scores (one value per row) to the field's gradients."""
    b, t, s, e = rows.unbind(-1)
    tq = t if field.q.shape[1] > 1 else torch.zeros_like(t)
    if grads[0] is not None:
        grads[0].index_put_((b, tq, s), g[:, None] * field.k[b, tq, e], accumulate=True)
    if grads[1] is not None:
        grads[1].index_put_((b, tq, e), g[:, None] * field.q[b, tq, s], accumulate=True)
    if grads[2] is not None:
        grads[2].index_put_((b, t, s), g, accumulate=True)
    if grads[3] is not None:
        grads[3].index_put_((b, t, e), g, accumulate=True)


def blockwise_crossentropy(field: SpanField, targets: torch.Tensor, token_mask: torch.Tensor,
                           block: int | None = None) -> torch.Tensor:
    """:func:`regner.model.loss.multilabel_crossentropy` of the field's scores, block by block of ``block``
    start rows (None: automatic). ``targets``: sparse positive rows [N, 4] or a dense bool target."""
    rows = positive_rows(targets).to(field.q.device)
    start, end = field.start, field.end
    return _BlockwiseCE.apply(field.q, field.k, start, end, token_mask.bool(), rows, field.shape[1], block)


def _kl_normalizer(token_mask, batch: int, types: int, reduction: str, dtype):
    """What the KL's sum over valid cells is divided by (as regner.regularizers.kl: cells, or sample × type)."""
    if reduction == "mean":
        return valid_cells(token_mask, types).clamp_min(1).to(dtype)
    if reduction == "sum":
        return float(batch * types)
    raise ValueError(f"kl.reduction must be one of mean, sum, got {reduction!r}")


class _BlockwiseKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, normalizer, token_mask, types, block, *tensors):
        first_field = _field_from(*tensors[:4], types)
        second_field = _field_from(*tensors[4:], types)
        length = first_field.shape[-1]
        size = block_rows(first_field.shape, block)
        total = tensors[0].new_zeros(())
        for first in range(0, length, size):
            last = min(length, first + size)
            s, t = first_field.block(first, last, first), second_field.block(first, last, first)
            contribution = torch.sigmoid(s).sub_(torch.sigmoid(t)).mul_(s - t)
            total = total + contribution.masked_fill_(~block_mask(token_mask, first, last), 0.0).sum()
        ctx.save_for_backward(token_mask, *tensors)
        ctx.normalizer, ctx.types, ctx.block = normalizer, types, size
        return total / normalizer

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        token_mask, *tensors = ctx.saved_tensors
        first_field, second_field = _field_from(*tensors[:4], ctx.types), _field_from(*tensors[4:], ctx.types)
        needs = ctx.needs_input_grad[4:]
        grads_s = _zeros_like_needed(first_field.tensors(), needs[:4])
        grads_t = _zeros_like_needed(second_field.tensors(), needs[4:])
        scale = grad_output / ctx.normalizer
        length = first_field.shape[-1]
        with torch.no_grad():
            for first in range(0, length, ctx.block):
                last = min(length, first + ctx.block)
                s, t = first_field.block(first, last, first), second_field.block(first, last, first)
                invalid = ~block_mask(token_mask, first, last)
                difference, sigmoid_s, sigmoid_t = s - t, torch.sigmoid(s), torch.sigmoid(t)
                gap = sigmoid_s - sigmoid_t
                if any(g is not None for g in grads_s):
                    g = (sigmoid_s * (1 - sigmoid_s) * difference + gap).masked_fill_(invalid, 0.0).mul_(scale)
                    _accumulate(grads_s, first_field.tensors(), first, last, g)
                if any(g is not None for g in grads_t):
                    g = (-(sigmoid_t * (1 - sigmoid_t) * difference) - gap).masked_fill_(invalid, 0.0).mul_(scale)
                    _accumulate(grads_t, second_field.tensors(), first, last, g)
        return (None, None, None, None, *grads_s, *grads_t)


def blockwise_globalpointer_kl(first: SpanField, second: SpanField, token_mask: torch.Tensor,
                               reduction: str = "mean", block: int | None = None) -> torch.Tensor:
    """:func:`regner.regularizers.kl.globalpointer_kl` between the scores of two fields, block by block."""
    if first.shape != second.shape:
        raise ValueError(f"the two fields score different shapes: {tuple(first.shape)} and {tuple(second.shape)}")
    batch, types = first.shape[:2]
    normalizer = _kl_normalizer(token_mask, batch, types, reduction, first.q.dtype)
    return _BlockwiseKL.apply(normalizer, token_mask.bool(), types, block, *first.tensors(), *second.tensors())


class _BlockwiseRDrop(torch.autograd.Function):
    """CE of both halves of a doubled batch and the per-logit KL between the halves, in one pass over the
    blocks: each block's scores are computed once per pass for both terms, and the backward writes the
    weighted sum of both terms' score gradients into one set of field gradients."""

    @staticmethod
    def forward(ctx, q, k, start, end, token_mask, rows, types, block, normalizer):
        field = _field_from(q, k, start, end, types)
        batch2, types, length, _ = field.shape
        half = batch2 // 2
        fill = masked_fill_value(q.dtype)
        doubled = torch.cat((token_mask, token_mask))
        size = block_rows(field.shape, block)
        negative = torch.full((batch2, types), float("-inf"), dtype=q.dtype, device=q.device)
        kl = q.new_zeros(())
        for first in range(0, length, size):
            last = min(length, first + size)
            scores = field.block(first, last, first)
            valid = block_mask(token_mask, first, last)
            s, t = scores[:half], scores[half:]
            kl = kl + torch.sigmoid(s).sub_(torch.sigmoid(t)).mul_(s - t).masked_fill_(~valid, 0.0).sum()
            negatives = _fill_positives(scores.masked_fill(~torch.cat((valid, valid)), fill), rows, first, last, fill)
            negative = torch.logaddexp(negative, torch.logsumexp(negatives.flatten(-2), dim=-1))
        negative_term = F.softplus(negative)
        positive = _positive_scores(field, doubled, rows, fill)
        b, t, _, _ = rows.unbind(-1)
        positive_term = _log1p_sum_exp_grouped(positive, b * types + t, batch2 * types).view(batch2, types)
        ctx.save_for_backward(q, k, start, end, token_mask, rows, negative_term, positive, positive_term)
        ctx.types, ctx.block, ctx.normalizer = types, size, normalizer
        return (negative_term + positive_term).mean(), kl / normalizer

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ce, grad_kl):
        q, k, start, end, token_mask, rows, negative_term, positive, positive_term = ctx.saved_tensors
        field = _field_from(q, k, start, end, ctx.types)
        batch2, types, length, _ = field.shape
        half = batch2 // 2
        ce_scale, kl_scale = grad_ce / (batch2 * types), grad_kl / ctx.normalizer
        fill = masked_fill_value(q.dtype)
        grads = _zeros_like_needed(field.tensors(), ctx.needs_input_grad[:4])
        with torch.no_grad():
            for first in range(0, length, ctx.block):
                last = min(length, first + ctx.block)
                scores = field.block(first, last, first)
                valid = block_mask(token_mask, first, last)
                s, t = scores[:half], scores[half:]
                sigmoid_s, sigmoid_t, difference = torch.sigmoid(s), torch.sigmoid(t), s - t
                gap = sigmoid_s - sigmoid_t
                kl_s = (sigmoid_s * (1 - sigmoid_s) * difference + gap).masked_fill_(~valid, 0.0)
                kl_t = (-(sigmoid_t * (1 - sigmoid_t) * difference) - gap).masked_fill_(~valid, 0.0)
                del sigmoid_s, sigmoid_t, difference, gap
                negatives = _fill_positives(scores.masked_fill(~torch.cat((valid, valid)), fill), rows, first, last,
                                            fill)
                g = negatives.sub_(negative_term[..., None, None]).exp_().mul_(ce_scale)
                g[:half].add_(kl_s.mul_(kl_scale))
                g[half:].add_(kl_t.mul_(kl_scale))
                _accumulate(grads, field.tensors(), first, last, g)
            b, t, _, _ = rows.unbind(-1)
            g = -torch.exp(positive - positive_term.flatten()[b * types + t]) * ce_scale
            _positive_grads(grads, field, rows, g)
        return (*grads, None, None, None, None, None)


def blockwise_rdrop(field: SpanField, targets: torch.Tensor, token_mask: torch.Tensor, reduction: str = "mean",
                    block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """R-Drop's two terms on a doubled batch (rows [0, B) and [B, 2B) are two dropout samples of the same
    texts): the mean CE over both halves (:func:`regner.model.loss.multilabel_crossentropy` of the 2B
    scores, ``targets`` the rows of both halves) and the per-logit KL between the halves
    (:func:`regner.regularizers.kl.globalpointer_kl`); ``token_mask`` [B, L] is one half's."""
    half = field.shape[0] // 2
    if field.shape[0] != 2 * half or token_mask.shape[0] != half:
        raise ValueError(f"a doubled batch of 2 × {token_mask.shape[0]} rows expected, got {field.shape[0]}")
    rows = positive_rows(targets).to(field.q.device)
    types = field.shape[1]
    normalizer = _kl_normalizer(token_mask, half, types, reduction, field.q.dtype)
    return _BlockwiseRDrop.apply(*field.tensors(), token_mask.bool(), rows, types, block, normalizer)


@torch.no_grad()
def blockwise_decode(field: SpanField, token_mask: torch.Tensor, threshold: float = 0.0,
                     block: int | None = None) -> list[list[tuple[int, int, int, float]]]:
    """:func:`regner.model.decoding.decode_scores` of the field: (type, start, end, score) per batch row for
    every valid span scoring above ``threshold``, in the dense decoder's order; one block of scores at a time."""
    length = field.shape[-1]
    size = block_rows(field.shape, block)
    hits, values = [], []
    for first in range(0, length, size):
        last = min(length, first + size)
        scores = field.block(first, last, first)
        found = torch.nonzero((scores > threshold) & block_mask(token_mask, first, last))
        values.append(scores[tuple(found.unbind(-1))])
        found[:, 2:] += first
        hits.append(found)
    hits_all, values_all = torch.cat(hits), torch.cat(values)
    # the dense decoder lists hits in (batch, type, start, end) order: sort the blocks' hits back into it
    key = ((hits_all[:, 0] * field.shape[1] + hits_all[:, 1]) * length + hits_all[:, 2]) * length + hits_all[:, 3]
    order = torch.argsort(key)
    found_rows: list[list[tuple[int, int, int, float]]] = [[] for _ in range(field.shape[0])]
    for (b, t, s, e), value in zip(hits_all[order].tolist(), values_all[order].tolist()):
        found_rows[b].append((t, s, e, value))
    return found_rows

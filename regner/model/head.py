"""GlobalPointer span heads: every (type, start, end) gets its own logit.

Both heads rotate queries and keys with RoPE so that the start–end score depends on relative
position, and both return raw (at least) fp32 scores of shape [batch, types, len, len]; masking is applied by
the loss, the KL terms and the decoder (see :func:`span_mask`), which keeps masked values out of
every exp/log.

Precision: under autocast the projection to queries/keys runs in the autocast dtype (it is an
ordinary linear layer), but RoPE and the q·kᵀ product run in fp32 with autocast disabled. A bf16
q·kᵀ has errors of order 0.05 on logits of ±15, as large as the dropout differences R-Drop's KL
measures, so the scores are exact fp32 functions of the (rounded) queries and keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from regner.model.blockwise import SpanField
from regner.model.numerics import at_least_fp32


def rope_tables(length: int, dim: int, device=None, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [length, dim] for interleaved pairs (x0, x1), (x2, x3), ..."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even head size, got {dim}")
    inv_freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)
    angles = (torch.arange(length, device=device, dtype=torch.float64)[:, None] * inv_freq[None, :]).float()
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., length, dim] pairwise: (a, b) -> (a cos - b sin, b cos + a sin), in (at least) fp32."""
    x32 = at_least_fp32(x)
    rotated = torch.stack((-x32[..., 1::2], x32[..., 0::2]), dim=-1).reshape(x32.shape)
    return x32 * cos.to(x32.dtype) + rotated * sin.to(x32.dtype)


def fp32_scores(q: torch.Tensor, k: torch.Tensor, rope: bool) -> torch.Tensor:
    """RoPE (optional) and q·kᵀ/√d in (at least) fp32 with autocast off: [..., len, len]."""
    with torch.autocast(q.device.type, enabled=False):
        q, k = at_least_fp32(q), at_least_fp32(k)
        if rope:
            cos, sin = rope_tables(q.shape[-2], q.shape[-1], q.device)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])


def fp32_field(q: torch.Tensor, k: torch.Tensor, rope: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`fp32_scores` multiplies, without multiplying it: (at least) fp32 queries with RoPE and the
    1/√d scale, and keys with RoPE, for the blockwise loss (regner/model/blockwise.py)."""
    with torch.autocast(q.device.type, enabled=False):
        q, k = at_least_fp32(q), at_least_fp32(k)
        if rope:
            cos, sin = rope_tables(q.shape[-2], q.shape[-1], q.device)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q / math.sqrt(q.shape[-1]), k


def span_mask(token_mask: torch.Tensor) -> torch.Tensor:
    """Valid spans [batch, 1, len, len]: both ends are real tokens and start <= end."""
    valid = token_mask.bool()
    pair = valid[:, None, :, None] & valid[:, None, None, :]
    length = token_mask.shape[-1]
    upper = torch.ones(length, length, dtype=torch.bool, device=token_mask.device).triu()
    return pair & upper


class GlobalPointer(nn.Module):
    """One query/key projection per entity type (Su, 2021)."""

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64, rope: bool = True):
        super().__init__()
        self.num_types, self.head_size, self.rope = num_types, head_size, rope
        self.proj = nn.Linear(hidden_size, num_types * head_size * 2)

    def _queries_keys(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, _ = hidden.shape
        qk = self.proj(hidden).view(batch, length, self.num_types, 2, self.head_size)
        return qk[..., 0, :].transpose(1, 2), qk[..., 1, :].transpose(1, 2)  # [B, T, L, D]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return fp32_scores(*self._queries_keys(hidden), self.rope)

    def field(self, hidden: torch.Tensor) -> SpanField:
        """The scores as a :class:`SpanField` (never materialised): ``field(h).dense()`` = ``forward(h)``."""
        return SpanField(*fp32_field(*self._queries_keys(hidden), self.rope))


class EfficientGlobalPointer(nn.Module):
    """Shared start/end projection plus per-type start and end biases (Su, 2022): far fewer
    parameters than :class:`GlobalPointer` for many types, usually with equal accuracy."""

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64, rope: bool = True):
        super().__init__()
        self.num_types, self.head_size, self.rope = num_types, head_size, rope
        self.proj = nn.Linear(hidden_size, head_size * 2)
        self.type_bias = nn.Linear(head_size * 2, num_types * 2)

    def _parts(self, hidden: torch.Tensor):
        qk = self.proj(hidden)
        q, k = qk[..., : self.head_size], qk[..., self.head_size :]
        with torch.autocast(hidden.device.type, enabled=False):
            bias = self.type_bias(at_least_fp32(qk)).transpose(1, 2) / 2  # [B, 2T, L]
        return q, k, bias[:, 0::2], bias[:, 1::2]  # start and end biases [B, T, L]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        q, k, start_bias, end_bias = self._parts(hidden)
        shared = fp32_scores(q, k, self.rope)  # [B, L, L]
        return shared[:, None] + start_bias[..., None] + end_bias[:, :, None, :]

    def field(self, hidden: torch.Tensor) -> SpanField:
        """The scores as a :class:`SpanField` (q and k shared by every type, the biases per type)."""
        q, k, start_bias, end_bias = self._parts(hidden)
        q, k = fp32_field(q[:, None], k[:, None], self.rope)
        return SpanField(q, k, start_bias, end_bias, types=self.num_types)


HEADS = {"globalpointer": GlobalPointer, "efficient": EfficientGlobalPointer}


def build_head(kind: str, hidden_size: int, num_types: int, head_size: int = 64, rope: bool = True) -> nn.Module:
    if kind not in HEADS:
        raise ValueError(f"unknown head type {kind!r}; choose one of {sorted(HEADS)}")
    return HEADS[kind](hidden_size, num_types, head_size, rope)

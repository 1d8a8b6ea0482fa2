import math

import torch

from regner.model.decoding import decode_scores
from regner.model.head import EfficientGlobalPointer, GlobalPointer, apply_rope, rope_tables, span_mask


def test_rope_score_depends_only_on_relative_position():
    torch.manual_seed(0)
    dim, length = 16, 12
    cos, sin = rope_tables(length, dim)
    q, k = torch.randn(dim), torch.randn(dim)
    rotated_q = apply_rope(q.expand(length, dim), cos, sin)
    rotated_k = apply_rope(k.expand(length, dim), cos, sin)
    score = rotated_q @ rotated_k.T  # score[m, n] for q at m, k at n
    for shift in (1, 3, 5):
        assert torch.allclose(score[: length - shift, : length - shift], score[shift:, shift:], atol=1e-5)
    assert not torch.allclose(score[0, 1], score[0, 2])


def test_rope_rotates_interleaved_pairs():
    cos, sin = rope_tables(2, 4)
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 2)
    out = apply_rope(x, cos, sin)
    angle0, angle1 = 1.0, 10000 ** (-2 / 4)
    expected = torch.tensor([math.cos(angle0), math.sin(angle0), math.cos(angle1), math.sin(angle1)])
    assert torch.allclose(out[1], expected, atol=1e-6)
    assert torch.allclose(out[0], x[0])  # position 0 is not rotated
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1))


def test_span_mask_is_upper_triangular_over_real_tokens():
    token_mask = torch.tensor([[False, True, True, False, False]])
    mask = span_mask(token_mask)[0, 0]
    assert mask.nonzero().tolist() == [[1, 1], [1, 2], [2, 2]]


def test_heads_shapes_and_fp32_output():
    hidden = torch.randn(2, 7, 32)
    for head in (GlobalPointer(32, 3, 8), EfficientGlobalPointer(32, 3, 8)):
        scores = head(hidden)
        assert scores.shape == (2, 3, 7, 7) and scores.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert GlobalPointer(32, 3, 8)(hidden).dtype == torch.float32


def test_decode_known_score_matrix():
    scores = torch.full((1, 2, 4, 4), -5.0)
    scores[0, 0, 1, 2] = 3.0   # valid
    scores[0, 1, 2, 2] = 0.5   # valid
    scores[0, 1, 2, 1] = 9.0   # lower triangle: invalid
    scores[0, 0, 0, 3] = 9.0   # touches a special token: invalid
    scores[0, 0, 1, 1] = 0.0   # not above threshold 0
    token_mask = torch.tensor([[False, True, True, False]])
    found = decode_scores(scores, span_mask(token_mask), threshold=0.0)
    assert found == [[(0, 1, 2, 3.0), (1, 2, 2, 0.5)]]
    assert decode_scores(scores, span_mask(token_mask), threshold=1.0) == [[(0, 1, 2, 3.0)]]


def float64_reference(head, hidden):
    """The head's scores computed from its (autocast-rounded) queries and keys in float64."""
    def fp64_scores(q, k):
        cos, sin = rope_tables(q.shape[-2], q.shape[-1])
        q, k = apply_rope(q, cos.double(), sin.double()), apply_rope(k, cos.double(), sin.double())
        return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])

    with torch.autocast("cpu", dtype=torch.bfloat16):
        qk = head.proj(hidden)
    batch, length, _ = hidden.shape
    if isinstance(head, GlobalPointer):
        qk = qk.view(batch, length, head.num_types, 2, head.head_size)
        q, k = qk[..., 0, :].transpose(1, 2), qk[..., 1, :].transpose(1, 2)
        return fp64_scores(q.double(), k.double())
    q, k = qk[..., : head.head_size].double(), qk[..., head.head_size :].double()
    bias = (qk.double() @ head.type_bias.weight.double().T + head.type_bias.bias.double()).transpose(1, 2) / 2
    return fp64_scores(q, k)[:, None] + bias[:, 0::2, :, None] + bias[:, 1::2, None, :]


def test_span_scores_are_fp32_under_bf16_autocast():
    """RoPE and q·kᵀ must not run in bf16: on logits of ±15 a bf16 product is off by ~0.05."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 40, 64) * 3
    for head in (GlobalPointer(64, 3, 64), EfficientGlobalPointer(64, 3, 64)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            scores = head(hidden)
        reference = float64_reference(head, hidden)
        assert scores.dtype == torch.float32 and reference.abs().max() > 5
        assert (scores.double() - reference).abs().max() < 1e-4


def test_decoding_reads_all_scores_in_one_transfer(monkeypatch):
    """One host read for the scores of all predicted spans, not a float() per span."""
    scores = torch.full((2, 3, 6, 6), 2.0)
    mask = span_mask(torch.ones(2, 6, dtype=torch.bool))
    reads = []
    for name in ("__float__", "item"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, _o=original: reads.append(1) or _o(self))
    found = decode_scores(scores, mask)
    assert sum(len(row) for row in found) == 2 * 3 * 21 and not reads

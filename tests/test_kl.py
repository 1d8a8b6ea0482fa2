import math

import pytest
import torch

from regner.model.head import span_mask
from regner.regularizers.kl import globalpointer_kl, mse_kl, softmax_kl

VARIANTS = [globalpointer_kl, softmax_kl, mse_kl]


def example(seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, 3, 5, 5, generator=g) * 4
    t = torch.randn(2, 3, 5, 5, generator=g) * 4
    mask = span_mask(torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool))
    return s, t, mask


def bernoulli_kl(p, q):
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_globalpointer_kl_is_explicit_symmetric_bernoulli_kl():
    s, t, mask = example()
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    total = 0.0
    for b, _, i, j in mask.nonzero().tolist():
        for k in range(s.shape[1]):
            p, q = sigmoid(float(s[b, k, i, j])), sigmoid(float(t[b, k, i, j]))
            total += bernoulli_kl(p, q) + bernoulli_kl(q, p)
    expected = total / (s.shape[0] * s.shape[1])
    assert globalpointer_kl(s, t, mask, reduction="sum").item() == pytest.approx(expected, rel=1e-5)
    cells = int(mask.sum()) * s.shape[1]
    assert globalpointer_kl(s, t, mask).item() == pytest.approx(total / cells, rel=1e-5)


def test_softmax_kl_is_explicit_symmetric_kl_of_span_softmax():
    s, t, mask = example(1)
    total = 0.0
    for b in range(s.shape[0]):
        valid = mask[b, 0]
        for k in range(s.shape[1]):
            p = torch.softmax(s[b, k][valid].double(), 0)
            q = torch.softmax(t[b, k][valid].double(), 0)
            total += float((p * (p / q).log()).sum() + (q * (q / p).log()).sum())
    assert softmax_kl(s, t, mask, reduction="sum").item() == pytest.approx(total / 6, rel=1e-5)
    assert softmax_kl(s, t, mask).item() == pytest.approx(total / (int(mask.sum()) * 3), rel=1e-5)


def test_mse_kl():
    s, t, mask = example(2)
    m = mask.expand_as(s)
    assert mse_kl(s, t, mask, reduction="sum").item() == pytest.approx(float(((s - t)[m] ** 2).sum() / 6), rel=1e-5)
    assert mse_kl(s, t, mask).item() == pytest.approx(float(((s - t)[m] ** 2).mean()), rel=1e-5)


@pytest.mark.parametrize("kl", [globalpointer_kl, mse_kl])
def test_mean_reduction_does_not_grow_with_length_but_sum_does(kl):
    """The same per-span disagreement weighs the same at 8 and at 128 tokens with the mean."""
    values = {}
    for length in (8, 128):
        s = torch.full((2, 3, length, length), 0.5)
        mask = span_mask(torch.ones(2, length, dtype=torch.bool))
        values[length] = (kl(s, -s, mask).item(), kl(s, -s, mask, reduction="sum").item())
    assert values[8][0] == pytest.approx(values[128][0], rel=1e-6)
    assert values[128][1] > 200 * values[8][1]


def test_unknown_reduction_is_rejected():
    from regner.regularizers.kl import get_kl

    with pytest.raises(ValueError, match="kl.reduction"):
        get_kl("globalpointer", "median")


@pytest.mark.parametrize("kl", VARIANTS)
def test_identical_inputs_give_zero_and_kl_is_symmetric(kl):
    s, t, mask = example(3)
    assert kl(s, s, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert kl(s, t, mask).item() == pytest.approx(kl(t, s, mask).item(), rel=1e-5)
    assert kl(s, t, mask).item() > 0


@pytest.mark.parametrize("kl", VARIANTS)
def test_masked_positions_contribute_exactly_zero_and_no_nan(kl):
    s, t, mask = example(4)
    outside = ~mask.expand_as(s)
    wild_s, wild_t = s.clone(), t.clone()
    wild_s[outside], wild_t[outside] = float("-inf"), float("-inf")
    value = kl(wild_s, wild_t, mask)
    assert torch.isfinite(value) and value.item() == pytest.approx(kl(s, t, mask).item(), rel=1e-6)
    # the head's finite "masked" scores: forward and gradient both finite
    big_s, big_t = s.clone().requires_grad_(), t.clone()
    big_t[outside] = -1e4
    with torch.no_grad():
        big_s[outside] = 1e4
    out = kl(big_s, big_t, mask)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(big_s.grad).all()
    assert torch.all(big_s.grad[outside] == 0)


@pytest.mark.parametrize("kl", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_finite_in_half_precision_and_under_autocast(kl, dtype):
    s, t, mask = example(5)
    s, t = (s * 10).to(dtype), (t * 10).to(dtype)
    assert torch.isfinite(kl(s, t, mask))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(kl(s, t, mask))
    assert kl(s, t, mask).dtype == torch.float32


def test_empty_mask_gives_zero_not_nan():
    s, t, _ = example(6)
    mask = torch.zeros(2, 1, 5, 5, dtype=torch.bool)
    for kl in VARIANTS:
        assert kl(s, t, mask).item() == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_globalpointer_kl_hand_written_gradient_matches_autograd(reduction):
    s, t, mask = example(7)
    s, t = s.double().requires_grad_(), t.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: globalpointer_kl(a, b, mask, reduction), (s, t))
    # and against autograd through the explicit formula
    contribution = (torch.sigmoid(s) - torch.sigmoid(t)) * (s - t)
    expected = contribution[mask.expand_as(s)].sum() / (int(mask.sum()) * 3 if reduction == "mean" else 6)
    grads = torch.autograd.grad(globalpointer_kl(s, t, mask, reduction), (s, t))
    for got, want in zip(grads, torch.autograd.grad(expected, (s, t))):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)

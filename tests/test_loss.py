import math

import torch

from regner.model.head import span_mask
from regner.model.loss import dense_crossentropy as dense_reference
from regner.model.loss import multilabel_crossentropy


def reference_loss(scores, targets, mask):
    """Loop form: mean over (sample, type) of log(1+Σneg e^s) + log(1+Σpos e^-s)."""
    batch, types, length, _ = scores.shape
    total = 0.0
    for b in range(batch):
        for t in range(types):
            neg = pos = 0.0
            for i in range(length):
                for j in range(length):
                    if not mask[b, 0, i, j]:
                        continue
                    s = float(scores[b, t, i, j])
                    if targets[b, t, i, j]:
                        pos += math.exp(-s)
                    else:
                        neg += math.exp(s)
            total += math.log(1 + neg) + math.log(1 + pos)
    return total / (batch * types)


def test_matches_reference_formula():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 5, 5) * 3
    token_mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    mask = span_mask(token_mask)
    targets = torch.zeros(2, 3, 5, 5, dtype=torch.bool)
    targets[0, 0, 1, 2] = targets[0, 2, 3, 3] = targets[1, 1, 1, 1] = True
    loss = multilabel_crossentropy(scores, targets, mask)
    assert math.isclose(loss.item(), reference_loss(scores, targets, mask), rel_tol=1e-5)


def test_masked_positions_do_not_matter_and_stay_finite():
    scores = torch.randn(1, 1, 4, 4)
    mask = span_mask(torch.tensor([[0, 1, 1, 0]], dtype=torch.bool))
    targets = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    wild = scores.clone()
    wild[~mask.expand_as(wild)] = 1e30
    assert torch.equal(multilabel_crossentropy(scores, targets, mask), multilabel_crossentropy(wild, targets, mask))
    half = multilabel_crossentropy(scores.half(), targets, mask)
    assert torch.isfinite(half)


def test_perfect_scores_give_near_zero_loss():
    mask = span_mask(torch.ones(1, 3, dtype=torch.bool))
    targets = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    targets[0, 0, 0, 1] = True
    scores = torch.where(targets, torch.tensor(30.0), torch.tensor(-30.0))
    assert multilabel_crossentropy(scores, targets, mask).item() < 1e-10


def random_case(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    scores = (torch.randn(3, 2, 6, 6, dtype=dtype) * 4).requires_grad_()
    mask = span_mask(torch.tensor([[0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool))
    targets = torch.zeros(3, 2, 6, 6, dtype=torch.bool)
    targets[0, 0, 1, 2] = targets[0, 0, 3, 4] = targets[0, 1, 2, 2] = targets[2, 1, 1, 5] = True
    targets[1, 0, 3, 4] = True  # outside the mask: must be ignored
    return scores, targets, mask


def test_sparse_rows_dense_target_and_reference_agree_with_gradients():
    scores, targets, mask = random_case()
    expected = dense_reference(scores, targets, mask)
    (expected_grad,) = torch.autograd.grad(expected, scores)
    for target in (targets, targets.nonzero()):
        loss = multilabel_crossentropy(scores, target, mask)
        (grad,) = torch.autograd.grad(loss, scores)
        assert torch.allclose(loss, expected, rtol=1e-12)
        assert torch.allclose(grad, expected_grad, rtol=1e-10, atol=1e-14)


def test_second_derivatives_are_exact_for_the_gradient_penalty():
    scores, targets, mask = random_case(1)
    rows = targets.nonzero()
    assert torch.autograd.gradgradcheck(lambda x: multilabel_crossentropy(x, rows, mask), (scores,))


def test_backward_twice_through_a_retained_graph_gives_the_same_gradient():
    scores, targets, mask = random_case(2)
    loss = multilabel_crossentropy(scores, targets, mask)
    (first,) = torch.autograd.grad(loss, scores, retain_graph=True)
    (second,) = torch.autograd.grad(loss, scores)
    assert torch.equal(first, second)


def test_loss_and_backward_keep_one_copy_of_the_scores():
    """Forward + backward of the CE allocate about one [B, T, L, L] fp32 tensor in all (the masked
    copy, reused in place as the gradient); the dense textbook form needs about seven."""
    from regner.training.profiling import TensorMemoryTracker

    batch, types, length = 2, 3, 64
    scores = torch.randn(batch, types, length, length, requires_grad=True)
    mask = span_mask(torch.ones(batch, length, dtype=torch.bool))
    rows = torch.tensor([[0, 1, 3, 5], [1, 2, 4, 4]])
    one_copy = scores.numel() * 4
    with TensorMemoryTracker() as new:
        multilabel_crossentropy(scores, rows, mask).backward()
    scores.grad = None
    dense = torch.zeros(batch, types, length, length, dtype=torch.bool)
    dense[rows.unbind(-1)] = True
    with TensorMemoryTracker() as old:
        dense_reference(scores, dense, mask).backward()
    assert new.peak_bytes < 1.2 * one_copy
    assert old.peak_bytes > 4 * one_copy  # the tracker does see the textbook form's copies

import math

import torch

from regner.head import span_mask
from regner.loss import multilabel_crossentropy


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

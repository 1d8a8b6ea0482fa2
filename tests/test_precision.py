"""Mixed precision: finite losses for every regularizer, and the same decoded spans as fp32."""

import functools

import pytest
import torch

from regner.model.decoding import decode_scores
from regner.model.head import span_mask
from regner.regularizers.fgm import FGM
from regner.regularizers.gp import GradientPenalty
from regner.regularizers.kl import softmax_kl
from regner.regularizers.noise import GaussianNoise
from regner.regularizers.none import NoRegularizer
from regner.regularizers.rdrop import RDrop
from regner.regularizers.vat import VAT

from .helpers import tiny_batch, tiny_model, training_step

CPU_HALF = [torch.bfloat16, torch.float16]


@pytest.fixture(scope="module")
def fitted():
    """A tiny model trained in fp32 until it decodes the toy batch's gold spans exactly."""
    model, batch = tiny_model(seed=1, hidden=32), tiny_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        NoRegularizer().step(training_step(model, batch))
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return model, batch


def decoded(model, batch, dtype=None):
    context = torch.autocast("cpu", dtype=dtype) if dtype else torch.no_grad()
    with torch.no_grad(), context:
        scores = model(batch["input_ids"], batch["attention_mask"])
    assert scores.dtype == torch.float32
    return [[(t, s, e) for t, s, e, _ in row] for row in decode_scores(scores, span_mask(batch["token_mask"]))]


def test_fp32_model_fits_the_toy_batch(fitted):
    model, batch = fitted
    gold = [[(t, s, e) for b, t, s, e in batch["spans"].tolist() if b == row] for row in range(2)]
    assert [sorted(r) for r in decoded(model, batch)] == [sorted(r) for r in gold]


@pytest.mark.parametrize("dtype", CPU_HALF)
def test_half_precision_decodes_the_same_spans(fitted, dtype):
    model, batch = fitted
    assert decoded(model, batch, dtype) == decoded(model, batch)


@pytest.mark.parametrize("regularizer", [NoRegularizer(), RDrop(alpha=4), FGM(), GradientPenalty(),
                                         VAT(), GaussianNoise(sigma=0.1, consistency=True)])
@pytest.mark.parametrize("dtype", CPU_HALF)
def test_every_regularizer_is_finite_under_autocast(regularizer, dtype):
    model, batch = tiny_model(dropout=0.1), tiny_batch()
    step = training_step(model, batch, kl=softmax_kl)
    step.autocast = functools.partial(torch.autocast, "cpu", dtype=dtype)
    terms = regularizer.step(step)
    assert all(torch.isfinite(v) for v in terms.values()), terms
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

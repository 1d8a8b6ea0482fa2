"""The blockwise GlobalPointer (regner/model/blockwise.py) against the dense path it replaces: loss, KL and
decoding equal, gradients of every field tensor equal, on random shapes with padding, odd lengths, lengths
that are no multiple of the block, positives outside the valid cells and empty targets."""

from __future__ import annotations

import pytest
import torch

from regner.model.blockwise import (
    SpanField,
    blockwise_crossentropy,
    blockwise_decode,
    blockwise_globalpointer_kl,
    blockwise_rdrop,
    valid_cells,
)
from regner.model.decoding import decode_scores
from regner.model.head import span_mask
from regner.model.loss import dense_crossentropy, multilabel_crossentropy
from regner.regularizers.kl import globalpointer_kl


def make_field(batch, types, length, dim=8, biases=False, shared=False, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    qk_types = 1 if shared else types

    def leaf(*shape):
        return (torch.randn(*shape, generator=generator) * scale).requires_grad_()

    q, k = leaf(batch, qk_types, length, dim), leaf(batch, qk_types, length, dim)
    start, end = (leaf(batch, types, length), leaf(batch, types, length)) if biases else (None, None)
    return SpanField(q, k, start, end, types if shared else None)


def token_mask_for(batch, length, seed=0):
    generator = torch.Generator().manual_seed(seed + 1)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length  # one row unpadded
    return torch.arange(length)[None, :] < lengths[:, None]


def random_rows(batch, types, length, count, seed=0):
    generator = torch.Generator().manual_seed(seed + 2)
    cells = {(int(torch.randint(batch, (1,), generator=generator)), int(torch.randint(types, (1,), generator=generator)),
              int(torch.randint(length, (1,), generator=generator)), int(torch.randint(length, (1,), generator=generator)))
             for _ in range(count)}  # some fall outside the mask (end < start, or on padding): they count for nothing
    return torch.tensor(sorted(cells), dtype=torch.long).view(-1, 4)


def close(got: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal within ``rel`` of the tensor's largest magnitude (element-wise relative error means nothing
    for the gradient cells that are near zero)."""
    return bool((got - expected).abs().max() <= rel * expected.abs().max().clamp_min(1e-12))


def grads(field: SpanField, loss: torch.Tensor) -> list:
    present = [x for x in field.tensors() if x is not None]
    return torch.autograd.grad(loss, present)


SHAPES = [  # (batch, types, length, block, biases, shared)
    (3, 4, 17, 5, False, False), (2, 3, 9, 4, True, True), (1, 2, 1, 1, False, False), (4, 5, 23, None, True, False),
    (2, 1, 12, 12, False, False), (3, 2, 31, 7, True, True),
]


@pytest.mark.parametrize("batch, types, length, block, biases, shared", SHAPES)
@pytest.mark.parametrize("positives", [0, 1, 12])
def test_the_blockwise_loss_and_its_gradients_equal_the_dense_ones(batch, types, length, block, biases, shared, positives):
    field = make_field(batch, types, length, biases=biases, shared=shared, scale=1.5)
    tokens = token_mask_for(batch, length)
    rows = random_rows(batch, types, length, positives)
    dense = multilabel_crossentropy(field.dense(), rows, span_mask(tokens))
    blockwise = blockwise_crossentropy(field, rows, tokens, block=block)
    assert blockwise.item() == pytest.approx(dense.item(), rel=1e-5)
    # and both equal the textbook dense form, written independently
    target = torch.zeros(field.shape, dtype=torch.bool)
    if len(rows):
        target[tuple(rows.unbind(-1))] = True
    assert dense_crossentropy(field.dense(), target, span_mask(tokens)).item() == pytest.approx(dense.item(), rel=1e-5)
    for expected, got in zip(grads(field, dense), grads(field, blockwise), strict=True):
        assert close(got, expected)


def test_the_blockwise_loss_passes_a_gradient_check_in_double_precision():
    field = make_field(2, 3, 7, dim=4, biases=True, seed=3)
    field = SpanField(*(x.detach().double().requires_grad_() for x in field.tensors()))
    tokens = token_mask_for(2, 7, seed=3)
    rows = random_rows(2, 3, 7, 5, seed=3)
    assert torch.autograd.gradcheck(lambda q, k, s, e: blockwise_crossentropy(SpanField(q, k, s, e), rows, tokens, 3),
                                    field.tensors())
    other = SpanField(*(x.detach() + 0.3 * torch.randn_like(x) for x in field.tensors()))
    assert torch.autograd.gradcheck(lambda q, k, s, e: blockwise_globalpointer_kl(SpanField(q, k, s, e), other, tokens,
                                                                                 block=2), field.tensors())


@pytest.mark.parametrize("batch, types, length, block, biases, shared", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_blockwise_kl_and_its_gradients_equal_the_dense_ones(batch, types, length, block, biases, shared, reduction):
    first = make_field(batch, types, length, biases=biases, shared=shared, seed=1)
    second = make_field(batch, types, length, biases=biases, shared=shared, seed=2)
    tokens = token_mask_for(batch, length)
    dense = globalpointer_kl(first.dense(), second.dense(), span_mask(tokens), reduction)
    blockwise = blockwise_globalpointer_kl(first, second, tokens, reduction, block=block)
    assert blockwise.item() == pytest.approx(dense.item(), rel=1e-5)
    present = [x for f in (first, second) for x in f.tensors() if x is not None]
    for expected, got in zip(torch.autograd.grad(dense, present, retain_graph=True),
                             torch.autograd.grad(blockwise, present), strict=True):
        assert close(got, expected)
    # a detached reference (VAT's clean pass): gradients reach the first field only
    half = blockwise_globalpointer_kl(first, second.detach(), tokens, reduction, block=block)
    reference = globalpointer_kl(first.dense(), second.dense().detach(), span_mask(tokens), reduction)
    assert close(torch.autograd.grad(half, first.q)[0], torch.autograd.grad(reference, first.q)[0])


@pytest.mark.parametrize("batch, types, length, block, biases, shared", SHAPES)
def test_fused_rdrop_equals_the_dense_ce_of_both_halves_and_kl_between_them(batch, types, length, block, biases,
                                                                             shared):
    field = make_field(2 * batch, types, length, biases=biases, shared=shared, seed=5, scale=1.5)
    tokens = token_mask_for(batch, length, seed=5)
    rows = random_rows(2 * batch, types, length, 3 * batch, seed=5)
    scores = field.dense()
    dense_ce = multilabel_crossentropy(scores, rows, span_mask(torch.cat((tokens, tokens))))
    dense_kl = globalpointer_kl(scores[:batch], scores[batch:], span_mask(tokens))
    ce, kl = blockwise_rdrop(field, rows, tokens, block=block)
    assert ce.item() == pytest.approx(dense_ce.item(), rel=1e-5) and kl.item() == pytest.approx(dense_kl.item(), rel=1e-5)
    # R-Drop's loss, CE + w·KL: one backward through both outputs
    for expected, got in zip(grads(field, dense_ce + 7.0 * dense_kl), grads(field, ce + 7.0 * kl), strict=True):
        assert close(got, expected)


def test_valid_cells_counts_what_the_dense_mask_holds():
    tokens = token_mask_for(5, 13)
    tokens[2, 4] = False  # a hole: the dense mask counts pairs of real tokens, contiguous or not
    assert int(valid_cells(tokens, 3)) == int(span_mask(tokens).expand(5, 3, 13, 13).sum())


@pytest.mark.parametrize("batch, types, length, block, biases, shared", SHAPES)
def test_blockwise_decoding_finds_the_dense_decoders_spans_in_its_order(batch, types, length, block, biases, shared):
    field = make_field(batch, types, length, biases=biases, shared=shared, seed=4)
    tokens = token_mask_for(batch, length, seed=4)
    with torch.no_grad():
        expected = decode_scores(field.dense(), span_mask(tokens), threshold=0.5)
    got = blockwise_decode(field, tokens, threshold=0.5, block=block)
    assert [[hit[:3] for hit in row] for row in got] == [[hit[:3] for hit in row] for row in expected]
    assert any(expected) and all(g[3] == pytest.approx(e[3], rel=1e-5, abs=1e-6)
                                 for row_g, row_e in zip(got, expected) for g, e in zip(row_g, row_e))


# -- through the regularizers and the trainer ------------------------------------------------------------
def regularizers():
    from regner.regularizers.awp import AWP
    from regner.regularizers.fgm import FGM
    from regner.regularizers.gp import GradientPenalty
    from regner.regularizers.noise import GaussianNoise
    from regner.regularizers.none import NoRegularizer
    from regner.regularizers.pgd import PGD
    from regner.regularizers.rdrop import RDrop
    from regner.regularizers.vat import VAT

    return {"none": NoRegularizer, "rdrop": RDrop, "vat": VAT, "fgm": FGM, "pgd": PGD, "awp": AWP,
            "gp": GradientPenalty, "noise": GaussianNoise}


REGULARIZERS = [("none", {}), ("rdrop", {}), ("vat", {}), ("fgm", {}), ("pgd", {}), ("awp", {"start_epoch": 1}),
                ("gp", {}), ("gp", {"mode": "approx"}), ("noise", {"consistency": True})]


@pytest.mark.parametrize("name, knobs", REGULARIZERS)
@pytest.mark.parametrize("kl_name", ["globalpointer", "softmax"])
def test_every_regularizer_gives_the_dense_gradients_with_a_blockwise_head(name, knobs, kl_name):
    from regner.regularizers.kl import get_kl

    from .helpers import grads as model_grads
    from .helpers import tiny_batch, tiny_model, training_step

    found = {}
    for blockwise in (False, True):
        model, batch = tiny_model(dropout=0.1, seed=7), tiny_batch()
        model.train()
        step = training_step(model, batch, kl=get_kl(kl_name))
        if blockwise:  # the same step, the SpanField path (a fresh TrainingStep wraps its KL)
            step = type(step)(**{**step.__dict__, "kl": get_kl(kl_name), "blockwise": True, "block_rows": 2,
                                 "plain_mask": None})
        torch.manual_seed(11)  # dropout, VAT's start and noise draw alike in both paths
        terms = regularizers()[name](**knobs).step(step)
        found[blockwise] = (float(terms["loss"]), model_grads(model))
    assert found[True][0] == pytest.approx(found[False][0], rel=1e-5)
    scale = max(float(g.abs().max()) for g in found[False][1].values())
    for key, expected in found[False][1].items():  # a gradient that is 0 in exact arithmetic (attention's key
        # bias) is rounding noise on both paths: measured against a thousandth of the largest gradient
        limit = 1e-4 * max(float(expected.abs().max()), 1e-3 * scale)
        assert float((found[True][1][key] - expected).abs().max()) <= limit, key


def test_a_blockwise_run_matches_the_dense_run_on_the_demo_data(tmp_path, monkeypatch):
    """Issue #35's check: the same first-step loss (1e-5) and dev F1 within 0.002 after 3 epochs, same seed."""
    from hydra import compose, initialize_config_dir

    from regner.config.paths import config_dir
    from regner.training.run import run_training
    from regner.training.trainer import Trainer

    def compose_config(*overrides):  # the default run: the whole demo corpus, the default tiny encoder
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=["trainer.progress=false", *overrides])

    original, first = Trainer.training_step, {}

    def recording(self, batch):
        terms = original(self, batch)
        first.setdefault(self.cfg.head.blockwise, float(terms["loss"]))
        return terms

    monkeypatch.setattr(Trainer, "training_step", recording)
    runs = {blockwise: run_training(compose_config("trainer.max_epochs=3", "regularizer=rdrop",
                                                   f"head.blockwise={blockwise}"), tmp_path / str(blockwise))
            for blockwise in (False, True)}
    assert first[True] == pytest.approx(first[False], rel=1e-5)
    assert abs(runs[True]["dev"]["f1"] - runs[False]["dev"]["f1"]) <= 0.002


@pytest.mark.parametrize("override, key", [("head.blockwise=maybe", "head.blockwise"), ("head.block_rows=0", "head.block_rows")])
def test_the_blockwise_keys_are_checked_before_any_data_is_read(override, key):
    from regner.config.validation import validate_config
    from regner.errors import ConfigError

    from .test_training import compose_config

    with pytest.raises(ConfigError, match=key):
        validate_config(compose_config(override))


def test_auto_goes_blockwise_for_long_windows_only():
    from regner.model.blockwise import AUTO_MIN_LENGTH, use_blockwise

    from .helpers import tiny_batch, tiny_model, training_step

    assert use_blockwise("auto", AUTO_MIN_LENGTH) and not use_blockwise("auto", AUTO_MIN_LENGTH - 1)
    assert use_blockwise(True, 3) and not use_blockwise(False, 4096)
    step = training_step(tiny_model(), tiny_batch())  # 6 tokens: the dense path
    auto = type(step)(**{**step.__dict__, "blockwise": "auto", "plain_mask": None})
    assert auto.blockwise is False and not isinstance(auto.scores(), SpanField)
    forced = type(step)(**{**step.__dict__, "blockwise": True, "plain_mask": None})
    assert isinstance(forced.scores(), SpanField)

"""PGD, AWP and stacked regularizers against independent computations of what they should do."""

import copy

import pytest
import torch

from regner.errors import ConfigError
from regner.regularizers.awp import AWP
from regner.regularizers.fgm import FGM
from regner.regularizers.none import NoRegularizer
from regner.regularizers.pgd import PGD
from regner.regularizers.rdrop import RDrop
from regner.regularizers.stack import Stack

from .helpers import grads, tiny_batch, tiny_model, training_step


def embedding_weights_seen(model):
    """The word-embedding matrix as each forward of ``model`` sees it (clean pass first)."""
    seen = []
    embeddings = model.encoder.get_input_embeddings()
    embeddings.register_forward_pre_hook(lambda module, args: seen.append(module.weight.detach().clone()))
    return seen


def used_rows(batch, weight):
    """‖embedding rows of the batch's real tokens‖, computed directly."""
    ids = sorted(set(batch["input_ids"][batch["attention_mask"].bool()].tolist()))
    return weight[ids].norm()


@pytest.mark.parametrize("relative", [True, False])
def test_pgd_iterates_stay_in_the_ball_and_reach_its_surface(relative):
    model, batch = tiny_model(), tiny_batch()
    seen = embedding_weights_seen(model)
    epsilon = 0.1 if relative else 0.5
    PGD(epsilon=epsilon, step_size=epsilon * 0.7, steps=4, relative=relative).step(training_step(model, batch))
    clean, *adversarial = seen
    assert len(adversarial) == 4
    radius = epsilon * (used_rows(batch, clean) if relative else 1.0)
    norms = [float((w - clean).norm()) for w in adversarial]
    assert all(n <= float(radius) * (1 + 2e-6) for n in norms)
    assert norms[0] == pytest.approx(0.7 * float(radius), rel=1e-5)  # the first step is step_size long
    assert norms[-1] == pytest.approx(float(radius), rel=1e-5)  # 4 × 0.7ε steps end on the surface, projected
    assert torch.equal(model.encoder.get_input_embeddings().weight.detach(), clean)  # restored bit for bit


def test_pgd_on_embeds_stays_in_each_samples_ball():
    model, batch = tiny_model(), tiny_batch()
    inputs = []
    model.register_forward_pre_hook(lambda module, args, kwargs: inputs.append(kwargs.get("inputs_embeds")),
                                    with_kwargs=True)
    PGD(epsilon=0.1, step_size=0.08, steps=3, target="embeds").step(training_step(model, batch))
    clean, *adversarial = [x.detach() for x in inputs]
    keep = batch["attention_mask"].unsqueeze(-1).float()
    radius = 0.1 * (clean * keep).flatten(1).norm(dim=1)
    for x in adversarial:
        delta = x - clean
        assert torch.equal(delta * (1 - keep), torch.zeros_like(delta))  # padding never moves
        assert (delta.flatten(1).norm(dim=1) <= radius * (1 + 2e-6)).all()
    assert torch.allclose(adversarial[-1].sub(clean).flatten(1).norm(dim=1), radius, rtol=1e-5)


@pytest.mark.parametrize("target", ["weights", "embeds"])
def test_pgd_with_one_step_of_epsilon_is_fgm_exactly(target):
    base, batch = tiny_model(dropout=0.1), tiny_batch()
    pgd_model, fgm_model = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(7)
    pgd = PGD(epsilon=0.2, step_size=0.2, steps=1, weight=0.5, target=target).step(training_step(pgd_model, batch))
    torch.manual_seed(7)
    fgm = FGM(epsilon=0.2, weight=0.5, target=target).step(training_step(fgm_model, batch))
    assert pgd.keys() == fgm.keys() and all(torch.equal(pgd[k], fgm[k]) for k in pgd)
    pgd_grads, fgm_grads = grads(pgd_model), grads(fgm_model)
    assert pgd_grads.keys() == fgm_grads.keys()
    assert all(torch.equal(pgd_grads[k], fgm_grads[k]) for k in pgd_grads)


def clean_plus_adversarial_grads(model, batch, perturbed, weight):
    """Gradients of CE(clean) + weight·CE(with the given parameters replaced), computed directly."""
    reference = copy.deepcopy(model)
    reference.zero_grad()
    NoRegularizer().step(training_step(reference, batch))
    clean = grads(reference)
    reference.zero_grad()
    named = dict(reference.named_parameters())
    with torch.no_grad():
        for name, value in perturbed.items():
            named[name].copy_(value)
    step = training_step(reference, batch)
    (weight * step.ce(step.scores())).backward()
    adversarial = grads(reference)
    return {k: clean[k] + adversarial[k] for k in clean}


def test_pgd_keeps_only_the_last_adversarial_gradient():
    model, batch = tiny_model(), tiny_batch()
    start = copy.deepcopy(model)
    seen = embedding_weights_seen(model)
    PGD(epsilon=0.3, step_size=0.2, steps=3, weight=0.7).step(training_step(model, batch))
    expected = clean_plus_adversarial_grads(start, batch, {"encoder.embeddings.word_embeddings.weight": seen[-1]}, 0.7)
    got = grads(model)
    assert got.keys() == expected.keys()
    for name in got:
        assert torch.allclose(got[name], expected[name], rtol=1e-5, atol=1e-7), name


def awp_snapshots(model, names):
    """The chosen parameters as each forward sees them (clean pass first)."""
    named = dict(model.named_parameters())
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append({n: named[n].detach().clone() for n in names}))
    return seen


def test_awp_default_choice_is_encoder_matrices_without_norms_or_embeddings():
    names = [n for n, _ in AWP().chosen(tiny_model())]
    assert names and all(n.startswith("encoder.") and n.endswith("weight") for n in names)
    assert not [n for n in names if "LayerNorm" in n or "embeddings" in n]
    assert "encoder.encoder.layer.0.attention.self.query.weight" in names


def test_awp_perturbs_each_matrix_by_gamma_times_its_norm_and_restores_bit_for_bit():
    model, batch = tiny_model(), tiny_batch()  # no dropout: the two passes differ only by the perturbation
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    awp = AWP(gamma=0.02, start_epoch=1)
    names = [n for n, _ in awp.chosen(model)]
    seen = awp_snapshots(model, names)
    terms = awp.step(training_step(model, batch))
    clean, adversarial = seen
    for name in names:
        delta = adversarial[name] - clean[name]
        assert float(delta.norm()) == pytest.approx(0.02 * float(clean[name].norm()), rel=1e-5), name
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    assert terms["adv_ce"] > terms["ce"]  # ascent: the perturbed weights fit worse


def test_awp_gradient_is_clean_plus_adversarial_at_the_perturbed_weights():
    model, batch = tiny_model(), tiny_batch()
    start = copy.deepcopy(model)
    awp = AWP(gamma=0.05, start_epoch=1, weight=0.5)
    seen = awp_snapshots(model, [n for n, _ in awp.chosen(model)])
    awp.step(training_step(model, batch))
    expected = clean_plus_adversarial_grads(start, batch, seen[-1], 0.5)
    got = grads(model)
    for name in got:
        assert torch.allclose(got[name], expected[name], rtol=1e-5, atol=1e-7), name


def test_awp_several_steps_stay_in_the_ball():
    model, batch = tiny_model(), tiny_batch()
    awp = AWP(gamma=0.05, steps=3, start_epoch=1)
    names = [n for n, _ in awp.chosen(model)]
    seen = awp_snapshots(model, names)
    awp.step(training_step(model, batch))
    clean, *adversarial = seen
    assert len(adversarial) == 3
    for snapshot in adversarial:
        for name in names:
            assert float((snapshot[name] - clean[name]).norm()) <= 0.05 * float(clean[name].norm()) * (1 + 2e-6)


def test_awp_before_its_start_epoch_is_plain_training():
    model, batch = tiny_model(), tiny_batch()
    reference = copy.deepcopy(model)
    step = training_step(model, batch)
    step.epoch = 1
    terms = AWP(start_epoch=2).step(step)
    plain = NoRegularizer().step(training_step(reference, batch))
    assert set(terms) == {"loss", "ce"} and torch.equal(terms["loss"], plain["loss"])
    assert all(torch.equal(a, b) for a, b in zip(grads(model).values(), grads(reference).values(), strict=True))


@pytest.mark.parametrize("knobs, key", [({"params": "("}, "regularizer.params"),
                                        ({"exclude": "[z-a]"}, "regularizer.exclude"),
                                        ({"steps": 0}, "regularizer.steps"),
                                        ({"start_epoch": 0}, "regularizer.start_epoch")])
def test_awp_bad_options_name_their_key(knobs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        AWP(**knobs)


def test_awp_params_that_match_nothing_is_an_error():
    with pytest.raises(ConfigError, match="regularizer.params"):
        AWP(params="^nothing$").chosen(tiny_model())


def test_stacked_loss_is_the_sum_of_its_parts_computed_separately():
    base, batch = tiny_model(dropout=0.2), tiny_batch()
    model, reference = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(3)
    terms = Stack({"rdrop": RDrop(alpha=2.0), "fgm": FGM(epsilon=0.1, weight=0.5)}).step(training_step(model, batch))

    torch.manual_seed(3)  # the same dropout draws, computed part by part without the stack
    rdrop = RDrop(alpha=2.0).step(training_step(reference, batch))
    embedding = reference.encoder.get_input_embeddings().weight
    grad = embedding.grad.detach().clone()
    perturbed = embedding.detach() + 0.1 * used_rows(batch, embedding.detach()) * grad / grad.norm()
    after_rdrop = grads(reference)
    reference.zero_grad()
    with torch.no_grad():
        embedding.copy_(perturbed)
    step = training_step(reference, batch)
    adversarial = step.ce(step.scores())
    (0.5 * adversarial).backward()
    adversarial = adversarial.detach()

    assert float(terms["loss"]) == pytest.approx(float(rdrop["loss"] + 0.5 * adversarial), rel=1e-6)
    # loss − ce in float32: exact up to the rounding of ce (≈ 2.3 × 2⁻²⁴)
    assert float(terms["rdrop/loss"]) == pytest.approx(float(2.0 * rdrop["kl"]), abs=1e-6)
    assert float(terms["fgm/adv_ce"]) == pytest.approx(float(adversarial), rel=1e-6)
    assert float(terms["fgm/loss"]) == pytest.approx(float(0.5 * adversarial), rel=1e-6)
    assert {"rdrop/seconds", "fgm/seconds", "rdrop/kl", "ce"} <= set(terms)
    combined, second = grads(model), grads(reference)
    for name in combined:
        assert torch.allclose(combined[name], after_rdrop[name] + second[name], rtol=1e-5, atol=1e-7), name


def test_stack_with_awp_and_pgd_after_none_restores_every_weight():
    model, batch = tiny_model(), tiny_batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    terms = Stack({"none": NoRegularizer(), "pgd": PGD(), "awp": AWP(start_epoch=1)}).step(training_step(model, batch))
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    assert float(terms["loss"]) == pytest.approx(float(terms["ce"] + terms["pgd/loss"] + terms["awp/loss"]), rel=1e-6)


@pytest.mark.parametrize("parts, key", [
    ({"rdrop": RDrop()}, "regularizer.parts"),
    ({"fgm": FGM(), "rdrop": RDrop()}, "regularizer.parts.rdrop"),
    ({"rdrop": RDrop(), "fgm": FGM(target="embeds")}, "regularizer.parts.fgm.target"),
])
def test_stack_refuses_what_it_cannot_combine(parts, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Stack(parts)


def test_stack_uses_kl_when_a_part_does():
    assert Stack({"rdrop": RDrop(), "fgm": FGM()}).uses_kl
    assert not Stack({"none": NoRegularizer(), "fgm": FGM()}).uses_kl

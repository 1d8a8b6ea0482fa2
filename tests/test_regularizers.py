import copy
import functools

import pytest
import torch

from regner.regularizers.awp import AWP
from regner.regularizers.base import used_rows_norm
from regner.regularizers.fgm import FGM
from regner.regularizers.gp import GradientPenalty
from regner.regularizers.noise import GaussianNoise
from regner.regularizers.none import NoRegularizer
from regner.regularizers.pgd import PGD
from regner.regularizers.rdrop import RDrop
from regner.regularizers.stack import Stack
from regner.regularizers.vat import VAT, adversarial_direction

from .helpers import grads, tiny_batch, tiny_model, training_step


def test_rdrop_runs_one_encoder_call_on_the_doubled_batch():
    model, batch = tiny_model(dropout=0.3), tiny_batch()
    calls = []
    model.encoder.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]),
                                        with_kwargs=True)
    terms = RDrop(alpha=4.0).step(training_step(model, batch))
    assert calls == [2 * batch["input_ids"].shape[0]]
    assert terms["kl"] > 0  # dropout differs between the two halves
    assert terms["loss"] == pytest.approx(float(terms["ce"] + 4.0 * terms["kl"]), rel=1e-6)


def test_rdrop_without_dropout_has_zero_kl():
    terms = RDrop().step(training_step(tiny_model(dropout=0.0), tiny_batch()))
    assert terms["kl"].item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("target", ["weights", "embeds"])
@pytest.mark.parametrize("relative", [False, True])
def test_fgm_restores_embeddings_bit_for_bit(target, relative):
    model = tiny_model()
    weight = model.encoder.get_input_embeddings().weight
    before = weight.detach().clone()
    terms = FGM(epsilon=0.5, target=target, relative=relative).step(training_step(model, tiny_batch()))
    assert torch.equal(weight.detach(), before)
    assert terms["adv_ce"] != terms["ce"]  # the second pass really saw a perturbed input


def test_fgm_gradient_is_clean_plus_adversarial():
    model, batch = tiny_model(), tiny_batch()
    FGM(epsilon=0.5, weight=1.0).step(training_step(model, batch))
    combined = grads(model)
    reference = copy.deepcopy(model)
    reference.zero_grad()
    NoRegularizer().step(training_step(reference, batch))
    clean = grads(reference)
    name = "head.proj.weight"
    assert not torch.allclose(combined[name], clean[name])


def one_sample_batches(batch):
    """Each row of a collated batch as its own batch of one, padding removed."""
    for i, length in enumerate(batch["attention_mask"].sum(1).tolist()):
        rows = batch["spans"][batch["spans"][:, 0] == i].clone()
        rows[:, 0] = 0
        yield {"input_ids": batch["input_ids"][i : i + 1, :length],
               "attention_mask": batch["attention_mask"][i : i + 1, :length],
               "token_mask": batch["token_mask"][i : i + 1, :length], "spans": rows}


def penalty(model, batch, epsilon):
    """½ε · mean over samples of ‖∇_{e_i} L_i‖², each sample run alone (first-order autograd only)."""
    total, count = 0.0, 0
    for single in one_sample_batches(batch):
        step = training_step(model, single)
        embeds = step.embed()
        ce = step.ce(step.scores(inputs_embeds=embeds))
        (g,) = torch.autograd.grad(ce, embeds, create_graph=torch.is_grad_enabled())
        total, count = total + g.pow(2).sum(), count + 1
    return 0.5 * epsilon * total / count


def test_gradient_penalty_is_truly_second_order():
    """The GP step's extra gradient equals a finite-difference derivative of ½ε‖∇ₑL‖²."""
    torch.manual_seed(0)
    model, batch, epsilon = tiny_model().double(), tiny_batch(), 3.0
    GradientPenalty(epsilon=epsilon, mode="exact").step(training_step(model, batch))
    with_penalty = grads(model)
    model.zero_grad()
    NoRegularizer().step(training_step(model, batch))
    without = grads(model)
    name = "encoder.encoder.layer.0.attention.self.query.weight"
    param = dict(model.named_parameters())[name]
    analytic = with_penalty[name] - without[name]
    direction = torch.randn_like(param)
    h = 1e-5
    with torch.no_grad():
        param.add_(h * direction)
    plus = penalty(model, batch, epsilon).item()
    with torch.no_grad():
        param.add_(-2 * h * direction)
    minus = penalty(model, batch, epsilon).item()
    with torch.no_grad():
        param.add_(h * direction)
    numeric = (plus - minus) / (2 * h)
    assert abs(float((analytic * direction).sum())) > 1e-6
    assert float((analytic * direction).sum()) == pytest.approx(numeric, rel=1e-4)


def test_gradient_penalty_value_and_approx_mode():
    model, batch = tiny_model().double(), tiny_batch()
    expected = penalty(model, batch, 2.0).item()
    exact = GradientPenalty(epsilon=2.0).step(training_step(model, batch))
    assert exact["grad_penalty"].item() == pytest.approx(expected, rel=1e-7)
    model.zero_grad()
    approx = GradientPenalty(epsilon=2.0, mode="approx").step(training_step(model, batch))
    assert approx["grad_penalty"].item() == pytest.approx(expected, rel=1e-7)


def test_vat_power_iteration_finds_top_eigenvector():
    torch.manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    hessian = basis @ torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)) @ basis.T
    top = basis[:, 0]

    def distance(r):  # a quadratic divergence, batch of one sample shaped [1, 2, 3]
        flat = r.reshape(-1)
        return flat @ hessian @ flat

    initial = torch.randn(1, 2, 3, dtype=torch.float64)
    one = adversarial_direction(distance, initial, xi=1e-3, iterations=1).reshape(-1)
    many = adversarial_direction(distance, initial, xi=1e-3, iterations=30).reshape(-1)
    assert abs(float(many @ top)) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(one @ top)) < abs(float(many @ top))
    assert float(many.norm()) == pytest.approx(1.0)


def test_vat_direction_respects_padding_and_penalty_is_positive():
    model, batch = tiny_model(), tiny_batch()
    terms = VAT(alpha=1.0, epsilon=1.0).step(training_step(model, batch))
    assert terms["vat_kl"] > 0 and torch.isfinite(terms["loss"])
    keep = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).unsqueeze(-1).expand(2, 2, 3)
    direction = adversarial_direction(lambda r: (r**2).sum(), torch.randn(2, 2, 3), 1e-3, 1, keep)
    assert torch.all(direction[1, 1] == 0)
    assert torch.allclose(direction.flatten(1).norm(dim=1), torch.ones(2))


def test_noise_with_zero_sigma_equals_none_exactly():
    batch = tiny_batch()
    model_a, model_b = tiny_model(dropout=0.2), tiny_model(dropout=0.2)
    torch.manual_seed(7)
    terms_a = NoRegularizer().step(training_step(model_a, batch))
    torch.manual_seed(7)
    terms_b = GaussianNoise(sigma=0.0).step(training_step(model_b, batch))
    assert torch.equal(terms_a["loss"], terms_b["loss"])
    ga, gb = grads(model_a), grads(model_b)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)


def test_noise_changes_the_loss_and_consistency_adds_a_kl():
    torch.manual_seed(0)
    model, batch = tiny_model(), tiny_batch()
    clean = NoRegularizer().step(training_step(model, batch))["loss"]
    noisy = GaussianNoise(sigma=0.5).step(training_step(model, batch))["loss"]
    assert not torch.equal(clean, noisy)
    terms = GaussianNoise(sigma=0.5, consistency=True, alpha=2.0, relative=True).step(training_step(model, batch))
    assert terms["kl"] > 0


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError):
        FGM(target="nowhere")
    with pytest.raises(ValueError):
        GradientPenalty(mode="guess")


def record_vat_search(monkeypatch):
    """Wrap VAT's power iteration: record the distance function it is given and the direction."""
    import regner.regularizers.vat as vat_module

    seen = {}
    original = vat_module.adversarial_direction

    def recording(distance, initial, xi, iterations, keep=None):
        seen.update(distance=distance, initial=initial, xi=xi, keep=keep)
        seen["direction"] = original(distance, initial, xi, iterations, keep)
        return seen["direction"]

    monkeypatch.setattr(vat_module, "adversarial_direction", recording)
    return seen, original


def test_vat_reference_and_search_see_one_function_under_dropout(monkeypatch):
    """With dropout on, D(s, s(e + 0)) is exactly 0 and power iteration from two random starts
    converges to the same top eigenvector: the search sees one deterministic function."""
    seen, original = record_vat_search(monkeypatch)
    torch.manual_seed(0)
    model, batch = tiny_model(dropout=0.3).double(), tiny_batch()
    VAT(alpha=1.0, epsilon=1.0, xi=1e-4).step(training_step(model, batch))
    distance, keep = seen["distance"], seen["keep"]
    with torch.no_grad():
        assert distance(torch.zeros_like(seen["initial"])).item() == 0.0
    starts = [torch.randn_like(seen["initial"]) for _ in range(2)]
    found = [original(distance, start, seen["xi"], 100, keep) for start in starts]
    for sample in range(found[0].shape[0]):
        cos = torch.nn.functional.cosine_similarity(found[0][sample].flatten(), found[1][sample].flatten(), dim=0)
        assert abs(float(cos)) > 0.95


def test_vat_direction_under_bf16_agrees_with_fp32(monkeypatch):
    seen, _ = record_vat_search(monkeypatch)
    directions = []
    for precision in ("fp32", "bf16"):
        model, batch = tiny_model(dropout=0.0, hidden=32), tiny_batch()
        step = training_step(model, batch)
        if precision == "bf16":
            step.autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
        torch.manual_seed(3)
        VAT(alpha=1.0, epsilon=1.0).step(step)
        directions.append(seen["direction"])
    cos = torch.nn.functional.cosine_similarity(directions[0].flatten(1), directions[1].flatten(1), dim=1)
    assert torch.all(cos > 0.9), cos


def test_relative_sizes_ignore_padding_and_the_pad_row(monkeypatch):
    """A huge PAD embedding row and extra padding must not change relative ε (FGM, VAT) or σ (noise)."""
    model, batch = tiny_model(), tiny_batch()
    embedding = model.encoder.get_input_embeddings().weight
    with torch.no_grad():
        embedding[0] = 100.0  # the PAD row; batch row 1 is padded with id 0
    step = training_step(model, batch)
    real = batch["attention_mask"].bool()
    embeds = step.embed().detach()
    used = torch.unique(batch["input_ids"][real])
    assert used_rows_norm(step, embedding).item() == pytest.approx(embedding.detach()[used].norm().item(), rel=1e-6)
    # noise: with unit "noise", the shift at real positions is σ × the RMS of the real positions
    monkeypatch.setattr(torch, "randn_like", lambda x: torch.ones_like(x))
    shift = (GaussianNoise(sigma=0.5, relative=True)._noisy(step, embeds) - embeds)[1, 0, 0]
    row = embeds[1][real[1]]
    assert shift.item() == pytest.approx(0.5 * row.pow(2).mean().sqrt().item(), rel=1e-5)
    # VAT: the adversarial pass's input is e + ε‖e_real‖·d for a unit direction d
    import regner.regularizers.vat as vat_module

    monkeypatch.setattr(vat_module, "adversarial_direction", lambda distance, initial, xi, it, keep=None:
                        keep / keep.flatten(1).norm(dim=1).view(-1, 1, 1))
    inputs = []
    model.encoder.register_forward_hook(lambda m, a, kw, out: inputs.append(kw["inputs_embeds"].detach()),
                                        with_kwargs=True)
    VAT(epsilon=0.1, relative=True).step(training_step(model, batch))
    radius = (inputs[-1] - embeds)[1].norm().item()
    assert radius == pytest.approx(0.1 * row.norm().item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["exact", "approx"])
def test_gradient_penalty_is_per_sample_so_duplicating_a_batch_keeps_it(mode):
    """ε must mean the same at any batch size: the same samples twice give the same penalty."""
    from regner.data.batching import collate
    from regner.data.features import Window

    windows = [Window(0, [2, 5, 6, 7, 8, 3], [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (0, 0)], [(0, 1, 2)]),
               Window(1, [2, 9, 10, 3], [(0, 0), (0, 1), (1, 2), (0, 0)], [(1, 1, 2)])]
    single, double = collate(windows), collate(windows + windows)
    model = tiny_model().double()
    once = GradientPenalty(epsilon=0.5, mode=mode).step(training_step(model, single))["grad_penalty"]
    twice = GradientPenalty(epsilon=0.5, mode=mode).step(training_step(model, double))["grad_penalty"]
    assert once.item() > 0 and twice.item() == pytest.approx(once.item(), rel=1e-9)


def count_host_reads(monkeypatch, when=lambda: True):
    """Count reads of tensor values into Python made by regner's own code (each one is a device sync
    on a GPU; transformers' attention-mask shortcut makes one per forward, which is not ours)."""
    import sys
    from pathlib import Path

    package = str(Path(__file__).resolve().parents[1] / "regner")
    reads = []

    def wrap(original, name):
        def read(self, *args):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(package) and when():
                reads.append(f"{name} at {caller}:{sys._getframe(1).f_lineno}")
            return original(self, *args)
        return read

    for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, wrap(getattr(torch.Tensor, name), name))
    return reads


@pytest.mark.parametrize("regularizer", [NoRegularizer(), RDrop(), FGM(), FGM(target="embeds"), FGM(relative=False),
                                         GradientPenalty(), GradientPenalty(mode="approx"), VAT(),
                                         GaussianNoise(sigma=0.1, relative=True), GaussianNoise(consistency=True),
                                         PGD(), PGD(target="embeds"), AWP(start_epoch=1, steps=2),
                                         Stack({"rdrop": RDrop(), "fgm": FGM(), "awp": AWP(start_epoch=1)})],
                         ids=repr)
def test_regularizer_steps_never_wait_for_the_device(monkeypatch, regularizer):
    model, batch = tiny_model(dropout=0.1), tiny_batch()
    step = training_step(model, batch)
    reads = count_host_reads(monkeypatch)
    regularizer.step(step)
    assert reads == []


# -- the consistency weight's ramp-up --------------------------------------------------------------------------------
def test_rampup_factor_is_linear_then_one():
    from regner.regularizers.base import rampup_factor

    assert [rampup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert rampup_factor(0, 0) == 1.0 and rampup_factor(10**9, 0) == 1.0  # 0 turns the ramp off


@pytest.mark.parametrize("make", [lambda r: RDrop(alpha=8.0, rampup_steps=r),
                                  lambda r: VAT(alpha=8.0, rampup_steps=r),
                                  lambda r: GaussianNoise(sigma=0.3, consistency=True, alpha=8.0, rampup_steps=r)],
                         ids=["rdrop", "vat", "noise"])
@pytest.mark.parametrize("global_step, factor", [(0, 0.1), (4, 0.5), (9, 1.0), (50, 1.0)])
def test_consistency_weight_ramps_up_over_the_first_steps(make, global_step, factor):
    torch.manual_seed(0)
    step = training_step(tiny_model(dropout=0.3), tiny_batch())
    step.global_step = global_step
    terms = make(10).step(step)
    (extra,) = [v for k, v in terms.items() if k not in ("loss", "ce")]
    assert extra > 0
    assert terms["loss"] == pytest.approx(float(terms["ce"] + 8.0 * factor * extra), rel=1e-5)

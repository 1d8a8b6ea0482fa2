"""EMA of the weights, layer-wise learning-rate decay, and every new option through the CLI."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from regner.training.callbacks.ema import EMA
from regner.training.optim import build_optimizer, parameter_groups

from .helpers import tiny_model
from .test_cli import regner, run_dirs


def test_ema_after_n_steps_is_the_closed_form_weighted_sum():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    ema = EMA(0.8)
    ema.attach(model)
    history = [[p.detach().clone() for p in model.parameters()]]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(6):
        model(torch.randn(4, 3, dtype=torch.float64)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update()
        history.append([p.detach().clone() for p in model.parameters()])
    n, d = len(history) - 1, 0.8
    for i, shadow in enumerate(ema.shadow):
        # shadow_n = dⁿ·θ₀ + Σ_{k=1..n} (1 − d)·d^(n−k)·θ_k
        expected = d**n * history[0][i] + sum((1 - d) * d ** (n - k) * history[k][i] for k in range(1, n + 1))
        assert torch.allclose(shadow, expected, rtol=1e-12, atol=1e-14)
        assert not torch.allclose(shadow, history[-1][i])  # an average, not the last weights


def test_ema_swaps_in_the_average_and_restores_the_raw_weights_bit_for_bit():
    model = tiny_model()
    ema = EMA(0.5)
    ema.attach(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    raw = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.swapped():
        assert all(torch.equal(p.detach(), raw[n] - 0.5) for n, p in model.named_parameters())
    assert all(torch.equal(p.detach(), raw[n]) for n, p in model.named_parameters())


def optimizer_config(**extra):
    return OmegaConf.create({"lr": 1.0, "head_lr": 0.01, "weight_decay": 0.1, "adam_beta1": 0.9, "adam_beta2": 0.999,
                             "adam_epsilon": 1e-8, **extra})


def lr_of(optimizer, model):
    lrs = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {n: lrs[id(p)] for n, p in model.named_parameters()}


def test_layer_decay_gives_each_parameter_its_layers_rate():
    model = tiny_model()
    model.encoder.config.num_hidden_layers = 2  # a second layer: the tiny helper builds one
    model.encoder.encoder.layer.append(model.encoder.encoder.layer[0].__class__(model.encoder.config))
    lrs = lr_of(build_optimizer(model, optimizer_config(layer_lr_decay=0.5)), model)
    assert lrs["encoder.encoder.layer.1.attention.self.query.weight"] == 1.0  # top layer (l = L = 2): lr
    assert lrs["encoder.encoder.layer.1.output.LayerNorm.bias"] == 1.0
    assert lrs["encoder.encoder.layer.0.intermediate.dense.weight"] == 0.5  # l = 1: lr · 0.5^(2−1)
    assert lrs["encoder.embeddings.word_embeddings.weight"] == 0.25  # embeddings, l = 0: lr · 0.5²
    assert lrs["encoder.embeddings.LayerNorm.weight"] == 0.25
    assert lrs["head.proj.weight"] == 0.01  # the head keeps head_lr
    assert set(lrs.values()) == {1.0, 0.5, 0.25, 0.01}


def test_layer_decay_off_keeps_one_rate_and_weight_decay_rules():
    model = tiny_model()
    groups = parameter_groups(model, 1.0, 0.01, 0.1, 1.0)
    assert {(g["name"], g["lr"], g["weight_decay"]) for g in groups} == {
        ("encoder", 1.0, 0.1), ("encoder (no decay)", 1.0, 0.0), ("head", 0.01, 0.1), ("head (no decay)", 0.01, 0.0)}
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in decayed) == (param.ndim >= 2 and "LayerNorm" not in name), name


DEMO = ["data.train_size=100", "data.dev_size=30", "data.test_size=0", "trainer.max_epochs=2", "trainer.batch_size=16",
        "trainer.progress=false", "encoder.hidden_size=32", "encoder.num_layers=2", "encoder.intermediate_size=64",
        "head.head_size=16"]


@pytest.mark.parametrize("args, terms, method", [
    (["regularizer=pgd"], {"adv_ce"}, "pgd"),
    (["regularizer=awp"], {"adv_ce"}, "awp"),  # start_epoch 2: epoch 2 of 2 is perturbed
    (["regularizer=rdrop_fgm"], {"rdrop/loss", "rdrop/kl", "rdrop/seconds", "fgm/loss", "fgm/adv_ce", "fgm/seconds"},
     "rdrop_fgm"),
    (["regularizer=stack", "+regularizer@regularizer.parts.noise=noise", "+regularizer@regularizer.parts.pgd=pgd"],
     {"noise/loss", "noise/seconds", "pgd/loss", "pgd/adv_ce", "pgd/seconds"}, "stack"),
    (["regularizer=fgm", "trainer.ema.decay=0.9"], {"adv_ce"}, "fgm+ema"),
    (["trainer.layer_lr_decay=0.8"], set(), "none"),
], ids=["pgd", "awp", "rdrop_fgm", "stack", "fgm+ema", "layer_decay"])
def test_new_options_train_end_to_end_through_the_cli(tmp_path, args, terms, method):
    result = regner("train", *DEMO, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = json.loads((run_dir / "history.jsonl").read_text().splitlines()[-1])
    assert set(last["train"]) == {"loss", "ce"} | terms
    assert metrics["dev"]["f1"] >= 0 and metrics["epochs"] == 2
    from regner.experiments.report.records import collect_runs

    (record,) = collect_runs([run_dir])
    assert record.regularizer == method  # the report tells EMA runs apart from plain ones
    if "trainer.layer_lr_decay=0.8" in args:
        assert "parameter groups: embeddings lr 0.00064 " in result.stderr  # 1e-3 · 0.8², 2 layers


def test_new_knobs_are_validated_before_any_data_is_read(tmp_path):
    from regner.config.validation import validate_config
    from regner.errors import ConfigError

    from .test_training import compose_config

    for args, key in ((["trainer.ema.decay=1.0"], "trainer.ema.decay"),
                      (["trainer.layer_lr_decay=0"], "trainer.layer_lr_decay"),
                      (["regularizer=pgd", "regularizer.steps=0"], "regularizer.steps"),
                      (["regularizer=rdrop_fgm", "regularizer.parts.fgm.epsilon=-1"], "regularizer.parts.fgm.epsilon"),
                      (["regularizer=awp", "regularizer.params='('"], "regularizer.params")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(compose_config(*args))
    # and through the CLI: exit 2 naming the key, before the (missing) data is read
    result = regner("train", "regularizer=awp", "regularizer.params='('", "data=jsonl", "data.train=/nonexistent.jsonl",
                    cwd=tmp_path)
    assert result.returncode == 2 and "regularizer.params" in result.stderr and "Traceback" not in result.stderr
    assert "nonexistent" not in result.stderr
    assert not list(tmp_path.glob("outputs/*/*/metrics.json"))


def test_pgd_step_size_follows_epsilon_unless_set():
    from .test_training import compose_config

    assert compose_config("regularizer=pgd").regularizer.step_size == pytest.approx(0.015)
    assert compose_config("regularizer=pgd", "regularizer.epsilon=0.2").regularizer.step_size == pytest.approx(0.06)
    assert compose_config("regularizer=pgd", "regularizer.epsilon=0.2",
                          "regularizer.step_size=0.01").regularizer.step_size == 0.01

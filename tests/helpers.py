"""A tiny deterministic model and batch for regularizer tests."""

import torch
from omegaconf import OmegaConf

from regner.data.batching import collate, dense_targets
from regner.data.features import Window
from regner.model.encoder import tiny_encoder
from regner.model.head import span_mask
from regner.model.span_model import SpanModel
from regner.regularizers.base import TrainingStep
from regner.regularizers.kl import globalpointer_kl


def tiny_model(dropout=0.0, seed=0, vocab_size=30, hidden=16):
    torch.manual_seed(seed)
    cfg = OmegaConf.create({"hidden_size": hidden, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
                            "max_position_embeddings": 64, "dropout": dropout, "attn_implementation": "sdpa"})
    return SpanModel(tiny_encoder(vocab_size, cfg), ["A", "B"], "globalpointer", head_size=8)


def tiny_batch():
    windows = [
        Window(0, [2, 5, 6, 7, 8, 3], [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (0, 0)], [(0, 1, 2), (1, 4, 4)]),
        Window(1, [2, 9, 10, 3], [(0, 0), (0, 1), (1, 2), (0, 0)], [(1, 1, 2)]),
    ]
    return collate(windows)


def training_step(model, batch, kl=globalpointer_kl, backward=None):
    size, length = batch["input_ids"].shape
    step = TrainingStep(model=model, batch=batch, targets=dense_targets(batch["spans"], size, 2, length, "cpu"),
                        mask=span_mask(batch["token_mask"]), kl=kl)
    if backward is not None:
        step.backward = backward
    return step


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def killed(monkeypatch, cfg, run_dir, stop_at: int) -> None:
    """Train ``cfg`` into ``run_dir`` and kill it (KeyboardInterrupt) after ``stop_at`` optimizer steps."""
    import pytest

    from regner.training.run import run_training
    from regner.training.trainer import Trainer

    original, calls = Trainer.training_step, {"n": 0}

    def step(self, batch):
        calls["n"] += 1
        if calls["n"] > stop_at:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "training_step", step)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, run_dir)
    monkeypatch.setattr(Trainer, "training_step", original)


def killed_then_resumed(monkeypatch, cfg, run_dir, stop_at: int) -> dict:
    """:func:`killed`, then resumed in ``run_dir``: the resumed run's metrics."""
    from regner.training.run import run_training

    killed(monkeypatch, cfg, run_dir, stop_at)
    return run_training(cfg, run_dir, resume=True)

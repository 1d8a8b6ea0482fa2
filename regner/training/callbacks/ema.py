"""Exponential moving average of the weights (Polyak averaging), as a trainer callback.

After every optimizer step, shadow ← decay · shadow + (1 − decay) · θ (starting from the initial
weights), so after n steps shadow = decayⁿ·θ₀ + Σₖ (1 − decay)·decay^(n−k)·θₖ. Dev evaluation, the best
checkpoint and therefore ``metrics.json`` use the shadow weights; training continues from the raw
weights, and both are in the resumable state, so a resume is exact. Cost: one fused ``lerp`` over the
parameters per step and one more copy of them in memory.

With decay d the average spans about 1/(1 − d) steps (0.999: ~1000), and the initial weights keep a
weight dⁿ: on a small dataset the first epochs' evaluation lags behind the raw weights.

``warmup`` (the mean teacher's default, as in Tarvainen & Valpola's code): update t (1, 2, …) uses the
decay min(d, 1 − 1/(t + 1)), so the shadow is the plain mean of θ₀ … θₜ until that reaches d, and the
exponential average from there on. Without it a teacher on a short run stays near the initial weights
(random init: a head that predicts nearly every span) for hundreds of steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from regner.training.callbacks.base import Callback


class EMA(Callback):
    name = "ema"

    def __init__(self, decay: float, evaluate: bool = True, warmup: bool = False):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.evaluate = decay, evaluate  # evaluate: dev/test and the checkpoint use the average
        self.warmup, self.updates = warmup, 0
        self.names: list[str] = []
        self.params: list[torch.nn.Parameter] = []
        self.shadow: list[torch.Tensor] = []

    def attach(self, model: torch.nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]

    def on_train_start(self, trainer: Any) -> None:
        self.attach(trainer.model)

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, 1.0 - 1.0 / (self.updates + 1)) if self.warmup else self.decay
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    def on_step_end(self, trainer: Any) -> None:
        self.update()

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The model holds the averaged weights inside, its raw weights again after."""
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], raw)

    def evaluation_weights(self, trainer: Any):
        return self.swapped() if self.evaluate else contextlib.nullcontext()

    def teacher(self) -> contextlib.AbstractContextManager:
        """The averaged weights as a teacher (mean teacher): the model holds them inside."""
        return self.swapped()

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates,
                "shadow": dict(zip(self.names, self.shadow, strict=True))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["shadow"]
        self.updates = int(state.get("updates", 0))
        missing = [n for n in self.names if n not in saved]
        if missing:
            raise KeyError(f"saved EMA state lacks {missing[:3]}")
        with torch.no_grad():
            for name, tensor in zip(self.names, self.shadow, strict=True):
                tensor.copy_(saved[name])
